//! Encoding a list of picture files into an `.npy` of features, streamed and resumable: each
//! batch is decoded on every core, encoded, appended to the output and committed to a
//! progress file, so memory is bounded by the batch and a killed run continues from its last
//! finished batch. Bad files either stop the run with one clear error or, when asked, are left
//! out and listed, so row `i` of the output is always `encoded[i]`.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::decode::read_rgb8;
use super::encoder::ImageEncoder;
use crate::data::npy_rows::NpyRowWriter;
use crate::error::{Error, Result};
use crate::fsio;

/// A file left out with `skip_bad`, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedFile {
    /// The file, as listed.
    pub file: String,
    /// The decoder's message.
    pub reason: String,
}

/// What a finished run encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFiles {
    /// The files of the output's rows, in order.
    pub encoded: Vec<String>,
    /// The files left out.
    pub skipped: Vec<SkippedFile>,
}

/// How to run [`encode_files`].
#[derive(Debug, Clone, Copy)]
pub struct EncodeOptions {
    /// Pictures per forward pass.
    pub batch_size: usize,
    /// Leave undecodable files out (listed in the result) instead of stopping.
    pub skip_bad: bool,
}

/// Committed after every batch, beside the output.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Progress {
    encoder_sha256: String,
    files_sha256: String,
    done_files: usize,
    rows: usize,
    skipped: Vec<SkippedFile>,
}

/// `<out>.progress.json`.
pub fn progress_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".progress.json");
    out.with_file_name(name)
}

fn list_hash(files: &[String]) -> String {
    let mut h = Sha256::new();
    for f in files {
        h.update(f.as_bytes());
        h.update([0]);
    }
    format!("{:x}", h.finalize())
}

/// Encodes `root/f` for each `f` of `files` into `out` (`[encoded, 1280]` f32). Resumes an
/// interrupted run of the same files and encoder. `on_progress(done, total)` after each batch.
///
/// # Errors
/// The first bad file's [`Error::BadFile`] (unless `skip_bad`), I/O errors naming the file.
pub fn encode_files(
    encoder: &ImageEncoder,
    root: &Path,
    files: &[String],
    out: &Path,
    options: EncodeOptions,
    mut on_progress: impl FnMut(usize, usize),
) -> Result<EncodedFiles> {
    let dim = encoder.record().dim;
    let mut progress = Progress {
        encoder_sha256: encoder.record().sha256.clone(),
        files_sha256: list_hash(files),
        done_files: 0,
        rows: 0,
        skipped: Vec::new(),
    };
    let progress_file = progress_path(out);
    let mut writer = match read_progress(&progress_file)? {
        Some(p)
            if p.encoder_sha256 == progress.encoder_sha256
                && p.files_sha256 == progress.files_sha256 =>
        {
            let w = NpyRowWriter::resume(out, dim, p.rows)?;
            progress = p;
            w
        }
        _ => NpyRowWriter::create(out, dim)?,
    };
    on_progress(progress.done_files, files.len());
    let batch_size = options.batch_size.max(1);
    while progress.done_files < files.len() {
        let batch =
            &files[progress.done_files..(progress.done_files + batch_size).min(files.len())];
        let decoded: Vec<Result<_>> = batch.par_iter().map(|f| read_rgb8(&root.join(f))).collect();
        let mut pictures = Vec::with_capacity(batch.len());
        for (file, d) in batch.iter().zip(decoded) {
            match d {
                Ok(p) => pictures.push(p),
                Err(e)
                    if options.skip_bad
                        && matches!(e, Error::BadFile { .. } | Error::Io { .. }) =>
                {
                    progress.skipped.push(SkippedFile {
                        file: file.clone(),
                        reason: e.to_string(),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        if !pictures.is_empty() {
            writer.append(&encoder.encode(&pictures)?)?;
        }
        progress.done_files += batch.len();
        progress.rows = writer.rows();
        let json = serde_json::to_vec(&progress).expect("progress serialises");
        fsio::write_atomic(&progress_file, &json)?;
        on_progress(progress.done_files, files.len());
    }
    writer.finish()?;
    let _ = std::fs::remove_file(&progress_file);
    let skipped: std::collections::HashSet<&str> =
        progress.skipped.iter().map(|s| s.file.as_str()).collect();
    let encoded = files
        .iter()
        .filter(|f| !skipped.contains(f.as_str()))
        .cloned()
        .collect();
    Ok(EncodedFiles {
        encoded,
        skipped: progress.skipped,
    })
}

fn read_progress(path: &Path) -> Result<Option<Progress>> {
    if !path.exists() {
        return Ok(None);
    }
    // A progress file that does not parse is from another version: start again.
    Ok(serde_json::from_slice(&fsio::read(path)?).ok())
}

/// The picture files under `dir` (recursively, by extension), as paths relative to `dir`,
/// sorted so the order is the same on every machine.
///
/// # Errors
/// [`Error::Io`] naming a folder that cannot be listed.
pub fn list_pictures(dir: &Path) -> Result<Vec<String>> {
    const EXTENSIONS: [&str; 9] = [
        "png", "jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff", "jfif",
    ];
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder).map_err(|e| Error::io(&folder, e))? {
            let path = entry.map_err(|e| Error::io(&folder, e))?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            {
                let relative = path.strip_prefix(dir).unwrap_or(&path);
                found.push(relative.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    found.sort();
    Ok(found)
}
