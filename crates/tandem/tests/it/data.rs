//! Dataset loading and every malformed-input case of the dataset format, each asserting the
//! message names the file and the problem.

use std::path::Path;

use tandem::data::{PairedDataset, Residency, npy, shard_name};
use tandem::fsio::write_atomic;

/// A valid dataset: 4 images (dim 3), 6 captions (dim 2).
fn write_valid(dir: &Path) {
    npy::write_f32(&dir.join("images.npy"), 4, 3, &[0.5; 12]).unwrap();
    npy::write_f32(&dir.join("texts.npy"), 6, 2, &[0.25; 12]).unwrap();
    write_atomic(
        &dir.join("text_to_image.npy"),
        &npy::encode_i64(&[0, 0, 1, 2, 3, 3]),
    )
    .unwrap();
}

/// An .npy file (format 1.0) with the given header fields and raw data.
fn npy_bytes(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
    let header = format!(
        "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
        if fortran { "True" } else { "False" }
    );
    let pad = 64 - (10 + header.len() + 1) % 64;
    let full = format!("{header}{}\n", " ".repeat(pad));
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(full.len() as u16).to_le_bytes());
    bytes.extend_from_slice(full.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

fn error_of(dir: &Path) -> String {
    PairedDataset::open(dir).unwrap_err().to_string()
}

fn assert_error(dir: &Path, file: &str, problem: &str) {
    let e = error_of(dir);
    assert!(e.contains(file), "message does not name {file}: {e}");
    assert!(e.contains(problem), "message does not say `{problem}`: {e}");
    assert!(e.contains("fix:"), "message gives no fix: {e}");
}

fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_valid(dir.path());
    dir
}

#[test]
fn valid_folder_loads_with_optional_files() {
    let d = fixture();
    std::fs::write(
        d.path().join("splits.json"),
        r#"{"train": [0, 1], "val": [2], "test": [3]}"#,
    )
    .unwrap();
    let lines: String = [0, 0, 1, 2, 3, 3]
        .iter()
        .enumerate()
        .map(|(t, i)| format!("{{\"image\": {i}, \"text\": \"caption {t}\"}}\n"))
        .collect();
    std::fs::write(d.path().join("captions.jsonl"), lines).unwrap();
    let ds = PairedDataset::open(d.path()).unwrap();
    assert_eq!(
        (
            ds.images.rows(),
            ds.images.cols(),
            ds.texts.rows(),
            ds.texts.cols()
        ),
        (4, 3, 6, 2)
    );
    assert_eq!(ds.text_to_image, vec![0, 0, 1, 2, 3, 3]);
    assert_eq!(ds.captions.as_ref().unwrap()[5], "caption 5");
    assert_eq!(ds.splits.as_ref().unwrap().test, vec![3]);
    assert_eq!(ds.captions_per_image(), vec![2, 1, 1, 2]);
}

#[test]
fn safetensors_dataset_loads() {
    use candle_core::{Device, Tensor};
    let d = tempfile::tempdir().unwrap();
    let images = Tensor::new(&[[1f64, 2.], [3., 4.]], &Device::Cpu).unwrap();
    let texts = Tensor::new(&[[1f32], [2.], [3.]], &Device::Cpu).unwrap();
    let ids = Tensor::new(&[0u8, 1, 1], &Device::Cpu).unwrap();
    candle_core::safetensors::save(
        &std::collections::HashMap::from([
            ("images".to_string(), images),
            ("texts".to_string(), texts),
            ("text_to_image".to_string(), ids),
        ]),
        d.path().join("dataset.safetensors"),
    )
    .unwrap();
    let ds = PairedDataset::open(d.path()).unwrap();
    assert_eq!(ds.images.in_memory().unwrap().data, vec![1., 2., 3., 4.]);
    assert_eq!(ds.text_to_image, vec![0, 1, 1]);
}

#[test]
fn missing_file() {
    let d = fixture();
    std::fs::remove_file(d.path().join("texts.npy")).unwrap();
    assert_error(d.path(), "texts.npy", "texts.npy is missing");
}

#[test]
fn empty_file() {
    let d = fixture();
    std::fs::write(d.path().join("images.npy"), b"").unwrap();
    assert_error(d.path(), "images.npy", "the file is empty");
}

#[test]
fn not_an_npy_file() {
    let d = fixture();
    std::fs::write(d.path().join("images.npy"), b"a,b,c\n1,2,3\n").unwrap();
    assert_error(d.path(), "images.npy", "not a .npy file");
}

