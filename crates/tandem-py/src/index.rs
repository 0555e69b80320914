//! `tandem.Index`: a model's space over a dataset, searched exactly or through HNSW graphs.

use std::path::PathBuf;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use tandem::index::{Direction, HnswParams, SearchMode};

use crate::arrays::{self, Floats, Ints};
use crate::dataset::Dataset;
use crate::errors::IntoPy;
use crate::model::Model;
use crate::text::SentenceEncoder;

/// Every image and caption of a dataset embedded by a model, searchable both ways:
/// `Index.build(model, dataset)`, `index.save(folder)`, `Index.open(folder)` (what
/// `tandem index build` writes), `index.search(text_ids=[3], k=10)` → `(ids, scores)`.
#[pyclass(module = "tandem", name = "Index")]
pub struct Index {
    inner: tandem::index::Index,
    /// The checkpoint the embeddings came from (saved with the index).
    checkpoint: Option<PathBuf>,
}

#[pymethods]
impl Index {
    /// Embeds `dataset` with `model`; `hnsw=True` also builds HNSW graphs for approximate
    /// search of large galleries.
    #[staticmethod]
    #[pyo3(signature = (model, dataset, hnsw=false))]
    fn build(py: Python<'_>, model: &Model, dataset: &Dataset, hnsw: bool) -> PyResult<Self> {
        let data = &dataset.inner;
        let checkpoint = &model.checkpoint;
        let inner = py
            .detach(|| -> tandem::Result<_> {
                let mut index = tandem::index::Index::build(checkpoint, data)?;
                if hnsw {
                    index.build_approximate(HnswParams::default(), |_, _| {})?;
                }
                Ok(index)
            })
            .py_err()?;
        Ok(Index {
            inner,
            checkpoint: Some(model.path.clone()),
        })
    }

    /// Opens an index folder written by `save` or `tandem index build`.
    #[staticmethod]
    fn open(py: Python<'_>, folder: PathBuf) -> PyResult<Self> {
        let inner = py.detach(|| tandem::index::Index::open(&folder)).py_err()?;
        Ok(Index {
            inner,
            checkpoint: None,
        })
    }

    /// Writes the index folder (embeddings, ids, captions and the model), each file atomically.
    fn save(&self, py: Python<'_>, folder: PathBuf) -> PyResult<()> {
        let Some(checkpoint) = &self.checkpoint else {
            return Err(PyValueError::new_err(
                "this index was opened from a folder, which already holds it; copy the folder instead",
            ));
        };
        py.detach(|| self.inner.save(&folder, checkpoint)).py_err()
    }

