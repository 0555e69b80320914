//! `tandem encode-text`: captions → text features, with a sentence encoder or TF-IDF.

use std::path::Path;

use anyhow::{Context, Result};
use tandem::data::{npy, read_caption_texts};
use tandem::text::{SentenceEncoder, TextEncoderRecord, TfIdf};

/// Which featuriser to run.
pub enum Encoder<'a> {
    Sentence { folder: &'a Path, batch_size: usize },
    Tfidf { max_features: usize },
}

pub fn run(captions: &Path, out: &Path, encoder: Encoder<'_>) -> Result<()> {
    let texts = read_caption_texts(captions)?;
    let folder = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(folder)
        .with_context(|| format!("{}: cannot create the folder", folder.display()))?;
    let started = std::time::Instant::now();
    let (features, record) = encode(&texts, captions, encoder)?;
    let seconds = started.elapsed().as_secs_f64();
    let dim = record.dim();
    npy::write_f32(out, texts.len(), dim, &features)?;
    record.write_to(folder)?;
    tracing::info!(
        "encoded {} captions into {} ({dim} features each) in {seconds:.1} s ({:.0} captions/s) with {}; recorded in {}",
        texts.len(),
        out.display(),
        texts.len() as f64 / seconds.max(1e-9),
        record.describe(),
        folder.join(tandem::text::TEXT_ENCODER_FILE).display()
    );
    Ok(())
}

/// Text features of `texts` (row-major) and the record of the encoder that made them;
/// `source` names the captions in messages.
pub fn encode(
    texts: &[String],
    source: &Path,
    encoder: Encoder<'_>,
) -> Result<(Vec<f32>, TextEncoderRecord)> {
    let captions = source;
    let started = std::time::Instant::now();
    Ok(match encoder {
        Encoder::Sentence { folder, batch_size } => {
            let device = tandem::default_device()?;
            let encoder = SentenceEncoder::open(folder, &device)?;
            tracing::info!(
                "loaded {} in {:.1} s",
                encoder.record().describe(),
                started.elapsed().as_secs_f64()
            );
            let bar = crate::progress::counter_bar("encode", texts.len());
            let features = encoder.encode(texts, batch_size, |done| {
                if let Some(bar) = &bar {
                    bar.set_position(done as u64);
                }
            })?;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            (features, encoder.record().clone())
        }
        Encoder::Tfidf { max_features } => {
            if max_features == 0 {
                anyhow::bail!("--max-features must be at least 1");
            }
            let tfidf = TfIdf::fit(
                texts,
                TfIdf::DEFAULT_WORD_NGRAMS,
                TfIdf::DEFAULT_CHAR_NGRAMS,
                max_features,
            );
            if tfidf.dim() == 0 {
                anyhow::bail!(
                    "{}: the captions hold no words to build a vocabulary from\n  fix: check the file's text fields",
                    captions.display()
                );
            }
            (tfidf.transform(texts), TextEncoderRecord::Tfidf(tfidf))
        }
    })
}
