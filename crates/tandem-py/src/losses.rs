//! `tandem.losses`: the batch-wise losses as functions of two embedding matrices, returning the
//! loss and its gradients, with an optional cross-batch memory.

use candle_core::{DType, Device, Tensor, Var};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use tandem::config::{Config, MemoryConfig};
use tandem::loss::{Embedded, Objective, Temperature};

use crate::arrays::{self, Floats, Ints};
use crate::errors::IntoPy;

/// The cross-batch memory: the embeddings of the last `capacity` images and captions, used as
/// extra references by every term of the loss it is passed to, and then updated with the
/// batch (detached), as XBM (Wang et al., CVPR 2020) and `tandem train`'s `loss.memory` do.
/// `warmup_steps` calls pass before it starts recording.
#[pyclass(module = "tandem", name = "Memory")]
pub struct Memory {
    config: MemoryConfig,
    inner: Option<tandem::loss::Memory>,
}

#[pymethods]
impl Memory {
    #[new]
    #[pyo3(signature = (capacity, warmup_steps=0))]
    fn new(capacity: usize, warmup_steps: usize) -> PyResult<Self> {
        if capacity == 0 {
            return Err(PyValueError::new_err("capacity must be at least 1"));
        }
        Ok(Memory {
            config: MemoryConfig {
                enabled: true,
                capacity,
                warmup_steps,
            },
            inner: None,
        })
    }

    /// Rows held per modality.
    fn __len__(&self) -> usize {
        self.inner.as_ref().map_or(0, |m| m.texts.len())
    }

    /// Forgets every row.
    fn clear(&mut self) {
        self.inner = None;
    }

    fn __repr__(&self) -> String {
        format!(
            "Memory(capacity={}, rows={})",
            self.config.capacity,
            self.__len__()
        )
    }
}

