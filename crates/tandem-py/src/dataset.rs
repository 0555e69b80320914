//! `tandem.Dataset`: paired image and text features, from numpy arrays or a dataset folder.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tandem::data::{Matrix, PairedDataset, Residency, Splits};

use crate::arrays::{self, Floats, Ints};
use crate::errors::IntoPy;

/// Image features, caption features, the image of each caption, and optionally a split and the
/// caption text.
///
/// `Dataset(images, texts, text_to_image, splits=None, captions=None)`: `images` is
/// `[n_images, d_image]`, `texts` `[n_texts, d_text]` (any float dtype, C or Fortran order),
/// `text_to_image` `[n_texts]` integers in `0..n_images`; `splits` a dict of image ids
/// `{"train": [...], "val": [...], "test": [...]}`; `captions` one string per text row.
/// `Dataset.load(folder)` reads a dataset folder as `tandem train --data` does.
#[pyclass(module = "tandem", name = "Dataset", frozen)]
pub struct Dataset {
    pub inner: Arc<PairedDataset>,
}

#[pymethods]
impl Dataset {
    #[new]
    #[pyo3(signature = (images, texts, text_to_image, splits=None, captions=None))]
    fn new(
        images: Floats<'_>,
        texts: Floats<'_>,
        text_to_image: Ints<'_>,
        splits: Option<&Bound<'_, PyDict>>,
        captions: Option<Vec<String>>,
    ) -> PyResult<Self> {
        let matrix = |a: &Floats<'_>, name: &str| -> PyResult<Matrix> {
            let (values, rows, cols) = arrays::rows(a, name)?;
            Ok(Matrix {
                rows,
                cols,
                data: values.into_owned(),
            })
        };
        let images = matrix(&images, "images")?;
        let texts = matrix(&texts, "texts")?;
        let ids: Vec<i64> = text_to_image.as_array().iter().copied().collect();
        let splits = splits.map(read_splits).transpose()?;
        let dataset =
            PairedDataset::from_parts(Path::new("<arrays>"), images, texts, &ids, splits, captions)
                .py_err()?;
        Ok(Dataset {
            inner: Arc::new(dataset),
        })
    }

    /// Reads a dataset folder (images.npy, texts.npy, text_to_image.npy, or shards
    /// images-00000.npy, …, or dataset.safetensors; splits.json and captions.jsonl when
    /// present). `features`: "auto" (stream from disk when they would fill more than half of
    /// the free memory), "memory" or "stream".
    #[staticmethod]
    #[pyo3(signature = (folder, features = "auto"))]
    fn load(py: Python<'_>, folder: PathBuf, features: &str) -> PyResult<Self> {
        let residency = Residency::parse(features).py_err()?;
        let dataset = py
            .detach(|| PairedDataset::open_with(&folder, residency))
            .py_err()?;
        Ok(Dataset {
            inner: Arc::new(dataset),
        })
    }

    /// Number of images.
    #[getter]
    fn n_images(&self) -> usize {
        self.inner.images.rows()
    }

    /// Number of captions (text rows).
    #[getter]
    fn n_texts(&self) -> usize {
        self.inner.texts.rows()
    }

    /// Width of the image features.
    #[getter]
    fn image_dim(&self) -> usize {
        self.inner.images.cols()
    }

    /// Width of the text features.
    #[getter]
    fn text_dim(&self) -> usize {
        self.inner.texts.cols()
    }

    /// The image features as a float32 array (a copy).
    #[getter]
    fn images<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let m = py.detach(|| self.inner.images.to_matrix()).py_err()?;
        arrays::matrix(py, m.data.clone(), m.rows, m.cols)
    }

    /// The text features as a float32 array (a copy).
    #[getter]
    fn texts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let m = py.detach(|| self.inner.texts.to_matrix()).py_err()?;
        arrays::matrix(py, m.data.clone(), m.rows, m.cols)
    }

    /// The image of each caption, as int64.
    #[getter]
    fn text_to_image<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let ids: Vec<i64> = self
            .inner
            .text_to_image
            .iter()
            .map(|&i| i64::from(i))
            .collect();
        Ok(numpy::PyArray1::from_vec(py, ids).into_any())
    }

    /// The caption text, when the dataset has it.
    #[getter]
    fn captions(&self) -> Option<Vec<String>> {
        self.inner.captions.clone()
    }

    /// The dataset's own split (`splits.json` or the `splits` argument), when it has one.
    #[getter]
    fn splits<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.inner
            .splits
            .as_ref()
            .map(|s| arrays::to_python(py, s))
            .transpose()
    }

    fn __len__(&self) -> usize {
        self.inner.images.rows()
    }

    fn __repr__(&self) -> String {
        let d = &self.inner;
        format!(
            "Dataset({} images × {}, {} captions × {}{}{})",
            d.images.rows(),
            d.images.cols(),
            d.texts.rows(),
            d.texts.cols(),
            if d.splits.is_some() {
                ", with splits"
            } else {
                ""
            },
            if d.captions.is_some() {
                ", with captions"
            } else {
                ""
            },
        )
    }
}

fn read_splits(dict: &Bound<'_, PyDict>) -> PyResult<Splits> {
    let mut splits = Splits {
        train: Vec::new(),
        val: Vec::new(),
        test: Vec::new(),
    };
    for (key, value) in dict.iter() {
        let name: String = key.extract()?;
        let ids: Vec<u32> = value.extract().map_err(|_| {
            PyValueError::new_err(format!(
                "splits[{name:?}] must be a list of image ids (non-negative integers)"
            ))
        })?;
        match name.as_str() {
            "train" => splits.train = ids,
            "val" => splits.val = ids,
            "test" => splits.test = ids,
            other => {
                return Err(PyValueError::new_err(format!(
                    "splits has an unknown key {other:?}; use train, val and test"
                )));
            }
        }
    }
    Ok(splits)
}
