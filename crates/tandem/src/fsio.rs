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
    write_atomic_with(path, |tmp| {
        let written = std::fs::File::create(tmp).and_then(|mut f| f.write_all(bytes));
        written.map_err(|source| Error::io(path, source))
    })
}

/// Writes `path` atomically through `write`, which creates and fills the temporary file it is
/// given (for writers that stream to a path, so the whole content is never in memory at
/// once); the file is then synced and renamed into place.
///
/// # Errors
/// The error of `write` as it is (it names `path`); [`Error::Io`] naming `path` when the
/// file cannot be synced or renamed. The temporary file is removed either way and `path`
/// keeps its previous content.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let sync_and_rename = || -> std::io::Result<()> {
        // Opened for writing: Windows syncs only a handle with write access.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&tmp)?
            .sync_all()?;
        std::fs::rename(&tmp, path)
    };
    let result =
        write(&tmp).and_then(|()| sync_and_rename().map_err(|source| Error::io(path, source)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
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
    fn a_failed_streamed_write_keeps_the_previous_file_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        write_atomic(&path, b"kept").unwrap();
        let err = write_atomic_with(&path, |tmp| {
            std::fs::write(tmp, b"half of it").unwrap();
            Err(Error::Config("the writer gave up".into()))
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            Error::Config("the writer gave up".into()).to_string()
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"kept");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // A writer that created nothing: the sync fails, naming the file.
        let err = write_atomic_with(&path, |_| Ok(())).unwrap_err();
        assert!(err.to_string().contains("a.bin"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"kept");
        write_atomic_with(&path, |tmp| {
            std::fs::write(tmp, b"new").map_err(|e| Error::io(tmp, e))
        })
        .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_folder_is_an_io_error_naming_the_file() {
        let err = write_atomic(Path::new("/nonexistent-dir/x.bin"), b"x").unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/x.bin"));
    }
}
