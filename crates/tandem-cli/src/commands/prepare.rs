//! `tandem prepare`: a folder of pictures and their captions → a complete dataset folder
//! (images.npy, texts.npy, text_to_image.npy, captions.jsonl, image_files.txt, splits.json and
//! both encoder records), in one command. The pictures are encoded in resumable batches: a
//! killed run continues from its last finished batch.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use tandem::data::{CaptionSource, Splits, npy, read_caption_source};
use tandem::image::{EncodeOptions, ImageEncoder, encode_files};

use super::encode_images::{SKIPPED_IMAGES, write_image_files};
use super::encode_text;

/// What `prepare` is asked to do.
pub struct PrepareArgs<'a> {
    pub images: &'a Path,
    pub captions: &'a Path,
    pub out: &'a Path,
    pub image_encoder: &'a Path,
    pub text_encoder: encode_text::Encoder<'a>,
    pub options: EncodeOptions,
    /// Images for val and test when the captions carry no split.
    pub val_images: usize,
    pub test_images: usize,
    pub seed: u64,
}

pub fn run(args: PrepareArgs<'_>) -> Result<()> {
    let source = read_caption_source(args.captions)?;
    std::fs::create_dir_all(args.out)
        .with_context(|| format!("{}: cannot create the dataset folder", args.out.display()))?;
    tracing::info!(
        "{}: {} captions of {} pictures{}",
        args.captions.display(),
        source.captions.len(),
        source.files.len(),
        if source.splits.is_some() {
            ", with its own split"
        } else {
            ""
        }
    );
    let encoder = ImageEncoder::load(args.image_encoder)?;
    let started = std::time::Instant::now();
    let bar = crate::progress::counter_bar("pictures", source.files.len());
    let encoded = encode_files(
        &encoder,
        args.images,
        &source.files,
        &args.out.join("images.npy"),
        args.options,
        |done, _| {
            if let Some(bar) = &bar {
                bar.set_position(done as u64);
            }
        },
    )?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    tracing::info!(
        "encoded {} pictures in {:.1} s",
        encoded.encoded.len(),
        started.elapsed().as_secs_f64()
    );
    encoder.record().write_to(args.out)?;
    let skipped_path = args.out.join(SKIPPED_IMAGES);
    if encoded.skipped.is_empty() {
        let _ = std::fs::remove_file(&skipped_path);
    } else {
        tandem::fsio::write_atomic(&skipped_path, &serde_json::to_vec_pretty(&encoded.skipped)?)?;
        tracing::warn!(
            "left out {} picture(s) that could not be decoded, and their captions (listed in {})",
            encoded.skipped.len(),
            skipped_path.display()
        );
    }
    let kept = keep_encoded(&source, &encoded.encoded);
    write_image_files(args.images, args.out, &encoded.encoded)?;
    write_captions(args.out, &kept)?;
    let splits = match &kept.splits {
        Some(s) => s.clone(),
        None => Splits::random(
            kept.files.len(),
            args.val_images,
            args.test_images,
            args.seed,
        )?,
    };
    tandem::fsio::write_atomic(&args.out.join("splits.json"), &serde_json::to_vec(&splits)?)?;
    let texts: Vec<String> = kept.captions.iter().map(|(_, t)| t.clone()).collect();
    let (features, record) = encode_text::encode(&texts, args.captions, args.text_encoder)?;
    npy::write_f32(
        &args.out.join("texts.npy"),
        texts.len(),
        record.dim(),
        &features,
    )?;
    record.write_to(args.out)?;
    tracing::info!(
        "wrote {}: {} images × {} features, {} captions × {} features, split {} / {} / {}",
        args.out.display(),
        kept.files.len(),
        encoder.record().dim,
        texts.len(),
        record.dim(),
        splits.train.len(),
        splits.val.len(),
        splits.test.len()
    );
    Ok(())
}

/// The source without the pictures that were left out: ids renumbered to the encoded rows,
/// their captions and split entries dropped.
fn keep_encoded(source: &CaptionSource, encoded: &[String]) -> CaptionSource {
    let row: HashMap<&str, u32> = encoded
        .iter()
        .enumerate()
        .map(|(i, f)| (f.as_str(), i as u32))
        .collect();
    let new_id = |old: u32| row.get(source.files[old as usize].as_str()).copied();
    let captions = source
        .captions
        .iter()
        .filter_map(|(image, text)| new_id(*image).map(|i| (i, text.clone())))
        .collect();
    let remap = |ids: &[u32]| ids.iter().filter_map(|&i| new_id(i)).collect::<Vec<_>>();
    let splits = source.splits.as_ref().map(|s| Splits {
        train: remap(&s.train),
        val: remap(&s.val),
        test: remap(&s.test),
    });
    CaptionSource {
        files: encoded.to_vec(),
        captions,
        splits,
    }
}

/// `captions.jsonl` and `text_to_image.npy`, in caption order.
fn write_captions(out: &Path, source: &CaptionSource) -> Result<()> {
    let mut jsonl = Vec::new();
    for (image, text) in &source.captions {
        serde_json::to_writer(
            &mut jsonl,
            &serde_json::json!({"image": image, "text": text}),
        )?;
        jsonl.push(b'\n');
    }
    tandem::fsio::write_atomic(&out.join("captions.jsonl"), &jsonl)?;
    let ids: Vec<i64> = source.captions.iter().map(|(i, _)| *i as i64).collect();
    tandem::fsio::write_atomic(&out.join("text_to_image.npy"), &npy::encode_i64(&ids))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn left_out_pictures_take_their_captions_and_split_entries_with_them() {
        let source = CaptionSource {
            files: vec!["a".into(), "b".into(), "c".into()],
            captions: vec![
                (0, "A".into()),
                (1, "B".into()),
                (2, "C".into()),
                (0, "A2".into()),
            ],
            splits: Some(Splits {
                train: vec![0, 1],
                val: vec![],
                test: vec![2],
            }),
        };
        let kept = keep_encoded(&source, &["a".into(), "c".into()]);
        assert_eq!(
            kept.captions,
            vec![(0, "A".into()), (1, "C".into()), (0, "A2".into())]
        );
        assert_eq!(
            kept.splits,
            Some(Splits {
                train: vec![0],
                val: vec![],
                test: vec![1]
            })
        );
    }
}