/// The loss `kind` (`paper`, `info_nce`, `siglip`, `vse_max`, `vse_sum`) of a batch and its
/// gradients: `(loss, d_loss/d_images, d_loss/d_texts)`.
///
/// `images` `[n, d]` and `texts` `[m, d]` are the embeddings as the loss sees them (the paper
/// and CLIP normalise rows first); `text_to_image[j]` is the batch row of caption `j`'s
/// image. `sets` are `loss.*` overrides as `"key=value"` (`"loss.margin=0.1"`). With a
/// `memory`, `image_ids` and `caption_ids` (dataset ids of the rows) are required, so that a
/// remembered row of the same sample is never its own negative. `epoch` matters to
/// `vse_warmup` only. The temperature of `info_nce` / `siglip` is fixed at `loss.temperature`.
#[pyfunction]
#[pyo3(signature = (kind, images, texts, text_to_image, *, sets=Vec::new(), image_ids=None, caption_ids=None, memory=None, epoch=0))]
#[allow(clippy::too_many_arguments)]
pub fn loss<'py>(
    py: Python<'py>,
    kind: &str,
    images: Floats<'py>,
    texts: Floats<'py>,
    text_to_image: Ints<'py>,
    sets: Vec<String>,
    image_ids: Option<Ints<'py>>,
    caption_ids: Option<Ints<'py>>,
    memory: Option<PyRefMut<'py, Memory>>,
    epoch: usize,
) -> PyResult<(f64, Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let mut config = Config::default();
    config.set(&format!("loss.kind={kind}")).py_err()?;
    for s in &sets {
        config.set(s).py_err()?;
    }
    config.validate().py_err()?;
    let (image_rows, n, d) = arrays::rows(&images, "images")?;
    let (text_rows, m, d_text) = arrays::rows(&texts, "texts")?;
    if d != d_text {
        return Err(PyValueError::new_err(format!(
            "images have {d} columns and texts {d_text}: both must be embeddings of one space"
        )));
    }
    let batch_row = ids_in(&text_to_image, "text_to_image", m, Some(n))?;
    let ids_given = image_ids.is_some();
    let image_ids = match &image_ids {
        Some(ids) => ids_in(ids, "image_ids", n, None)?,
        None => (0..n as u32).collect(),
    };
    let caption_ids = caption_ids
        .as_ref()
        .map(|ids| ids_in(ids, "caption_ids", m, None))
        .transpose()?;
    let text_image_ids: Vec<u32> = batch_row.iter().map(|&r| image_ids[r as usize]).collect();
    let mut memory = memory;
    if memory.is_some() && (caption_ids.is_none() || !ids_given) {
        return Err(PyValueError::new_err(
            "a memory needs image_ids and caption_ids: the dataset ids of the batch's rows",
        ));
    }
    let memory = memory.as_deref_mut().map(|m| {
        let cfg = m.config.clone();
        m.inner
            .get_or_insert_with(|| tandem::loss::Memory::new(&cfg, d))
    });
    if let Some(mem) = &memory
        && mem.images.dim() != d
    {
        return Err(PyValueError::new_err(format!(
            "the memory holds {}-d embeddings, this batch is {d}-d; use one Memory per space",
            mem.images.dim()
        )));
    }
    let (image_rows, text_rows): (&[f32], &[f32]) = (&image_rows, &text_rows);
    let (value, gi, gt) = py
        .detach(|| -> tandem::Result<_> {
            let device = Device::Cpu;
            let vi = Var::from_tensor(&Tensor::from_slice(image_rows, (n, d), &device)?)?;
            let vt = Var::from_tensor(&Tensor::from_slice(text_rows, (m, d), &device)?)?;
            let temperature = Temperature::new(&config.loss, &device)?;
            let objective = Objective::for_epoch(&config.loss, epoch);
            let mut batch =
                Embedded::new(vi.as_tensor(), vt.as_tensor(), &image_ids, &text_image_ids)
                    .with_temperature(&temperature);
            if let Some(keys) = &caption_ids {
                batch = batch.with_keys(&image_ids, keys);
            }
            if let Some(mem) = memory.as_deref() {
                batch = batch.with_memory(mem);
            }
            let out = objective.forward(&batch)?;
            let value = out.total.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            let grads = out.total.backward()?;
            let grad = |v: &Var| -> tandem::Result<Vec<f32>> {
                Ok(match grads.get(v.as_tensor()) {
                    Some(g) => g.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
                    None => vec![0.0; v.as_tensor().elem_count()],
                })
            };
            let (gi, gt) = (grad(&vi)?, grad(&vt)?);
            if let (Some(mem), Some(keys)) = (memory, &caption_ids) {
                mem.record(
                    vi.as_tensor(),
                    &image_ids,
                    &image_ids,
                    vt.as_tensor(),
                    &text_image_ids,
                    keys,
                )?;
            }
            Ok((value, gi, gt))
        })
        .py_err()?;
    Ok((
        value,
        arrays::matrix(py, gi, n, d)?,
        arrays::matrix(py, gt, m, d)?,
    ))
}

/// `ids` as `u32`, `len` of them, each below `bound` when given.
fn ids_in(ids: &Ints<'_>, name: &str, len: usize, bound: Option<usize>) -> PyResult<Vec<u32>> {
    let values: Vec<i64> = ids.as_array().iter().copied().collect();
    if values.len() != len {
        return Err(PyValueError::new_err(format!(
            "{name} has {} entries, expected {len} (one per row)",
            values.len()
        )));
    }
    values
        .iter()
        .map(|&v| {
            let limit = bound.map_or(i64::from(u32::MAX), |b| b as i64 - 1);
            if v < 0 || v > limit {
                Err(PyValueError::new_err(match bound {
                    Some(b) => format!("{name} holds {v}; each must be in 0..{b}"),
                    None => format!("{name} holds {v}; ids must be non-negative"),
                }))
            } else {
                Ok(v as u32)
            }
        })
        .collect()
}
