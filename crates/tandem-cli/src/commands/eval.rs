//! `tandem eval`.

use std::path::Path;

use anyhow::Result;
use tandem::data::{PairedDataset, SplitView};
use tandem::train::{evaluate_split, resolve_splits};

use crate::cli::Format;
use crate::output::print_metrics;

pub fn run(model: &Path, data: &Path, split: &str, format: Format) -> Result<()> {
    let (checkpoint, run_dir) = super::open_model(model)?;
    let dataset = PairedDataset::open(data)?;
    let splits = resolve_splits(&dataset, &checkpoint.config, Some(&run_dir))?;
    let ids = splits.get(split)?;
    if ids.is_empty() {
        anyhow::bail!("split `{split}` is empty in this dataset; choose train, val or test");
    }
    let view = SplitView::new(ids, &dataset.text_to_image, dataset.images.rows);
    let mut m = checkpoint.model;
    let metrics = evaluate_split(
        &mut m,
        &dataset,
        &view,
        split,
        checkpoint.config.train.eval_batch_size,
    )?;
    print_metrics(&metrics, format);
    Ok(())
}
