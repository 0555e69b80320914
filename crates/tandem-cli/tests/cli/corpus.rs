//! The malformed-input corpus: every bad input a user can hand `tandem`, generated here on a
//! valid fixture, run through the real binary. Each must fail with exit code 1 and one
//! `error:` message that names the file (or key) and the problem — never a panic.

use std::path::Path;

use tandem::data::npy;
use tandem::fsio::write_atomic;

use super::{TINY, tandem, write_fixture};

/// An .npy file (format 1.0) with the given header fields and raw data.
fn npy_bytes(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    let header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let pad = 64 - (10 + header.len() + 1) % 64;
    let full = format!("{header}{}\n", " ".repeat(pad));
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(full.len() as u16).to_le_bytes());
    bytes.extend_from_slice(full.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

fn write(dir: &Path, file: &str, bytes: impl AsRef<[u8]>) {
    write_atomic(&dir.join(file), bytes.as_ref()).unwrap();
}

/// The fixture's 30 × 6 images with one value replaced.
fn images_with(value: f32) -> Vec<u8> {
    let mut data = vec![0.25f32; 30 * 6];
    data[7 * 6 + 2] = value;
    npy::encode_f32(30, 6, &data)
}

/// Ids of the fixture (2 captions per image) with one replaced.
fn ids_with(position: usize, id: i64) -> Vec<u8> {
    let mut ids: Vec<i64> = (0..60).map(|k| k / 2).collect();
    ids[position] = id;
    npy::encode_i64(&ids)
}

fn splits(train: std::ops::Range<u32>, val: std::ops::Range<u32>, test: &[u32]) -> String {
    serde_json::json!({
        "train": train.collect::<Vec<_>>(),
        "val": val.collect::<Vec<_>>(),
        "test": test,
    })
    .to_string()
}

type Setup = fn(&Path);

/// (name, how to break the fixture, extra `train` arguments, fragments the message must hold).
const CASES: &[(&str, Setup, &[&str], &[&str])] = &[
    (
        "empty npy",
        |d| write(d, "images.npy", b""),
        &[],
        &["images.npy"],
    ),
    (
        "not npy",
        |d| write(d, "images.npy", b"id,x\n1,2\n"),
        &[],
        &["images.npy"],
    ),
    (
        "bad magic",
        |d| write(d, "texts.npy", b"\x93NUMPZ\x01\x00\x10\x00{}      "),
        &[],
        &["texts.npy"],
    ),
    (
        "unsupported npy version",
        |d| {
            let mut b = npy_bytes("<f4", "(30, 6)", &[0; 720]);
            b[6] = 9;
            write(d, "images.npy", b)
        },
        &[],
        &["images.npy"],
    ),
    (
        "garbled header",
        |d| {
            write(
                d,
                "images.npy",
                b"\x93NUMPY\x01\x00\x10\x00{'descr': <f4  \n",
            )
        },
        &[],
        &["images.npy"],
    ),
    (
        "truncated header",
        |d| write(d, "images.npy", b"\x93NUMPY\x01\x00\x76\x00{'de"),
        &[],
        &["images.npy"],
    ),
    (
        "truncated data",
        |d| write(d, "images.npy", npy_bytes("<f4", "(30, 6)", &[0; 100])),
        &[],
        &["images.npy"],
    ),
    (
        "complex dtype",
        |d| write(d, "images.npy", npy_bytes("<c8", "(30, 6)", &[0; 1440])),
        &[],
        &["images.npy", "Complex"],
    ),
    (
        "string dtype",
        |d| write(d, "texts.npy", npy_bytes("<U2", "(60, 4)", &[0; 1920])),
        &[],
        &["texts.npy"],
    ),
    (
        "integer features",
        |d| write(d, "images.npy", npy_bytes("<i4", "(30, 6)", &[0; 720])),
        &[],
        &["images.npy"],
    ),
    (
        "float ids",
        |d| write(d, "text_to_image.npy", npy_bytes("<f4", "(60,)", &[0; 240])),
        &[],
        &["text_to_image.npy"],
    ),
    (
        "3-d features",
        |d| write(d, "images.npy", npy_bytes("<f4", "(30, 3, 2)", &[0; 720])),
        &[],
        &["images.npy"],
    ),
    (
        "1-d features",
        |d| write(d, "texts.npy", npy_bytes("<f4", "(240,)", &[0; 960])),
        &[],
        &["texts.npy"],
    ),
    (
        "2-d ids",
        |d| {
            write(
                d,
                "text_to_image.npy",
                npy_bytes("<i8", "(30, 2)", &[0; 480]),
            )
        },
        &[],
        &["text_to_image.npy"],
    ),
    (
        "zero image rows",
        |d| write(d, "images.npy", npy::encode_f32(0, 6, &[])),
        &[],
        &["images.npy"],
    ),
    (
        "zero caption rows",
        |d| {
            write(d, "texts.npy", npy::encode_f32(0, 4, &[]));
            write(d, "text_to_image.npy", npy::encode_i64(&[]))
        },
        &[],
        &["texts.npy"],
    ),
    (
        "NaN feature",
        |d| write(d, "images.npy", images_with(f32::NAN)),
        &[],
        &["images.npy", "row 7"],
    ),
    (
        "infinite feature",
        |d| write(d, "images.npy", images_with(f32::INFINITY)),
        &[],
        &["images.npy", "row 7"],
    ),
    (
        "ids shorter than captions",
        |d| write(d, "text_to_image.npy", npy::encode_i64(&[0; 59])),
        &[],
        &["text_to_image.npy"],
    ),
    (
        "caption id out of range",
        |d| write(d, "text_to_image.npy", ids_with(5, 30)),
        &[],
        &["text_to_image.npy", "30"],
    ),
    (
        "negative caption id",
        |d| write(d, "text_to_image.npy", ids_with(5, -1)),
        &[],
        &["text_to_image.npy", "-1"],
    ),
    (
        "missing texts",
        |d| std::fs::remove_file(d.join("texts.npy")).unwrap(),
        &[],
        &["texts.npy"],
    ),
    (
        "image without captions in a split",
        |d| {
            // Image 29 loses both captions to image 0.
            let mut ids: Vec<i64> = (0..60).map(|k| k / 2).collect();
            ids[58] = 0;
            ids[59] = 0;
            write(d, "text_to_image.npy", npy::encode_i64(&ids));
            write(
                d,
                "splits.json",
                splits(0..20, 20..25, &[25, 26, 27, 28, 29]),
            )
        },
        &[],
        &["29"],
    ),
    (
        "overlapping splits",
        |d| write(d, "splits.json", splits(0..20, 19..25, &[25, 26])),
        &[],
        &["splits.json", "19"],
    ),
    (
        "split id out of range",
        |d| write(d, "splits.json", splits(0..20, 20..25, &[99])),
        &[],
        &["splits.json", "99"],
    ),
    (
        "splits not JSON",
        |d| write(d, "splits.json", "train: [1, 2]"),
        &[],
        &["splits.json"],
    ),
    (
        "splits unknown key",
        |d| write(d, "splits.json", r#"{"train": [0, 1, 2], "dev": [3]}"#),
        &[],
        &["splits.json", "dev"],
    ),
    (
        "captions bad JSON line",
        |d| {
            let mut lines: Vec<String> = (0..60)
                .map(|k| format!(r#"{{"image": {}, "text": "caption {k}"}}"#, k / 2))
                .collect();
            lines[11] = "{\"image\": 5, text}".into();
            write(d, "captions.jsonl", lines.join("\n"))
        },
        &[],
        &["captions.jsonl", "line 12"],
    ),
    (
        "captions invalid UTF-8",
        |d| {
            write(
                d,
                "captions.jsonl",
                b"{\"image\": 0, \"text\": \"\xff\xfe\"}\n",
            )
        },
        &[],
        &["captions.jsonl"],
    ),
    (
        "corrupt safetensors",
        |d| {
            write(
                d,
                "dataset.safetensors",
                b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":1",
            )
        },
        &[],
        &["dataset.safetensors"],
    ),
    (
        "foreign safetensors",
        |d| {
            let t = candle_core::Tensor::zeros(
                (2, 2),
                candle_core::DType::F32,
                &candle_core::Device::Cpu,
            )
            .unwrap();
            let bytes = safetensors::serialize([("weight", t)], None).unwrap();
            write(d, "dataset.safetensors", bytes)
        },
        &[],
        &["dataset.safetensors", "images"],
    ),
    (
        "unknown config key",
        |_| {},
        &["--set", "train.epoch=3"],
        &["train.epoch"],
    ),
    (
        "negative margin",
        |_| {},
        &["--set", "loss.margin=-0.1"],
        &["loss.margin"],
    ),
    ("K = 0", |_| {}, &["--set", "loss.top_k=0"], &["loss.top_k"]),
    (
        "batch larger than the split",
        |_| {},
        &["--set", "train.batch_size=500"],
        &["batch_size"],
    ),
    (
        "wrong value type",
        |_| {},
        &["--set", "train.lr=fast"],
        &["train.lr"],
    ),
    (
        "config file with an unknown key",
        |d| write(d, "bad.toml", "[loss]\nmargn = 0.1\n"),
        &["--config", "{dir}/bad.toml"],
        &["bad.toml", "margn"],
    ),
    (
        "config file not TOML",
        |d| write(d, "bad.toml", "{\"loss\": 1}"),
        &["--config", "{dir}/bad.toml"],
        &["bad.toml"],
    ),
];

#[test]
fn every_malformed_input_fails_with_one_clear_message() {
    assert!(CASES.len() >= 30, "the corpus has {} cases", CASES.len());
    let mut failures = Vec::new();
    for (name, setup, args, fragments) in CASES {
        let dir = tempfile::tempdir().unwrap();
        write_fixture(dir.path());
        setup(dir.path());
        let args: Vec<String> = args
            .iter()
            .map(|a| a.replace("{dir}", &dir.path().display().to_string()))
            .collect();
        let out = tandem()
            .args(["train", "--data"])
            .arg(dir.path())
            .arg("--out")
            .arg(dir.path().join("run"))
            .args(TINY)
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let errors = stderr.lines().filter(|l| l.starts_with("error:")).count();
        let missing: Vec<&&str> = fragments.iter().filter(|f| !stderr.contains(**f)).collect();
        if out.status.code() != Some(1)
            || errors != 1
            || stderr.contains("panicked")
            || !missing.is_empty()
        {
            failures.push(format!(
                "{name}: exit {:?}, missing {missing:?}\n{stderr}",
                out.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

#[test]
fn a_checkpoint_from_other_feature_dimensions_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path());
    let run = dir.path().join("run");
    super::train_cmd(dir.path(), &run).assert().success();
    let other = tempfile::tempdir().unwrap();
    write_fixture(other.path());
    write(
        other.path(),
        "images.npy",
        npy::encode_f32(30, 5, &[0.5; 150]),
    );
    let out = tandem()
        .args(["eval", "--model"])
        .arg(&run)
        .arg("--data")
        .arg(other.path())
        .output()
        .unwrap();
    let e = super::stderr_of_failure(out);
    assert!(e.contains("dimension 6") && e.contains("has 5"), "{e}");
}
