//! The splits of a run and retrieval evaluation of a model on them.

use std::path::Path;

use crate::config::Config;
use crate::data::{PairedDataset, SplitView, Splits};
use crate::error::{Error, Result};
use crate::eval::{Protocol, RetrievalMetrics, ranks_from_embeddings};
use crate::model::TwoBranch;
use crate::train::RunFiles;

/// The splits to use: the dataset's `splits.json`, else the run folder's, else a seeded random
/// split of the sizes in `config.data`.
///
/// # Errors
/// [`Error::BadDataset`] when the split is invalid for this dataset, [`Error::Config`] when the
/// sizes leave no training image.
pub fn resolve_splits(
    dataset: &PairedDataset,
    config: &Config,
    run_dir: Option<&Path>,
) -> Result<Splits> {
    if let Some(s) = &dataset.splits {
        return Ok(s.clone());
    }
    let counts = dataset.captions_per_image();
    if let Some(dir) = run_dir {
        let path = dir.join(RunFiles::SPLITS);
        if path.exists() {
            let s = Splits::read(&path)?;
            s.validate(&path, dataset.images.rows(), &counts)?;
            return Ok(s);
        }
    }
    let s = Splits::random(
        dataset.images.rows(),
        config.data.val_images,
        config.data.test_images,
        config.seed,
    )?;
    s.validate(&dataset.root, dataset.images.rows(), &counts)?;
    Ok(s)
}

/// Embeds one split with `model` in evaluation mode and ranks it both ways.
///
/// # Errors
/// A config error when the feature dimensions do not match the model.
pub fn evaluate_split(
    model: &mut TwoBranch,
    dataset: &PairedDataset,
    view: &SplitView,
    name: &str,
    chunk: usize,
) -> Result<RetrievalMetrics> {
    evaluate_protocol(
        model,
        dataset,
        &view.images,
        name,
        Protocol::Full,
        &[],
        chunk,
    )
}

/// Evaluates one split under `protocol`: each fold of images (with all their captions) is
/// embedded and ranked on its own, and the folds' metrics are averaged.
///
/// # Errors
/// [`Error::Config`] when the split is too small for the protocol or the features do not fit
/// the model.
pub fn evaluate_protocol(
    model: &mut TwoBranch,
    dataset: &PairedDataset,
    split_images: &[u32],
    name: &str,
    protocol: Protocol,
    extra_ks: &[usize],
    chunk: usize,
) -> Result<RetrievalMetrics> {
    let mut folds = Vec::new();
    for images in protocol.folds(split_images)? {
        let view = SplitView::new(&images, &dataset.text_to_image, dataset.images.rows());
        let embedded_images = model.embed_all(&dataset.images, &view.images, true, chunk)?;
        let embedded_texts = model.embed_all(&dataset.texts, &view.texts, false, chunk)?;
        check_finite(&embedded_images, &embedded_texts, name)?;
        let ranks = ranks_from_embeddings(
            &embedded_images,
            &embedded_texts,
            model.config.dim,
            &view.text_image,
        );
        folds.push(RetrievalMetrics::from_ranks_at(name, &ranks, extra_ks));
    }
    Ok(RetrievalMetrics::mean_of_folds(protocol.name(), &folds))
}

fn check_finite(images: &[f32], texts: &[f32], name: &str) -> Result<()> {
    if images.iter().chain(texts).any(|v| !v.is_finite()) {
        return Err(Error::Config(format!(
            "the model maps some {name} features to non-finite embeddings: its weights or BatchNorm statistics are not finite, or the features hold extreme values; retrain with a lower train.lr"
        )));
    }
    Ok(())
}
