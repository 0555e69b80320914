//! Atomic file writes: a temporary file in the same folder, fsync, then rename, so a reader
//! never sees a half-written file and a killed run leaves the previous version intact.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically.
///
/// # Errors
/// [`Error::Io`] naming `path` when the folder is not writable or the disk is full.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(source) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, source));
    }
    Ok(())
}

/// Reads the JSON record at `path`; `None` when there is no such file.
///
/// # Errors
/// [`Error::BadFile`] naming the file, with `what` it should be and the `fix`, when it does not
/// parse; [`Error::Io`] when it cannot be read.
pub fn read_json_record<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &str,
    fix: &str,
) -> Result<Option<T>> {
    if !path.exists() {
        return Ok(None);
    }
    serde_json::from_slice(&read(path)?)
        .map(Some)
        .map_err(|e| Error::bad_file(path, format!("not {what}: {e}"), fix))
}

/// Writes `value` as pretty JSON to `path` atomically.
///
/// # Errors
/// [`Error::Io`] naming `path`.
pub fn write_json_record<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    write_atomic(
        path,
        &serde_json::to_vec_pretty(value).expect("a record serialises"),
    )
}

/// Reads a whole file, naming it in the error.
///
/// # Errors
/// [`Error::Io`] naming `path`.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// SHA-256 of a file's bytes (lowercase hex), read in 1 MiB pieces.
///
/// # Errors
/// [`Error::Io`] naming `path`.
pub fn sha256(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hash = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hash.update(&buffer[..n]);
    }
    Ok(format!("{:x}", hash.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn missing_folder_is_an_io_error_naming_the_file() {
        let err = write_atomic(Path::new("/nonexistent-dir/x.bin"), b"x").unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/x.bin"));
    }
}
