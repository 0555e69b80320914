//! The index a server answers from, with everything tied to it (its model, encoders, search
//! mode and exact-search worker), swapped as a whole by a reload.
//!
//! Each request takes the current [`Served`] once, at its start, and answers from it to the
//! end: a reload in the middle never mixes two indexes in one answer, and the old index is
//! freed when its last request is done.

use std::path::PathBuf;

use anyhow::Result;
use tandem::index::Index;

use super::backend::Backend;
use super::query::{Embedder, QueryText};
use crate::cli::SearchModeArgs;

/// One opened index and what answers from it.
pub struct Served {
    /// The galleries.
    pub backend: Backend,
    pub embedder: Embedder,
    /// Encodes word queries, when the index records its text encoder.
    pub text: Option<QueryText>,
    /// Encodes picture queries, when the index records its image encoder.
    pub pictures: Option<tandem::image::ImageEncoder>,
    /// 1 for the index the server started with, then one more per successful reload.
    pub generation: u64,
}

impl Served {
    /// `backend` answered with `model`'s branches and the encoders.
    pub fn new(
        backend: Backend,
        model: tandem::model::TwoBranch,
        text: Option<QueryText>,
        pictures: Option<tandem::image::ImageEncoder>,
    ) -> Self {
        Served {
            backend,
            embedder: Embedder(std::sync::Mutex::new(model)),
            text,
            pictures,
            generation: 1,
        }
    }
}

/// Where the served index comes from, so that a reload opens it the same way.
#[derive(Debug, Clone)]
pub struct Source {
    /// The index folder; with `postgres`, the pushed one (its model and encoders), `None`:
    /// the folder the push recorded.
    pub folder: Option<PathBuf>,
    /// A gallery in PostgreSQL.
    pub postgres: Option<crate::cli::PostgresArgs>,
    /// Connections to the database (searches at once).
    pub connections: usize,
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
        let folder = folder.or(self.folder.as_deref());
        let (backend, folder, model) = match (&self.postgres, folder) {
            (Some(database), folder) => {
                let pushed = crate::commands::search::open_gallery(
                    database,
                    self.connections,
                    self.mode,
                    folder,
                )?;
                (
                    Backend::Postgres {
                        gallery: Box::new(pushed.gallery),
                        exact: pushed.exact,
                    },
                    pushed.folder,
                    pushed.model,
                )
            }
            (None, Some(folder)) => {
                let index = Index::open(folder)?;
                let mode = crate::commands::search::mode_for(&index, self.mode)?;
                let model = index.model.clone();
                (
                    Backend::embedded(index, mode, self.batch),
                    folder.to_path_buf(),
                    model,
                )
            }
            (None, None) => anyhow::bail!("no index folder to serve"),
        };
        let text = crate::commands::search::open_text_encoder(&folder, self.encoder.as_deref())?;
        let pictures = match tandem::image::ImageEncoderRecord::read_from(&folder)? {
            Some(_) => Some(crate::commands::search::open_image_encoder(
                &folder,
                self.image_encoder.as_deref(),
            )?),
            None => None,
        };
        Ok(Served::new(backend, model, text, pictures))
    }

    /// What this source serves, for logs.
    pub fn describe(&self) -> String {
        match (&self.postgres, &self.folder) {
            (Some(database), _) => format!(
                "gallery `{}` of {}",
                database.table,
                crate::postgres::redact(&database.postgres)
            ),
            (None, Some(folder)) => folder.display().to_string(),
            (None, None) => "nothing".to_string(),
        }
    }
}
