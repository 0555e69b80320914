//! Captions of a folder of pictures in the formats people have them in, read into one shape:
//! the pictures (files, in order of first mention), each caption's picture and text, and the
//! split when the source has one.
//!
//! - `captions.jsonl`: one `{"file": "a.jpg", "text": "..."}` per line (`caption` for `text`,
//!   `image` for `file` are accepted too).
//! - CSV with a header naming a `file` (or `image`) and a `caption` (or `text`) column.
//! - The Karpathy split JSON of Flickr30K / COCO (`dataset_flickr30k.json`,
//!   `dataset_coco.json`): `images[].filename` (with `filepath` when present), `sentences[].raw`
//!   and `split` (`restval` is training, as VSE++ uses it).
//! - COCO's `captions_*.json`: `images[].{id, file_name}` and `annotations[].{image_id, caption}`.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use super::Splits;
use crate::error::{Error, Result};
use crate::fsio;

/// Captions of pictures, as read from any supported source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptionSource {
    /// Picture files, relative to the pictures folder, each once.
    pub files: Vec<String>,
    /// `(index into files, text)` of every caption, in the source's order.
    pub captions: Vec<(u32, String)>,
    /// The source's own split by picture, when it has one (Karpathy JSON).
    pub splits: Option<Splits>,
}

/// Collects captions and assigns picture ids in order of first mention.
#[derive(Default)]
struct Collector {
    ids: HashMap<String, u32>,
    files: Vec<String>,
    captions: Vec<(u32, String)>,
}

impl Collector {
    fn id(&mut self, file: &str) -> u32 {
        if let Some(&id) = self.ids.get(file) {
            return id;
        }
        let id = self.files.len() as u32;
        self.ids.insert(file.to_string(), id);
        self.files.push(file.to_string());
        id
    }

    fn add(&mut self, file: &str, text: &str) {
        let id = self.id(file);
        self.captions.push((id, text.trim().to_string()));
    }

    fn finish(self, path: &Path, splits: Option<Splits>) -> Result<CaptionSource> {
        if self.captions.is_empty() {
            return Err(Error::bad_file(
                path,
                "holds no captions",
                "see `tandem prepare --help` for the formats read",
            ));
        }
        if let Some(n) = self.captions.iter().position(|(_, t)| t.is_empty()) {
            return Err(Error::bad_file(
                path,
                format!(
                    "caption {} (of {}) is empty",
                    n + 1,
                    self.files[self.captions[n].0 as usize]
                ),
                "remove empty captions or give them text",
            ));
        }
        Ok(CaptionSource {
            files: self.files,
            captions: self.captions,
            splits,
        })
    }
}

/// Reads the captions at `path`, the format told by its name and content.
///
/// # Errors
/// [`Error::BadFile`] naming the file (and line or entry) for anything unreadable.
pub fn read_caption_source(path: &Path) -> Result<CaptionSource> {
    let bytes = fsio::read(path)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if name.ends_with(".jsonl") {
        jsonl(path, &bytes)
    } else if name.ends_with(".csv") {
        csv_source(path, &bytes)
    } else if name.ends_with(".json") {
        json_source(path, &bytes)
    } else {
        Err(Error::bad_file(
            path,
            "not a caption format tandem reads (by its extension)",
            "give captions.jsonl, a .csv with file,caption columns, a Karpathy split .json or COCO captions_*.json",
        ))
    }
}

fn jsonl(path: &Path, bytes: &[u8]) -> Result<CaptionSource> {
    #[derive(Deserialize)]
    struct Line {
        #[serde(alias = "image")]
        file: String,
        #[serde(alias = "caption")]
        text: String,
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| Error::bad_file(path, format!("not UTF-8: {e}"), "save it as UTF-8"))?;
    let mut c = Collector::default();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let l: Line = serde_json::from_str(line).map_err(|e| {
            Error::bad_file(
                path,
                format!("line {}: {e}", n + 1),
                r#"write one {"file": "a.jpg", "text": "..."} per line"#,
            )
        })?;
        c.add(&l.file, &l.text);
    }
    c.finish(path, None)
}

fn csv_source(path: &Path, bytes: &[u8]) -> Result<CaptionSource> {
    let fix =
        "give a header row with a `file` (or `image`) column and a `caption` (or `text`) column";
    let mut reader = csv::Reader::from_reader(bytes);
    let headers = reader
        .headers()
        .map_err(|e| Error::bad_file(path, format!("unreadable header: {e}"), fix))?
        .clone();
    let column = |names: &[&str]| {
        headers
            .iter()
            .position(|h| names.contains(&h.trim().to_ascii_lowercase().as_str()))
    };
    let (Some(file), Some(text)) = (
        column(&["file", "image", "filename"]),
        column(&["caption", "text", "sentence"]),
    ) else {
        return Err(Error::bad_file(
            path,
            format!(
                "the header {:?} names no file and caption columns",
                headers.iter().collect::<Vec<_>>()
            ),
            fix,
        ));
    };
    let mut c = Collector::default();
    for (n, record) in reader.records().enumerate() {
        let record =
            record.map_err(|e| Error::bad_file(path, format!("row {}: {e}", n + 2), fix))?;
        let (Some(f), Some(t)) = (record.get(file), record.get(text)) else {
            return Err(Error::bad_file(
                path,
                format!("row {} has too few columns", n + 2),
                fix,
            ));
        };
        c.add(f.trim(), t);
    }
    c.finish(path, None)
}

#[derive(Deserialize)]
struct KarpathyImage {
    filename: String,
    #[serde(default)]
    filepath: Option<String>,
    split: String,
    sentences: Vec<KarpathySentence>,
}

#[derive(Deserialize)]
struct KarpathySentence {
    raw: String,
}

