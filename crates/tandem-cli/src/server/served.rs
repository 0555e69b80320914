//! The index a server answers from, with everything tied to it (its model, encoders, search
//! mode and exact-search worker), swapped as a whole by a reload.
//!
//! Each request takes the current [`Served`] once, at its start, and answers from it to the
//! end: a reload in the middle never mixes two indexes in one answer, and the old index is
//! freed when its last request is done.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use tandem::index::{Index, SearchMode};

use super::batcher::ExactBatcher;
use super::query::{Embedder, QueryText};
use crate::cli::SearchModeArgs;

/// One opened index and what answers from it.
pub struct Served {
    pub index: Arc<Index>,
    /// How requests search unless they ask for `"exact": true`.
    pub mode: SearchMode,
    /// Exact searches, batched across concurrent requests.
    pub exact: ExactBatcher,
    pub embedder: Embedder,
    /// Encodes word queries, when the index records its text encoder.
    pub text: Option<QueryText>,
    /// Encodes picture queries, when the index records its image encoder.
    pub pictures: Option<tandem::image::ImageEncoder>,
    /// 1 for the index the server started with, then one more per successful reload.
    pub generation: u64,
}

impl Served {
    /// `index` served with `mode`, exact searches batched up to `max_batch`.
    pub fn new(
        index: Index,
        text: Option<QueryText>,
        pictures: Option<tandem::image::ImageEncoder>,
        mode: SearchMode,
        max_batch: usize,
    ) -> Self {
        let embedder = Embedder(std::sync::Mutex::new(index.model.clone()));
        let index = Arc::new(index);
        Served {
            exact: ExactBatcher::start(index.clone(), max_batch),
            index,
            mode,
            embedder,
            text,
            pictures,
            generation: 1,
        }
    }
}

/// Where the served index comes from, so that a reload opens it the same way.
#[derive(Debug, Clone)]
pub struct Source {
    pub folder: PathBuf,
    /// The sentence encoder's folder when it moved (`--encoder`).
    pub encoder: Option<PathBuf>,
    /// The image encoder's weights when they moved (`--image-encoder`).
    pub image_encoder: Option<PathBuf>,
    pub mode: SearchModeArgs,
    pub batch: usize,
}

impl Source {
    /// Opens the index of `folder` (this source's own when `None`) with its encoders, checked
    /// as at start.
    ///
    /// # Errors
    /// Whatever makes the folder unservable: a missing or corrupt file, an encoder that does
    /// not match the recorded one, an `--ef` the index cannot take.
    pub fn open(&self, folder: Option<&std::path::Path>) -> Result<Served> {
        let folder = folder.unwrap_or(&self.folder);
        let text = crate::commands::search::open_text_encoder(folder, self.encoder.as_deref())?;
        let pictures = match tandem::image::ImageEncoderRecord::read_from(folder)? {
            Some(_) => Some(crate::commands::search::open_image_encoder(
                folder,
                self.image_encoder.as_deref(),
            )?),
            None => None,
        };
        let index = Index::open(folder)?;
        let mode = crate::commands::search::mode_for(&index, self.mode)?;
        Ok(Served::new(index, text, pictures, mode, self.batch))
    }
}
