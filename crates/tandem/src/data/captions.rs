//! `captions.jsonl`: one `{"image": i, "text": "..."}` per caption, in the order of `texts.npy`.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::fsio;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaptionLine {
    image: i64,
    text: String,
}

/// Reads the caption texts and checks each line's `image` against `text_to_image`.
///
/// # Errors
/// [`Error::BadFile`] naming the file and line for invalid JSON, invalid UTF-8, a wrong number of
/// lines, or an `image` that disagrees with `text_to_image.npy`.
pub fn read_captions(path: &Path, text_to_image: &[u32]) -> Result<Vec<String>> {
    parse_captions(path, fsio::read(path)?, text_to_image)
}

/// [`read_captions`] on the bytes of a file; `path` only names it in errors.
///
/// # Errors
/// As [`read_captions`].
pub fn parse_captions(path: &Path, bytes: Vec<u8>, text_to_image: &[u32]) -> Result<Vec<String>> {
    let lines = parse_lines(path, bytes)?;
    for (i, (n, image)) in lines.iter().map(|l| (l.0, l.1)).enumerate() {
        if let Some(&expected) = text_to_image.get(i)
            && image != i64::from(expected)
        {
            return Err(Error::bad_file(
                path,
                format!(
                    "line {n}: caption {i} says image {image} but text_to_image says {expected}"
                ),
                "write captions.jsonl in the same order as texts.npy and text_to_image.npy",
            ));
        }
    }
    if lines.len() != text_to_image.len() {
        return Err(Error::bad_file(
            path,
            format!(
                "{} captions but texts.npy has {} rows",
                lines.len(),
                text_to_image.len()
            ),
            "write one line per row of texts.npy, in the same order",
        ));
    }
    Ok(lines.into_iter().map(|l| l.2).collect())
}

/// The caption texts of a `captions.jsonl`, in order, without a dataset to check them
/// against (what `tandem encode-text` reads).
///
/// # Errors
/// [`Error::BadFile`] naming the file and line for invalid JSON or invalid UTF-8, or when the
/// file holds no caption.
pub fn read_caption_texts(path: &Path) -> Result<Vec<String>> {
    let lines = parse_lines(path, fsio::read(path)?)?;
    if lines.is_empty() {
        return Err(Error::bad_file(
            path,
            "no captions",
            r#"write one JSON object {"image": <index>, "text": "<caption>"} per line"#,
        ));
    }
    Ok(lines.into_iter().map(|l| l.2).collect())
}

/// (1-based line number, image, text) of every non-blank line.
fn parse_lines(path: &Path, bytes: Vec<u8>) -> Result<Vec<(usize, i64, String)>> {
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::bad_file(
            path,
            format!("invalid UTF-8 at byte {}", e.utf8_error().valid_up_to()),
            "save the file as UTF-8",
        )
    })?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed: CaptionLine = serde_json::from_str(line).map_err(|e| {
            Error::bad_file(
                path,
                format!("line {}: {e}", n + 1),
                r#"each line must be a JSON object {"image": <index>, "text": "<caption>"}"#,
            )
        })?;
        out.push((n + 1, parsed.image, parsed.text));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(content: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("captions.jsonl");
        std::fs::write(&p, content).unwrap();
        (dir, p)
    }

    #[test]
    fn reads_lines_in_order() {
        let (_d, p) = write("{\"image\": 0, \"text\": \"a\"}\n{\"image\": 1, \"text\": \"b\"}\n");
        assert_eq!(read_captions(&p, &[0, 1]).unwrap(), vec!["a", "b"]);
    }

    #[test]
    fn bad_json_names_the_line() {
        let (_d, p) = write("{\"image\": 0, \"text\": \"a\"}\n{\"image\": 1, \"text\": \n");
        let e = read_captions(&p, &[0, 1]).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn disagreeing_image_is_an_error() {
        let (_d, p) = write("{\"image\": 1, \"text\": \"a\"}\n");
        let e = read_captions(&p, &[0]).unwrap_err().to_string();
        assert!(e.contains("says image 1"), "{e}");
    }
}
