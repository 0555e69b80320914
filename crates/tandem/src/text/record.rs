//! Which encoder produced a dataset's text features: `text_encoder.json` beside `texts.npy`,
//! copied into every run trained on that dataset and every index built from that run.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::TfIdf;
use crate::error::{Error, Result};
use crate::fsio;

/// The record's file name in a dataset, run or index folder.
pub const TEXT_ENCODER_FILE: &str = "text_encoder.json";

/// What turned captions into the text features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TextEncoderRecord {
    /// A pretrained sentence encoder folder; `sha256` covers its config, tokenizer and
    /// weights, so a different model in the same place is caught.
    Sentence {
        /// The folder it was read from (where queries look for it by default).
        path: PathBuf,
        /// SHA-256 of `config.json`, `tokenizer.json` and the weights file, in that order.
        sha256: String,
        /// Output width.
        dim: usize,
        /// Word pieces kept per text (longer ones are truncated).
        max_seq_length: usize,
    },
    /// The TF-IDF featuriser with its fitted vocabulary.
    Tfidf(TfIdf),
}

impl TextEncoderRecord {
    /// Output width of the encoder.
    pub fn dim(&self) -> usize {
        match self {
            TextEncoderRecord::Sentence { dim, .. } => *dim,
            TextEncoderRecord::Tfidf(t) => t.dim(),
        }
    }

    /// A one-line description for messages.
    pub fn describe(&self) -> String {
        match self {
            TextEncoderRecord::Sentence { path, sha256, .. } => format!(
                "sentence encoder {} (sha256 {})",
                path.display(),
                &sha256[..12.min(sha256.len())]
            ),
            TextEncoderRecord::Tfidf(t) => format!("TF-IDF with {} terms", t.dim()),
        }
    }

    /// Do both records describe the same encoder (the folder may have moved)?
    pub fn same_encoder(&self, other: &TextEncoderRecord) -> bool {
        match (self, other) {
            (
                TextEncoderRecord::Sentence { sha256: a, .. },
                TextEncoderRecord::Sentence { sha256: b, .. },
            ) => a == b,
            (TextEncoderRecord::Tfidf(a), TextEncoderRecord::Tfidf(b)) => a == b,
            _ => false,
        }
    }

    /// Reads `folder/text_encoder.json`; `None` when the folder has none.
    ///
    /// # Errors
    /// [`Error::BadFile`] when the file exists but is not a record.
    pub fn read_from(folder: &Path) -> Result<Option<Self>> {
        fsio::read_json_record(
            &folder.join(TEXT_ENCODER_FILE),
            "a text encoder record",
            "write it again with `tandem encode-text`, or delete it",
        )
    }

    /// Writes `folder/text_encoder.json` atomically.
    ///
    /// # Errors
    /// [`Error::Io`] when the folder is not writable.
    pub fn write_to(&self, folder: &Path) -> Result<()> {
        fsio::write_json_record(&folder.join(TEXT_ENCODER_FILE), self)
    }

    /// Checks that the text features in `data` were made by the encoder a run or index in
    /// `trained` recorded. Passes when either folder has no record (nothing to compare).
    ///
    /// # Errors
    /// [`Error::BadDataset`] naming both encoders when they differ.
    pub fn check_same(trained: &Path, data: &Path) -> Result<()> {
        let (Some(a), Some(b)) = (Self::read_from(trained)?, Self::read_from(data)?) else {
            return Ok(());
        };
        if a.same_encoder(&b) {
            return Ok(());
        }
        Err(Error::bad_dataset(
            data,
            format!(
                "its text features come from {} but {} was trained on {}",
                b.describe(),
                trained.display(),
                a.describe()
            ),
            "encode the captions again with the run's encoder (`tandem encode-text`), or use a run trained on these features",
        ))
    }
}
