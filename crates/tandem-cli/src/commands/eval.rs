//! `tandem eval`.

use std::path::Path;

use anyhow::Result;
use tandem::data::{PairedDataset, Residency};
use tandem::eval::Protocol;
use tandem::train::{evaluate_protocol, resolve_splits};

use crate::cli::Format;
use crate::output::print_metrics;

pub fn run(
    model: &Path,
    data: &Path,
    residency: Residency,
    split: &str,
    protocol: &str,
    ks: &[usize],
    format: Format,
) -> Result<()> {
    let protocol = Protocol::parse(protocol)?;
    if ks.contains(&0) {
        anyhow::bail!("--ks: K must be at least 1");
    }
    let (checkpoint, run_dir) = super::open_model(model)?;
    tandem::text::TextEncoderRecord::check_same(&run_dir, data)?;
    tandem::image::ImageEncoderRecord::check_same(&run_dir, data)?;
    let dataset = PairedDataset::open_with(data, residency)?;
    let splits = resolve_splits(&dataset, &checkpoint.config, Some(&run_dir))?;
    let ids = splits.get(split)?;
    if ids.is_empty() {
        anyhow::bail!("split `{split}` is empty in this dataset; choose train, val or test");
    }
    let mut m = checkpoint.model;
    let metrics = evaluate_protocol(
        &mut m,
        &dataset,
        ids,
        split,
        protocol,
        ks,
        checkpoint.config.train.eval_batch_size,
    )?;
    print_metrics(&metrics, format);
    Ok(())
}
