//! `tandem.load`, `Model.embed_images` / `embed_texts`, `tandem.evaluate`.

use std::path::PathBuf;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use tandem::eval::Protocol;
use tandem::model::Checkpoint;
use tandem::train::{RunFiles, evaluate_protocol, resolve_splits};

use crate::arrays::{self, Floats};
use crate::dataset::Dataset;
use crate::errors::IntoPy;

/// A trained two-branch model: `model.embed_images(x)`, `model.embed_texts(x)`.
#[pyclass(module = "tandem", name = "Model")]
pub struct Model {
    pub checkpoint: Checkpoint,
    /// The checkpoint file.
    pub path: PathBuf,
    /// The run folder it belongs to, when it is one's `best` or `last` checkpoint.
    pub run_dir: Option<PathBuf>,
}

/// Loads a model: a run folder (its best.safetensors) or a checkpoint file.
#[pyfunction]
pub fn load(py: Python<'_>, path: PathBuf) -> PyResult<Model> {
    let opened = py
        .detach(|| RunFiles::open_model(&path, &tandem::default_device()?))
        .py_err()?;
    Ok(Model {
        checkpoint: opened.checkpoint,
        path: opened.file,
        run_dir: opened.run_dir,
    })
}

#[pymethods]
impl Model {
    /// Embeds image features `[n, image_dim]` (any float dtype) into the joint space:
    /// float32 `[n, dim]`, L2-normalised rows. Runs in batches of `batch_size` rows with the
    /// GIL released; a C-contiguous float32 input is read in place.
    #[pyo3(signature = (features, batch_size=1024))]
    fn embed_images<'py>(
        &mut self,
        py: Python<'py>,
        features: Floats<'py>,
        batch_size: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.embed(py, &features, true, batch_size)
    }

    /// Embeds text features `[n, text_dim]` into the joint space; as
    /// [`Model::embed_images`].
    #[pyo3(signature = (features, batch_size=1024))]
    fn embed_texts<'py>(
        &mut self,
        py: Python<'py>,
        features: Floats<'py>,
        batch_size: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.embed(py, &features, false, batch_size)
    }

    /// Width of the joint space.
    #[getter]
    fn dim(&self) -> usize {
        self.checkpoint.model.config.dim
    }

    /// Width of the image features the model takes.
    #[getter]
    fn image_dim(&self) -> usize {
        self.checkpoint.model.d_image
    }

    /// Width of the text features the model takes.
    #[getter]
    fn text_dim(&self) -> usize {
        self.checkpoint.model.d_text
    }

    /// The epoch the checkpoint was saved after.
    #[getter]
    fn epoch(&self) -> usize {
        self.checkpoint.epoch
    }

    /// The whole config the model was trained with, as TOML.
    #[getter]
    fn config(&self) -> String {
        self.checkpoint.config.to_toml()
    }

    /// The checkpoint file.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    fn __repr__(&self) -> String {
        format!(
            "Model({} → {}, {} → {}; {}, epoch {})",
            self.checkpoint.model.d_image,
            self.dim(),
            self.checkpoint.model.d_text,
            self.dim(),
            self.path.display(),
            self.checkpoint.epoch
        )
    }
}

impl Model {
    fn embed<'py>(
        &mut self,
        py: Python<'py>,
        features: &Floats<'py>,
        image_side: bool,
        batch_size: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        let name = if image_side { "images" } else { "texts" };
        let (values, rows, cols) = arrays::rows(features, name)?;
        let model = &mut self.checkpoint.model;
        let values: &[f32] = &values;
        let embedded = py
            .detach(|| model.embed_rows(values, cols, image_side, batch_size))
            .py_err()?;
        let dim = self.checkpoint.model.config.dim;
        arrays::matrix(py, embedded, rows, dim)
    }
}

/// Retrieval metrics of `model` on one split of `dataset` under a protocol (`full`,
/// `flickr-1k`, `coco-1k`, `coco-5k`), as the dict `tandem eval --format json` prints. The split
/// is the run's own (its splits.json), else the dataset's, else the config's seeded one.
#[pyfunction]
#[pyo3(signature = (model, dataset, split="test", protocol="full", ks=Vec::new()))]
pub fn evaluate<'py>(
    py: Python<'py>,
    model: &mut Model,
    dataset: &Dataset,
    split: &str,
    protocol: &str,
    ks: Vec<usize>,
) -> PyResult<Bound<'py, PyAny>> {
    let protocol = Protocol::parse(protocol).py_err()?;
    if ks.contains(&0) {
        return Err(PyValueError::new_err("ks: K must be at least 1"));
    }
    let data = &dataset.inner;
    let config = &model.checkpoint.config;
    let splits = resolve_splits(data, config, model.run_dir.as_deref()).py_err()?;
    let ids = splits.get(split).py_err()?.to_vec();
    if ids.is_empty() {
        return Err(PyValueError::new_err(format!(
            "split `{split}` is empty in this dataset; choose train, val or test"
        )));
    }
    let chunk = config.train.eval_batch_size;
    let twobranch = &mut model.checkpoint.model;
    let metrics = py
        .detach(|| evaluate_protocol(twobranch, data, &ids, split, protocol, &ks, chunk))
        .py_err()?;
    arrays::to_python(py, &metrics)
}