#[test]
fn truncated_data() {
    let d = fixture();
    let bytes = std::fs::read(d.path().join("texts.npy")).unwrap();
    std::fs::write(d.path().join("texts.npy"), &bytes[..bytes.len() - 5]).unwrap();
    assert_error(d.path(), "texts.npy", "truncated");
}

#[test]
fn truncated_header() {
    let d = fixture();
    let bytes = std::fs::read(d.path().join("texts.npy")).unwrap();
    std::fs::write(d.path().join("texts.npy"), &bytes[..20]).unwrap();
    assert_error(d.path(), "texts.npy", "unreadable .npy header");
}

#[test]
fn integer_features_are_a_wrong_dtype() {
    let d = fixture();
    write_atomic(&d.path().join("images.npy"), &npy::encode_i64(&[1, 2, 3])).unwrap();
    assert_error(
        d.path(),
        "images.npy",
        "features must be float16, float32 or float64",
    );
}

#[test]
fn float_ids_are_a_wrong_dtype() {
    let d = fixture();
    npy::write_f32(&d.path().join("text_to_image.npy"), 6, 1, &[0.; 6]).unwrap();
    let e = error_of(d.path());
    assert!(e.contains("text_to_image.npy") && e.contains("1-D"), "{e}");
}

#[test]
fn one_dimensional_features_are_a_wrong_shape() {
    let d = fixture();
    let data: Vec<u8> = [1f32, 2., 3.]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(
        d.path().join("images.npy"),
        npy_bytes("<f4", false, "(3,)", &data),
    )
    .unwrap();
    assert_error(d.path(), "images.npy", "expected a 2-D array");
}

#[test]
fn nan_feature_names_row_and_column() {
    let d = fixture();
    let mut v = vec![0.5f32; 12];
    v[7] = f32::NAN;
    npy::write_f32(&d.path().join("images.npy"), 4, 3, &v).unwrap();
    assert_error(
        d.path(),
        "images.npy",
        "non-finite value NaN at row 2, column 1",
    );
}

#[test]
fn infinite_feature() {
    let d = fixture();
    let mut v = vec![0.25f32; 12];
    v[0] = f32::INFINITY;
    npy::write_f32(&d.path().join("texts.npy"), 6, 2, &v).unwrap();
    assert_error(
        d.path(),
        "texts.npy",
        "non-finite value inf at row 0, column 0",
    );
}

#[test]
fn zero_rows() {
    let d = fixture();
    npy::write_f32(&d.path().join("images.npy"), 0, 3, &[]).unwrap();
    assert_error(d.path(), "images.npy", "the array is empty");
}

#[test]
fn caption_points_at_missing_image() {
    let d = fixture();
    write_atomic(
        &d.path().join("text_to_image.npy"),
        &npy::encode_i64(&[0, 0, 1, 2, 3, 4]),
    )
    .unwrap();
    assert_error(
        d.path(),
        "text_to_image.npy",
        "caption 5 points at image 4, but images has 4 rows",
    );
}

#[test]
fn negative_image_id() {
    let d = fixture();
    write_atomic(
        &d.path().join("text_to_image.npy"),
        &npy::encode_i64(&[0, -1, 1, 2, 3, 3]),
    )
    .unwrap();
    assert_error(
        d.path(),
        "text_to_image.npy",
        "caption 1 points at image -1",
    );
}

#[test]
fn ids_length_mismatch() {
    let d = fixture();
    write_atomic(
        &d.path().join("text_to_image.npy"),
        &npy::encode_i64(&[0, 1, 2, 3]),
    )
    .unwrap();
    assert_error(
        d.path(),
        "text_to_image.npy",
        "text_to_image has 4 entries but texts has 6 rows",
    );
}

#[test]
fn overlapping_splits() {
    let d = fixture();
    std::fs::write(
        d.path().join("splits.json"),
        r#"{"train": [0, 1, 2], "val": [2], "test": [3]}"#,
    )
    .unwrap();
    assert_error(
        d.path(),
        "splits.json",
        "image 2 is in both `train` and `val`",
    );
}

#[test]
fn image_without_caption_in_a_split() {
    let d = fixture();
    write_atomic(
        &d.path().join("text_to_image.npy"),
        &npy::encode_i64(&[0, 0, 1, 1, 3, 3]),
    )
    .unwrap();
    std::fs::write(
        d.path().join("splits.json"),
        r#"{"train": [0, 1], "val": [], "test": [2, 3]}"#,
    )
    .unwrap();
    assert_error(
        d.path(),
        "splits.json",
        "image 2 in split `test` has no caption",
    );
}

