//! `tandem encode-images`: pictures → image features with the built-in EfficientNet-Lite.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tandem::image::{EncodeOptions, ImageEncoder, encode_files, list_pictures};

/// `image_files.txt`: each row's picture, relative to the dataset folder when it can be.
pub fn write_image_files(images: &Path, out: &Path, files: &[String]) -> Result<()> {
    let base = std::path::absolute(out)?;
    let root = std::path::absolute(images)?;
    let mut text = String::new();
    for f in files {
        let path = relative(&base, &root.join(f));
        text.push_str(&path.to_string_lossy());
        text.push('\n');
    }
    Ok(tandem::fsio::write_atomic(
        &out.join(IMAGE_FILES),
        text.as_bytes(),
    )?)
}

/// `path` relative to `base` (both absolute), with `..` where needed.
fn relative(base: &Path, path: &Path) -> PathBuf {
    let (b, p): (Vec<_>, Vec<_>) = (base.components().collect(), path.components().collect());
    let common = b.iter().zip(&p).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..b.len() {
        out.push("..");
    }
    for c in &p[common..] {
        out.push(c);
    }
    out
}

/// Where the pictures are.
pub enum Pictures<'a> {
    /// Every picture under a folder.
    Folder(&'a Path),
    /// The files named in a list, relative to the list's folder.
    List(&'a Path),
}

/// The file of each row of `images.npy`, beside it.
pub const IMAGE_FILES: &str = "image_files.txt";
/// The files left out by `--skip-bad`, with the reasons.
pub const SKIPPED_IMAGES: &str = "skipped_images.json";

/// The root the names are relative to, and the names.
fn resolve(pictures: Pictures<'_>) -> Result<(std::path::PathBuf, Vec<String>)> {
    match pictures {
        Pictures::Folder(dir) => {
            let files = list_pictures(dir)?;
            if files.is_empty() {
                anyhow::bail!(
                    "{}: no pictures (.png, .jpg, .webp, .gif, .bmp, .tif) in this folder\n  fix: point --images at the folder of pictures, or pass --list",
                    dir.display()
                );
            }
            Ok((dir.to_path_buf(), files))
        }
        Pictures::List(list) => {
            let text = std::fs::read_to_string(list)
                .with_context(|| format!("{}: cannot read the list", list.display()))?;
            let files: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
            if files.is_empty() {
                anyhow::bail!(
                    "{}: the list names no files\n  fix: one picture path per line",
                    list.display()
                );
            }
            let root = list
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            Ok((root.to_path_buf(), files))
        }
    }
}

pub fn run(
    pictures: Pictures<'_>,
    out: &Path,
    weights: &Path,
    options: EncodeOptions,
) -> Result<()> {
    let (root, files) = resolve(pictures)?;
    let folder = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(folder)
        .with_context(|| format!("{}: cannot create the folder", folder.display()))?;
    let started = std::time::Instant::now();
    let encoder = ImageEncoder::load(weights)?;
    tracing::info!(
        "loaded {} in {:.1} s",
        encoder.record().describe(),
        started.elapsed().as_secs_f64()
    );
    let started = std::time::Instant::now();
    let bar = crate::progress::counter_bar("encode", files.len());
    let mut resumed_at = None;
    let result = encode_files(&encoder, &root, &files, out, options, |done, _| {
        resumed_at.get_or_insert(done);
        if let Some(bar) = &bar {
            bar.set_position(done as u64);
        }
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    write_image_files(&root, folder, &result.encoded)?;
    let skipped_path = folder.join(SKIPPED_IMAGES);
    if result.skipped.is_empty() {
        let _ = std::fs::remove_file(&skipped_path);
    } else {
        tandem::fsio::write_atomic(&skipped_path, &serde_json::to_vec_pretty(&result.skipped)?)?;
        tracing::warn!(
            "left out {} file(s) that could not be decoded (listed in {}); {} lists the {} rows written",
            result.skipped.len(),
            skipped_path.display(),
            IMAGE_FILES,
            result.encoded.len()
        );
    }
    encoder.record().write_to(folder)?;
    let seconds = started.elapsed().as_secs_f64();
    let fresh = files.len() - resumed_at.unwrap_or(0);
    tracing::info!(
        "encoded {} pictures into {} (1280 features each) in {seconds:.1} s ({:.1} pictures/s{}); recorded in {}",
        result.encoded.len(),
        out.display(),
        fresh as f64 / seconds.max(1e-9),
        match resumed_at {
            Some(n) if n > 0 => format!(", resumed after {n}"),
            _ => String::new(),
        },
        folder.join(tandem::image::IMAGE_ENCODER_FILE).display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_climb_out_of_the_dataset_folder() {
        assert_eq!(
            relative(Path::new("/a/b/data"), Path::new("/a/b/data/x.png")),
            PathBuf::from("x.png")
        );
        assert_eq!(
            relative(Path::new("/a/b/data"), Path::new("/a/pics/x.png")),
            PathBuf::from("../../pics/x.png")
        );
    }
}
