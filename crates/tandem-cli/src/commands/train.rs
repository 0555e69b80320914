//! `tandem train`.

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::Device;
use tandem::config::Config;
use tandem::data::{PairedDataset, Residency, SplitView};
use tandem::eval::RetrievalMetrics;
use tandem::text::TextEncoderRecord;
use tandem::train::{RunFiles, TrainOutcome, evaluate_split};

use crate::cli::Format;
use crate::output::print_metrics;
use crate::progress::Progress;

/// Refuses to write into a run folder that already holds a run, unless `overwrite`.
pub fn prepare_run_dir(out: &Path, overwrite: bool) -> Result<()> {
    if RunFiles::holds_run(out) && !overwrite {
        anyhow::bail!(
            "{}: this folder already holds a run\n  fix: choose another --out, or pass --overwrite to replace it",
            out.display()
        );
    }
    Ok(())
}

/// Copies the dataset's `text_encoder.json` into the run, so queries in words can be encoded
/// like the training captions and other encoders' features are refused.
pub fn record_encoders(data: &Path, out: &Path) -> Result<()> {
    if let Some(record) = TextEncoderRecord::read_from(data)? {
        std::fs::create_dir_all(out)
            .with_context(|| format!("{}: cannot create the run folder", out.display()))?;
        record.write_to(out)?;
    }
    // Likewise the image encoder's, so queries by picture are embedded as the training images.
    if let Some(record) = tandem::image::ImageEncoderRecord::read_from(data)? {
        std::fs::create_dir_all(out)
            .with_context(|| format!("{}: cannot create the run folder", out.display()))?;
        record.write_to(out)?;
    }
    Ok(())
}

/// The devices of `tandem train`: those named by `--devices`, else `ranks` CPU ranks when
/// more than 1, else none (the default device).
pub fn devices(names: &[String], ranks: usize) -> Result<Vec<Device>> {
    if !names.is_empty() {
        return names
            .iter()
            .map(|name| tandem::parse_device(name).context("--devices"))
            .collect();
    }
    Ok(match ranks {
        0 | 1 => Vec::new(),
        _ => vec![Device::Cpu; ranks],
    })
}

/// Trains on `devices` (one data-parallel rank on each when more than one; the default
/// device when none), then evaluates the best checkpoint on `split`.
pub fn train_and_test(
    dataset: &PairedDataset,
    out: &Path,
    config: &Config,
    devices: &[Device],
    split: &str,
    label: &str,
) -> Result<(TrainOutcome, RetrievalMetrics)> {
    let mut progress = Progress::new(label);
    let outcome = tandem::train::train_on_devices(dataset, config, out, devices, &mut progress)?;
    drop(progress);
    report_and_test(dataset, out, config, outcome, split, label)
}

/// Logs how training went, then evaluates the best checkpoint on `split`.
fn report_and_test(
    dataset: &PairedDataset,
    out: &Path,
    config: &Config,
    outcome: TrainOutcome,
    split: &str,
    label: &str,
) -> Result<(TrainOutcome, RetrievalMetrics)> {
    tracing::info!(
        "{label}: {} epochs, {} steps in {:.1}s; best epoch {}{}",
        outcome.epochs_run,
        outcome.steps,
        outcome.seconds,
        outcome.best_epoch,
        if outcome.stopped_early {
            " (early stop)"
        } else {
            ""
        }
    );
    let (checkpoint, _) = super::open_model(out)?;
    let mut model = checkpoint.model;
    let ids = outcome.splits.get(split)?;
    if ids.is_empty() {
        anyhow::bail!(
            "split `{split}` is empty; pass --split val or train, or give the dataset a {split} split"
        );
    }
    let view = SplitView::new(ids, &dataset.text_to_image, dataset.images.rows());
    let metrics = evaluate_split(
        &mut model,
        dataset,
        &view,
        split,
        config.train.eval_batch_size,
    )?;
    Ok((outcome, metrics))
}

/// `tandem train --out`: what a new run was asked.
pub struct NewRun<'a> {
    pub data: &'a Path,
    pub residency: Residency,
    pub out: &'a Path,
    pub config: &'a Config,
    pub overwrite: bool,
    /// One data-parallel rank on each (threads of this process); one device trains alone.
    pub devices: Vec<Device>,
    pub split: &'a str,
    pub format: Format,
}

pub fn run(request: NewRun<'_>) -> Result<()> {
    let NewRun {
        data,
        residency,
        out,
        config,
        overwrite,
        devices,
        split,
        format,
    } = request;
    prepare_run_dir(out, overwrite)?;
    let dataset = PairedDataset::open_with(data, residency)?;
    record_encoders(data, out)?;
    let (_, metrics) = train_and_test(&dataset, out, config, &devices, split, "train")?;
    print_metrics(&metrics, format);
    Ok(())
}

/// `tandem train --resume RUN`: continues the run; `--set train.epochs=N` may extend it.
pub fn resume(
    data: &Path,
    residency: Residency,
    run_dir: &Path,
    sets: &[String],
    split: &str,
    format: Format,
) -> Result<()> {
    let mut epochs = None;
    for s in sets {
        match s.split_once('=') {
            Some((key, value)) if key.trim() == "train.epochs" => {
                epochs = Some(
                    value
                        .trim()
                        .parse::<usize>()
                        .with_context(|| format!("`{s}`: train.epochs must be a whole number"))?,
                );
            }
            _ => anyhow::bail!(
                "`--set {s}` with --resume: a resumed run keeps its config; only train.epochs may change\n  fix: drop the --set, or start a new run with --out"
            ),
        }
    }
    TextEncoderRecord::check_same(run_dir, data)?;
    tandem::image::ImageEncoderRecord::check_same(run_dir, data)?;
    let dataset = PairedDataset::open_with(data, residency)?;
    let device = tandem::default_device()?;
    let mut progress = Progress::new("resume");
    let outcome = tandem::train::resume(&dataset, run_dir, epochs, &device, &mut progress)?;
    drop(progress);
    let config = tandem::config::Config::read(&run_dir.join(RunFiles::CONFIG))?;
    let (_, metrics) = report_and_test(&dataset, run_dir, &config, outcome, split, "resume")?;
    print_metrics(&metrics, format);
    Ok(())
}
