//! The `.npy` files of one array of a dataset folder: `NAME.npy`, or shards `NAME-00000.npy`,
//! `NAME-00001.npy`, … for a set written in pieces.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The file name of shard `k` of `name`.
pub fn shard_name(name: &str, k: usize) -> String {
    format!("{name}-{k:05}.npy")
}

/// The files of array `name` in `root`, in row order: `[NAME.npy]`, the shards numbered from
/// 00000 without a gap, or nothing when neither exists.
///
/// # Errors
/// [`Error::BadDataset`] when both forms exist, or the shards' numbers have a gap.
pub fn array_files(root: &Path, name: &str) -> Result<Vec<PathBuf>> {
    let whole = root.join(format!("{name}.npy"));
    let mut shards = Vec::new();
    while root.join(shard_name(name, shards.len())).exists() {
        shards.push(root.join(shard_name(name, shards.len())));
    }
    let numbered = count_numbered(root, name)?;
    if numbered != shards.len() {
        return Err(Error::bad_dataset(
            root,
            format!(
                "{numbered} files named {name}-NNNNN.npy, but {} is missing",
                shard_name(name, shards.len())
            ),
            "number the shards from 00000 without a gap",
        ));
    }
    match (whole.exists(), shards.is_empty()) {
        (true, false) => Err(Error::bad_dataset(
            root,
            format!("both {name}.npy and {} exist", shard_name(name, 0)),
            format!("keep either one {name}.npy or its shards, not both"),
        )),
        (true, true) => Ok(vec![whole]),
        (false, _) => Ok(shards),
    }
}

/// Files in `root` named `NAME-` + five digits + `.npy`.
fn count_numbered(root: &Path, name: &str) -> Result<usize> {
    let prefix = format!("{name}-");
    let entries = std::fs::read_dir(root).map_err(|e| Error::io(root, e))?;
    let mut count = 0;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(root, e))?;
        let file = entry.file_name();
        let Some(file) = file.to_str() else { continue };
        let number = file
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".npy"));
        if number.is_some_and(|n| n.len() == 5 && n.bytes().all(|b| b.is_ascii_digit())) {
            count += 1;
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_shards_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert!(array_files(root, "images").unwrap().is_empty());
        std::fs::write(root.join("images.npy"), b"").unwrap();
        assert_eq!(
            array_files(root, "images").unwrap(),
            vec![root.join("images.npy")]
        );
        for k in 0..3 {
            std::fs::write(root.join(shard_name("texts", k)), b"").unwrap();
        }
        let texts = array_files(root, "texts").unwrap();
        assert_eq!(texts.len(), 3);
        assert!(texts[2].ends_with("texts-00002.npy"));
        std::fs::write(root.join(shard_name("images", 0)), b"").unwrap();
        let e = array_files(root, "images").unwrap_err().to_string();
        assert!(e.contains("both images.npy and images-00000.npy"), "{e}");
    }

    #[test]
    fn a_gap_in_the_numbers_is_named() {
        let dir = tempfile::tempdir().unwrap();
        for k in [0, 1, 3] {
            std::fs::write(dir.path().join(shard_name("texts", k)), b"").unwrap();
        }
        let e = array_files(dir.path(), "texts").unwrap_err().to_string();
        assert!(e.contains("texts-00002.npy is missing"), "{e}");
    }
}