#[derive(Deserialize)]
struct CocoImage {
    id: i64,
    file_name: String,
}

#[derive(Deserialize)]
struct CocoCaption {
    image_id: i64,
    caption: String,
}

fn json_source(path: &Path, bytes: &[u8]) -> Result<CaptionSource> {
    let fix = "give a Karpathy split file (images[].filename, sentences[].raw, split) or COCO captions_*.json (images, annotations)";
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::bad_file(path, format!("not JSON: {e}"), fix))?;
    let bad = |e: serde_json::Error| Error::bad_file(path, e.to_string(), fix);
    if let Some(annotations) = value.get("annotations") {
        let images: Vec<CocoImage> =
            serde_json::from_value(value.get("images").cloned().unwrap_or_default())
                .map_err(bad)?;
        let annotations: Vec<CocoCaption> =
            serde_json::from_value(annotations.clone()).map_err(bad)?;
        let names: HashMap<i64, &str> = images
            .iter()
            .map(|i| (i.id, i.file_name.as_str()))
            .collect();
        let mut c = Collector::default();
        for (n, a) in annotations.iter().enumerate() {
            let Some(file) = names.get(&a.image_id) else {
                return Err(Error::bad_file(
                    path,
                    format!(
                        "annotation {n} names image_id {}, which `images` lacks",
                        a.image_id
                    ),
                    fix,
                ));
            };
            c.add(file, &a.caption);
        }
        return c.finish(path, None);
    }
    let images: Vec<KarpathyImage> =
        serde_json::from_value(value.get("images").cloned().unwrap_or_default()).map_err(bad)?;
    let mut c = Collector::default();
    let mut splits = Splits {
        train: Vec::new(),
        val: Vec::new(),
        test: Vec::new(),
    };
    for (n, image) in images.iter().enumerate() {
        let file = match &image.filepath {
            Some(dir) if !dir.is_empty() => format!("{dir}/{}", image.filename),
            _ => image.filename.clone(),
        };
        for s in &image.sentences {
            c.add(&file, &s.raw);
        }
        let id = c.id(&file);
        match image.split.as_str() {
            "train" | "restval" => splits.train.push(id),
            "val" => splits.val.push(id),
            "test" => splits.test.push(id),
            other => {
                return Err(Error::bad_file(
                    path,
                    format!("image {n} ({file}) has split `{other}`"),
                    "use train, restval, val or test",
                ));
            }
        }
    }
    c.finish(path, Some(splits))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(name: &str, content: &str) -> Result<CaptionSource> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        read_caption_source(&p)
    }

    #[test]
    fn every_format_gives_the_same_shape() {
        let want = |splits| CaptionSource {
            files: vec!["a.jpg".into(), "b.png".into()],
            captions: vec![
                (0, "a cat".into()),
                (1, "a dog, running".into()),
                (0, "the cat".into()),
            ],
            splits,
        };
        let jsonl = "{\"file\": \"a.jpg\", \"text\": \"a cat\"}\n{\"image\": \"b.png\", \"caption\": \"a dog, running\"}\n\n{\"file\": \"a.jpg\", \"text\": \"the cat\"}\n";
        assert_eq!(read("c.jsonl", jsonl).unwrap(), want(None));
        let csv = "file,caption\na.jpg,a cat\nb.png,\"a dog, running\"\na.jpg,the cat\n";
        assert_eq!(read("c.csv", csv).unwrap(), want(None));
        let coco = r#"{"images": [{"id": 7, "file_name": "a.jpg"}, {"id": 9, "file_name": "b.png"}],
            "annotations": [{"image_id": 7, "caption": "a cat"}, {"image_id": 9, "caption": "a dog, running"}, {"image_id": 7, "caption": "the cat"}]}"#;
        assert_eq!(read("captions_val2014.json", coco).unwrap(), want(None));
        let karpathy = r#"{"dataset": "flickr30k", "images": [
            {"filename": "a.jpg", "split": "restval", "sentences": [{"raw": "a cat"}]},
            {"filename": "b.png", "split": "test", "sentences": [{"raw": "a dog, running"}]}]}"#;
        let k = read("dataset_flickr30k.json", karpathy).unwrap();
        assert_eq!(k.files, vec!["a.jpg", "b.png"]);
        assert_eq!(
            k.splits,
            Some(Splits {
                train: vec![0],
                val: vec![],
                test: vec![1]
            })
        );
    }

    #[test]
    fn karpathy_coco_files_carry_their_folder() {
        let k = r#"{"images": [{"filepath": "val2014", "filename": "x.jpg", "split": "val", "sentences": [{"raw": "r"}]}]}"#;
        assert_eq!(
            read("dataset_coco.json", k).unwrap().files,
            vec!["val2014/x.jpg"]
        );
    }

    #[test]
    fn bad_sources_name_the_file_and_place() {
        let e = read("c.jsonl", "{\"file\": \"a.jpg\"}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.jsonl") && e.contains("line 1"), "{e}");
        let e = read("c.csv", "path,words\na,b\n").unwrap_err().to_string();
        assert!(e.contains("no file and caption columns"), "{e}");
        let e = read("c.csv", "file,caption\na.jpg,  \n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty"), "{e}");
        let e = read("c.txt", "x").unwrap_err().to_string();
        assert!(e.contains("not a caption format"), "{e}");
        let e = read(
            "k.json",
            r#"{"images": [{"filename": "a", "split": "dev", "sentences": [{"raw": "r"}]}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("split `dev`"), "{e}");
        let e = read(
            "captions.json",
            r#"{"images": [], "annotations": [{"image_id": 1, "caption": "c"}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("image_id 1"), "{e}");
    }
}
