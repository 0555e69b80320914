//! `tandem embed`.

use std::path::Path;

use anyhow::{Context, Result};
use tandem::data::{PairedDataset, npy};

pub fn run(model: &Path, data: &Path, out: &Path) -> Result<()> {
    let (checkpoint, run_dir) = super::open_model(model)?;
    tandem::text::TextEncoderRecord::check_same(&run_dir, data)?;
    tandem::image::ImageEncoderRecord::check_same(&run_dir, data)?;
    let dataset = PairedDataset::open(data)?;
    let mut m = checkpoint.model;
    let chunk = checkpoint.config.train.eval_batch_size;
    let all_images: Vec<u32> = (0..dataset.images.rows() as u32).collect();
    let all_texts: Vec<u32> = (0..dataset.texts.rows() as u32).collect();
    let images = m.embed_all(&dataset.images, &all_images, true, chunk)?;
    let texts = m.embed_all(&dataset.texts, &all_texts, false, chunk)?;
    std::fs::create_dir_all(out)
        .with_context(|| format!("{}: cannot create the folder", out.display()))?;
    let dim = m.config.dim;
    npy::write_f32(&out.join("images.npy"), dataset.images.rows(), dim, &images)?;
    npy::write_f32(&out.join("texts.npy"), dataset.texts.rows(), dim, &texts)?;
    let ids: Vec<i64> = dataset
        .text_to_image
        .iter()
        .map(|&i| i64::from(i))
        .collect();
    tandem::fsio::write_atomic(&out.join("text_to_image.npy"), &npy::encode_i64(&ids))?;
    tracing::info!(
        "wrote {} image and {} text embeddings of dimension {dim} to {}",
        dataset.images.rows(),
        dataset.texts.rows(),
        out.display()
    );
    Ok(())
}