    /// The `k` best matches of each query, best first: images for caption queries (`text_ids`,
    /// `text_features`, or `texts` with the `encoder` the text features came from), captions
    /// for image queries (`image_ids`, `image_features`). Returns `(ids, scores)`, int64 and
    /// float32 arrays of `[n_queries, k]` (`k` at most the gallery's size). `exact=True` scores
    /// every row even when the index has HNSW graphs; `ef` widens their candidate list.
    #[pyo3(signature = (*, text_ids=None, image_ids=None, text_features=None, image_features=None, texts=None, encoder=None, k=10, exact=false, ef=None))]
    #[allow(clippy::too_many_arguments)]
    fn search<'py>(
        &mut self,
        py: Python<'py>,
        text_ids: Option<Ints<'py>>,
        image_ids: Option<Ints<'py>>,
        text_features: Option<Floats<'py>>,
        image_features: Option<Floats<'py>>,
        texts: Option<Vec<String>>,
        encoder: Option<PyRef<'py, SentenceEncoder>>,
        k: usize,
        exact: bool,
        ef: Option<usize>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        if k == 0 {
            return Err(PyValueError::new_err("k must be at least 1"));
        }
        let given = [
            text_ids.is_some(),
            image_ids.is_some(),
            text_features.is_some(),
            image_features.is_some(),
            texts.is_some(),
        ];
        if given.iter().filter(|&&g| g).count() != 1 {
            return Err(PyValueError::new_err(
                "give exactly one of text_ids, image_ids, text_features, image_features, texts",
            ));
        }
        let (direction, queries) = if let Some(ids) = &text_ids {
            (
                Direction::TextToImage,
                self.stored(Direction::TextToImage, ids)?,
            )
        } else if let Some(ids) = &image_ids {
            (
                Direction::ImageToText,
                self.stored(Direction::ImageToText, ids)?,
            )
        } else if let Some(f) = &text_features {
            (Direction::TextToImage, self.embedded(py, f, false)?)
        } else if let Some(f) = &image_features {
            (Direction::ImageToText, self.embedded(py, f, true)?)
        } else {
            let encoder = encoder.ok_or_else(|| {
                PyValueError::new_err(
                    "texts= needs encoder=SentenceEncoder(folder), the encoder the dataset's text features came from",
                )
            })?;
            let features = encoder.encode(py, texts.unwrap_or_default(), 64)?;
            let features: Floats<'py> = features.extract()?;
            (Direction::TextToImage, self.embedded(py, &features, false)?)
        };
        let mode = match (exact, ef) {
            (true, _) => SearchMode::Exact,
            (false, Some(ef)) if self.inner.approximate.is_some() => {
                SearchMode::Approximate { ef: ef.max(k) }
            }
            (false, _) => self.inner.default_mode(),
        };
        let gallery = match direction {
            Direction::TextToImage => self.inner.n_images(),
            Direction::ImageToText => self.inner.n_texts(),
        };
        let k = k.min(gallery);
        let index = &self.inner;
        let lists = py
            .detach(|| index.search(&queries, direction, k, mode))
            .py_err()?;
        let n = lists.len();
        let mut ids = vec![-1i64; n * k];
        let mut scores = vec![f32::NAN; n * k];
        for (q, hits) in lists.iter().enumerate() {
            for (j, hit) in hits.iter().take(k).enumerate() {
                ids[q * k + j] = i64::from(hit.id);
                scores[q * k + j] = hit.score;
            }
        }
        Ok((
            arrays::matrix(py, ids, n, k)?,
            arrays::matrix(py, scores, n, k)?,
        ))
    }

    /// Number of images in the gallery.
    #[getter]
    fn n_images(&self) -> usize {
        self.inner.n_images()
    }

    /// Number of captions in the gallery.
    #[getter]
    fn n_texts(&self) -> usize {
        self.inner.n_texts()
    }

    /// Width of the embeddings.
    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim
    }

    /// The caption text of every caption row, when the dataset had it.
    #[getter]
    fn captions(&self) -> Option<Vec<String>> {
        self.inner.captions.clone()
    }

    fn __repr__(&self) -> String {
        format!(
            "Index({} images, {} captions, dim {}{})",
            self.inner.n_images(),
            self.inner.n_texts(),
            self.inner.dim,
            if self.inner.approximate.is_some() {
                ", HNSW"
            } else {
                ""
            }
        )
    }
}

impl Index {
    /// The stored embeddings of rows `ids`, as queries.
    fn stored(&self, direction: Direction, ids: &Ints<'_>) -> PyResult<Vec<f32>> {
        let mut queries = Vec::new();
        for &id in ids.as_array().iter() {
            let id = usize::try_from(id)
                .map_err(|_| PyValueError::new_err(format!("id {id} is negative")))?;
            queries.extend(self.inner.embedding_of(direction, id).py_err()?);
        }
        Ok(queries)
    }

    /// Raw features embedded by the index's model.
    fn embedded(
        &mut self,
        py: Python<'_>,
        features: &Floats<'_>,
        image_side: bool,
    ) -> PyResult<Vec<f32>> {
        let (values, _, cols) = arrays::rows(
            features,
            if image_side {
                "image_features"
            } else {
                "text_features"
            },
        )?;
        let model = &mut self.inner.model;
        let values: &[f32] = &values;
        py.detach(|| model.embed_rows(values, cols, image_side, 1024))
            .py_err()
    }
}