#[test]
fn split_index_out_of_range() {
    let d = fixture();
    std::fs::write(d.path().join("splits.json"), r#"{"train": [0, 9]}"#).unwrap();
    assert_error(
        d.path(),
        "splits.json",
        "lists image 9 but there are only 4 images",
    );
}

#[test]
fn splits_with_unknown_key() {
    let d = fixture();
    std::fs::write(
        d.path().join("splits.json"),
        r#"{"train": [0], "dev": [1]}"#,
    )
    .unwrap();
    assert_error(d.path(), "splits.json", "unknown field `dev`");
}

#[test]
fn captions_with_bad_json_line() {
    let d = fixture();
    std::fs::write(
        d.path().join("captions.jsonl"),
        "{\"image\": 0, \"text\": \"a\"}\nnot json\n",
    )
    .unwrap();
    assert_error(d.path(), "captions.jsonl", "line 2");
}

#[test]
fn captions_with_invalid_utf8() {
    let d = fixture();
    std::fs::write(
        d.path().join("captions.jsonl"),
        b"{\"image\": 0, \"text\": \"\xff\"}\n",
    )
    .unwrap();
    assert_error(d.path(), "captions.jsonl", "invalid UTF-8");
}

#[test]
fn corrupt_safetensors() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("dataset.safetensors"),
        b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":",
    )
    .unwrap();
    assert_error(
        d.path(),
        "dataset.safetensors",
        "not a valid safetensors file",
    );
}

#[test]
fn safetensors_missing_tensor() {
    use candle_core::{Device, Tensor};
    let d = tempfile::tempdir().unwrap();
    let t = Tensor::new(&[[1f32]], &Device::Cpu).unwrap();
    candle_core::safetensors::save(
        &std::collections::HashMap::from([
            ("images".to_string(), t.clone()),
            ("texts".to_string(), t),
        ]),
        d.path().join("dataset.safetensors"),
    )
    .unwrap();
    assert_error(
        d.path(),
        "dataset.safetensors",
        "the tensor `text_to_image` is missing",
    );
}

#[test]
fn big_endian_and_float64_and_fortran_order_are_read_correctly() {
    let d = fixture();
    // numpy.save(np.asfortranarray(np.arange(6, dtype='>f8').reshape(2, 3))), written by hand.
    let data: Vec<u8> = [0.0f64, 3.0, 1.0, 4.0, 2.0, 5.0]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    let bytes = npy_bytes(">f8", true, "(2, 3)", &data);
    let path = d.path().join("x.npy");
    std::fs::write(&path, bytes).unwrap();
    let m = npy::read_features(&path).unwrap();
    assert_eq!((m.rows, m.cols), (2, 3));
    assert_eq!(m.data, vec![0., 1., 2., 3., 4., 5.]);
}

/// A folder with MATLAB features (the reference's format: v5 images, v7.3 texts stored one
/// per column), then with an HDF5 dump for the images.
#[test]
fn a_dataset_folder_reads_mat_features() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mat");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures.join("compressed_v5.mat"),
        dir.path().join("images.mat"),
    )
    .unwrap();
    std::fs::copy(fixtures.join("v73.mat"), dir.path().join("texts.mat")).unwrap();
    tandem::fsio::write_atomic(
        &dir.path().join("text_to_image.npy"),
        &tandem::data::npy::encode_i64(&[0, 1, 2]),
    )
    .unwrap();
    let d = tandem::data::PairedDataset::open(dir.path()).unwrap();
    assert_eq!(
        (
            d.images.rows(),
            d.images.cols(),
            d.texts.rows(),
            d.texts.cols()
        ),
        (3, 4, 3, 4)
    );
    let (images, texts) = (d.images.in_memory().unwrap(), d.texts.in_memory().unwrap());
    assert_eq!(images.row(1), &[-0.375, -0.125, 0.125, 0.375]);
    assert_eq!(texts.row(1), images.row(1));
    std::fs::remove_file(dir.path().join("images.mat")).unwrap();
    std::fs::copy(fixtures.join("features.h5"), dir.path().join("images.h5")).unwrap();
    let h5 = tandem::data::PairedDataset::open(dir.path()).unwrap();
    assert_eq!(h5.images.in_memory(), d.images.in_memory());
}

