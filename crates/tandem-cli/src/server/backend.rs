//! Where a server's galleries live: its own index in memory, or a gallery pushed to
//! PostgreSQL. Everything a request needs of them goes through here.

use std::path::PathBuf;
use std::sync::Arc;

use tandem::index::{Direction, Hit, Index, SearchMode};

use super::batcher::ExactBatcher;
use crate::postgres::PgGallery;

/// The galleries one [`super::Served`] answers from.
pub enum Backend {
    /// An index folder, opened: HNSW or exact search in this process.
    Embedded {
        index: Arc<Index>,
        /// How requests search unless they ask for `"exact": true`.
        mode: SearchMode,
        /// Exact searches, batched across concurrent requests.
        exact: ExactBatcher,
    },
    /// A pushed gallery, searched by the database.
    Postgres {
        gallery: Box<PgGallery>,
        /// Every search exact (`--exact`, or a gallery pushed without HNSW indexes).
        exact: bool,
    },
}

impl Backend {
    /// `index` searched with `mode`, exact searches batched up to `max_batch`.
    pub fn embedded(index: Index, mode: SearchMode, max_batch: usize) -> Self {
        let index = Arc::new(index);
        Backend::Embedded {
            exact: ExactBatcher::start(index.clone(), max_batch),
            index,
            mode,
        }
    }

    /// Images and captions in the galleries.
    pub fn counts(&self) -> (usize, usize) {
        match self {
            Backend::Embedded { index, .. } => (index.n_images(), index.n_texts()),
            Backend::Postgres { gallery, .. } => (gallery.record.images, gallery.record.captions),
        }
    }

    /// Embedding width.
    pub fn dim(&self) -> usize {
        match self {
            Backend::Embedded { index, .. } => index.dim,
            Backend::Postgres { gallery, .. } => gallery.record.dim,
        }
    }

    /// How searches run, for /health.
    pub fn describe(&self) -> String {
        match self {
            Backend::Embedded { mode, .. } => match mode {
                SearchMode::Exact => "exact".to_string(),
                SearchMode::Approximate { ef } => format!("hnsw (ef {ef})"),
            },
            Backend::Postgres { gallery, exact } => {
                let how = if *exact {
                    "exact".to_string()
                } else {
                    format!("hnsw (ef_search {})", gallery.ef_search)
                };
                format!("postgres {}: {how}", gallery.shown())
            }
        }
    }

    /// Whether images have files to show.
    pub fn has_image_files(&self) -> bool {
        match self {
            Backend::Embedded { index, .. } => index.image_files.is_some(),
            Backend::Postgres { gallery, .. } => gallery.record.has_image_files,
        }
    }

    /// Image `id`'s file: `Ok(None)` for an id out of range or without a file.
    ///
    /// # Errors
    /// A database error.
    pub fn image_file(&self, id: usize) -> anyhow::Result<Option<PathBuf>> {
        match self {
            Backend::Embedded { index, .. } => Ok(index
                .image_files
                .as_ref()
                .and_then(|files| files.get(id).cloned())),
            Backend::Postgres { gallery, .. } => gallery.image_file(id),
        }
    }

    /// The stored embedding of caption `id` (text→image) or image `id` (image→text); the
    /// caller has checked `id` against [`Backend::counts`].
    ///
    /// # Errors
    /// A database error.
    pub fn embedding_of(&self, direction: Direction, id: usize) -> anyhow::Result<Vec<f32>> {
        match self {
            Backend::Embedded { index, .. } => Ok(index.embedding_of(direction, id)?),
            Backend::Postgres { gallery, .. } => gallery.embedding_of(direction, id),
        }
    }

    /// The `k` best of the gallery `direction` searches, exactly when `exact`.
    ///
    /// # Errors
    /// The index's or the database's error.
    pub fn search(
        &self,
        query: Vec<f32>,
        direction: Direction,
        k: usize,
        exact: bool,
    ) -> anyhow::Result<Vec<Hit>> {
        match self {
            Backend::Embedded {
                index,
                mode,
                exact: batcher,
            } => {
                let mode = if exact { SearchMode::Exact } else { *mode };
                Ok(match mode {
                    SearchMode::Exact => batcher.search(query, direction, k)?,
                    SearchMode::Approximate { .. } => index
                        .search(&query, direction, k, mode)?
                        .pop()
                        .unwrap_or_default(),
                })
            }
            Backend::Postgres {
                gallery,
                exact: always,
            } => gallery.search(&query, direction, k, exact || *always, &[]),
        }
    }
}