/// Two pieces of the valid dataset: images 0–1 with captions 0–2, images 2–3 with 3–5.
fn write_pieces(dir: &Path, first_ids: &[i64], second_ids: &[i64]) {
    for (k, ids) in [first_ids, second_ids].into_iter().enumerate() {
        let name = |array: &str| dir.join(shard_name(array, k));
        npy::write_f32(&name("images"), 2, 3, &[k as f32; 6]).unwrap();
        npy::write_f32(&name("texts"), 3, 2, &[k as f32; 6]).unwrap();
        write_atomic(&name("text_to_image"), &npy::encode_i64(ids)).unwrap();
    }
}

#[test]
fn pieces_with_their_own_ids_open_as_one_dataset_in_memory_or_streamed() {
    let d = tempfile::tempdir().unwrap();
    write_pieces(d.path(), &[0, 0, 1], &[0, 1, 1]);
    for residency in [Residency::Memory, Residency::Stream, Residency::Auto] {
        let ds = PairedDataset::open_with(d.path(), residency).unwrap();
        assert_eq!(ds.text_to_image, vec![0, 0, 1, 2, 3, 3]);
        assert_eq!((ds.images.rows(), ds.texts.rows()), (4, 6));
        assert_eq!(ds.images.is_streamed(), residency == Residency::Stream);
        assert_eq!(
            ds.images.gather(&[3, 0]).unwrap(),
            vec![1., 1., 1., 0., 0., 0.]
        );
        assert_eq!(ds.texts.gather(&[2, 3]).unwrap(), vec![0., 0., 1., 1.]);
    }
    // One global text_to_image.npy instead of the pieces' own.
    for k in 0..2 {
        std::fs::remove_file(d.path().join(shard_name("text_to_image", k))).unwrap();
    }
    write_atomic(
        &d.path().join("text_to_image.npy"),
        &npy::encode_i64(&[0, 1, 1, 2, 2, 3]),
    )
    .unwrap();
    let ds = PairedDataset::open_with(d.path(), Residency::Stream).unwrap();
    assert_eq!(ds.text_to_image, vec![0, 1, 1, 2, 2, 3]);
}

#[test]
fn pieces_that_disagree_are_named() {
    let d = tempfile::tempdir().unwrap();
    write_pieces(d.path(), &[0, 0, 1], &[0, 2, 1]);
    assert_error(
        d.path(),
        "text_to_image-00001.npy",
        "caption 1 points at image 2, but",
    );
    write_pieces(d.path(), &[0, 0, 1], &[0, 1]);
    assert_error(d.path(), "text_to_image-00001.npy", "2 ids for the 3 rows");
    write_pieces(d.path(), &[0, 0, 1], &[0, 1, 1]);
    std::fs::remove_file(d.path().join(shard_name("texts", 1))).unwrap();
    assert_error(
        d.path(),
        "",
        "2 text_to_image shards for 2 image and 1 text shards",
    );
    npy::write_f32(&d.path().join(shard_name("texts", 2)), 3, 2, &[0.; 6]).unwrap();
    assert_error(d.path(), "", "texts-00001.npy is missing");
}

#[test]
fn streaming_features_that_are_not_npy_is_refused_with_the_way_out() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mat");
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(fixtures.join("v73.mat"), d.path().join("images.mat")).unwrap();
    npy::write_f32(&d.path().join("texts.npy"), 3, 2, &[0.; 6]).unwrap();
    write_atomic(
        &d.path().join("text_to_image.npy"),
        &npy::encode_i64(&[0, 1, 2]),
    )
    .unwrap();
    let e = PairedDataset::open_with(d.path(), Residency::Stream)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("images.mat")
            && e.contains("stream from .npy files only")
            && e.contains("--features memory"),
        "{e}"
    );
    assert!(PairedDataset::open_with(d.path(), Residency::Auto).is_ok());
    // Column-major features cannot be read by row.
    let d = fixture();
    let data: Vec<u8> = (0..12).flat_map(|v| (v as f32).to_le_bytes()).collect();
    std::fs::write(
        d.path().join("images.npy"),
        npy_bytes("<f4", true, "(4, 3)", &data),
    )
    .unwrap();
    let e = PairedDataset::open_with(d.path(), Residency::Stream)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("images.npy") && e.contains("column-major"),
        "{e}"
    );
    assert!(PairedDataset::open_with(d.path(), Residency::Memory).is_ok());
}
