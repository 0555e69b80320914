//! Checkpoints: safetensors with the full config and feature dimensions in the metadata, so a
//! checkpoint alone is enough to rebuild the model.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Device;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::fsio;
use crate::model::TwoBranch;

const FORMAT: &str = "tandem-checkpoint-1";

/// What a checkpoint holds besides the weights.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The model with its weights.
    pub model: TwoBranch,
    /// The run's resolved config.
    pub config: Config,
    /// The epoch after which it was written (1-based).
    pub epoch: usize,
    /// Tensors besides the model's: the loss temperature (`loss.*`), the cross-batch memory
    /// (`memory.*`) and, in `last.safetensors`, the optimiser state (`optimizer.*`).
    pub extra: HashMap<String, candle_core::Tensor>,
    /// Every metadata entry (the training state of a resumable checkpoint among them).
    pub metadata: HashMap<String, String>,
}

/// Writes the model, config, `extra` named tensors and `extra_metadata` to `path` atomically.
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn save_checkpoint(
    path: &Path,
    model: &TwoBranch,
    config: &Config,
    epoch: usize,
    extra: &[(String, candle_core::Tensor)],
    extra_metadata: &[(String, String)],
) -> Result<()> {
    CheckpointContents::of(model, config, epoch, extra, extra_metadata)?.write(path)
}

/// A checkpoint's tensors and metadata, taken from the model at one moment: its tensors are
/// copies on the host, so training may go on while they are written (see
/// [`CheckpointContents::write`]).
pub struct CheckpointContents {
    tensors: Vec<(String, HostTensor)>,
    metadata: HashMap<String, String>,
}

impl CheckpointContents {
    /// The model's weights, copied, then `extra` (on the host, not copied: callers pass tensors
    /// that nothing updates in place), with the config, dimensions, epoch and `extra_metadata`.
    ///
    /// # Errors
    /// [`Error::Tensor`] when a tensor cannot be copied to the host.
    pub fn of(
        model: &TwoBranch,
        config: &Config,
        epoch: usize,
        extra: &[(String, candle_core::Tensor)],
        extra_metadata: &[(String, String)],
    ) -> Result<Self> {
        let mut metadata = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("config".to_string(), config.to_toml()),
            ("d_image".to_string(), model.d_image.to_string()),
            ("d_text".to_string(), model.d_text.to_string()),
            ("epoch".to_string(), epoch.to_string()),
        ]);
        metadata.extend(extra_metadata.iter().cloned());
        let mut tensors = Vec::new();
        // Weights are `Var`s, which the optimiser updates in place: a snapshot must copy them.
        for (name, var, _) in model.named() {
            tensors.push((name, HostTensor::snapshot(var.as_tensor())?));
        }
        for (name, tensor) in extra {
            let tensor = tensor.to_device(&Device::Cpu)?;
            tensors.push((name.clone(), HostTensor::Tensor(tensor)));
        }
        Ok(CheckpointContents { tensors, metadata })
    }

    /// Writes to `path` atomically (temporary file, fsync, rename), streaming the tensors'
    /// bytes to the file: the serialised checkpoint is never built in memory (at the paper's
    /// size with the optimiser state that was 273 MB allocated and copied twice per write).
    ///
    /// # Errors
    /// [`Error::Checkpoint`] when serialisation fails, [`Error::Io`] naming the file.
    pub fn write(self, path: &Path) -> Result<()> {
        let tensors = self.tensors.iter().map(|(name, t)| (name.as_str(), t));
        fsio::write_atomic_with(path, |tmp| {
            safetensors::serialize_to_file(tensors, Some(self.metadata), tmp).map_err(|e| match e {
                safetensors::SafeTensorError::IoError(source) => Error::io(path, source),
                other => Error::Checkpoint {
                    path: path.to_path_buf(),
                    problem: other.to_string(),
                },
            })
        })
    }
}

/// A tensor of a checkpoint on the host, as the file stores it.
enum HostTensor {
    /// f32 values copied out of the model, written to the file as they are.
    F32 { shape: Vec<usize>, values: Vec<f32> },
    /// Any other tensor on the host, converted to bytes when written.
    Tensor(candle_core::Tensor),
}

impl HostTensor {
    /// A copy of `tensor` that later in-place updates of it do not reach: its f32 values
    /// when it is an f32 tensor on the CPU (the one copy the write needs), else a host copy.
    fn snapshot(tensor: &candle_core::Tensor) -> Result<Self> {
        if tensor.device().is_cpu() && tensor.dtype() == candle_core::DType::F32 {
            return Ok(HostTensor::F32 {
                shape: tensor.dims().to_vec(),
                values: tensor.flatten_all()?.to_vec1()?,
            });
        }
        Ok(HostTensor::Tensor(snapshot(tensor)?))
    }
}

impl safetensors::View for &HostTensor {
    fn dtype(&self) -> safetensors::Dtype {
        match self {
            HostTensor::F32 { .. } => safetensors::Dtype::F32,
            HostTensor::Tensor(t) => t.dtype().into(),
        }
    }

    fn shape(&self) -> &[usize] {
        match self {
            HostTensor::F32 { shape, .. } => shape,
            HostTensor::Tensor(t) => t.dims(),
        }
    }

    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        match self {
            // safetensors is little-endian: the values' own bytes on such a host.
            HostTensor::F32 { values, .. } if cfg!(target_endian = "little") => {
                std::borrow::Cow::Borrowed(bytemuck::cast_slice(values))
            }
            HostTensor::F32 { values, .. } => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            HostTensor::Tensor(t) => <candle_core::Tensor as safetensors::View>::data(t),
        }
    }

    fn data_len(&self) -> usize {
        match self {
            HostTensor::F32 { values, .. } => 4 * values.len(),
            HostTensor::Tensor(t) => <candle_core::Tensor as safetensors::View>::data_len(t),
        }
    }
}

/// A host copy of `tensor` that later in-place updates of `tensor` do not reach.
pub(crate) fn snapshot(tensor: &candle_core::Tensor) -> Result<candle_core::Tensor> {
    Ok(if tensor.device().is_cpu() {
        tensor.copy()?
    } else {
        tensor.to_device(&Device::Cpu)?
    })
}

/// Reads a checkpoint written by [`save_checkpoint`].
///
/// # Errors
/// [`Error::Checkpoint`] for a file that is not a tandem checkpoint, lacks a tensor, or has a
/// tensor of the wrong shape.
pub fn load_checkpoint(path: &Path, device: &Device) -> Result<Checkpoint> {
    let bytes = fsio::read(path)?;
    let bad = |problem: String| Error::Checkpoint {
        path: path.to_path_buf(),
        problem,
    };
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| {
        bad(format!(
            "not a safetensors file ({e}); pass best.safetensors of a run folder"
        ))
    })?;
    let meta = meta.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(bad("not a tandem checkpoint (no tandem metadata); pass a run folder or its best.safetensors".into()));
    }
    let field = |k: &str| {
        meta.get(k)
            .cloned()
            .ok_or_else(|| bad(format!("metadata `{k}` is missing")))
    };
    let config = Config::from_toml(&field("config")?)?;
    let num = |k: &str| -> Result<usize> {
        field(k)?
            .parse()
            .map_err(|_| bad(format!("metadata `{k}` is not a number")))
    };
    let (d_image, d_text, epoch) = (num("d_image")?, num("d_text")?, num("epoch")?);
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)
        .map_err(|e| bad(format!("unreadable tensors: {e}")))?;
    let model = TwoBranch::new(d_image, d_text, &config.model, 0, device)?;
    let mut get =
        |name: &str, dims: &[usize]| -> std::result::Result<candle_core::Tensor, String> {
            let t = tensors
                .get(name)
                .ok_or_else(|| format!("tensor `{name}` is missing"))?;
            if t.dims() != dims {
                return Err(format!(
                    "tensor `{name}` has shape {:?}, expected {dims:?}",
                    t.dims()
                ));
            }
            t.to_dtype(candle_core::DType::F32)
                .map_err(|e| e.to_string())
        };
    model.image.load("image", &mut get).map_err(bad)?;
    model.text.load("text", &mut get).map_err(bad)?;
    let extra = tensors
        .into_iter()
        .filter(|(name, _)| {
            ["loss.", "memory.", "optimizer."]
                .iter()
                .any(|p| name.starts_with(p))
        })
        .collect();
    Ok(Checkpoint {
        model,
        config,
        epoch,
        extra,
        metadata: meta,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Tensor;

    /// The streamed file is, byte for byte, what safetensors' in-memory serialisation of the
    /// same tensors (candle's, as the checkpoint was written before) gives, with f32 weights,
    /// f32 optimiser state and integer ids; and it loads back to the same values.
    #[test]
    fn the_streamed_file_equals_the_in_memory_serialisation() {
        let mut config = Config::default();
        config.model.hidden = vec![8];
        config.model.dim = 4;
        let model = TwoBranch::new(6, 5, &config.model, 3, &Device::Cpu).unwrap();
        let moments = Tensor::arange(0f32, 48.0, &Device::Cpu).unwrap();
        let extra = [
            (
                "optimizer.0.m".to_string(),
                moments.reshape((8, 6)).unwrap(),
            ),
            (
                "memory.images.ids".to_string(),
                Tensor::new(&[7u32, 1, 4], &Device::Cpu).unwrap(),
            ),
        ];
        let metadata = [("train_state".to_string(), "{}".to_string())];
        let contents = CheckpointContents::of(&model, &config, 2, &extra, &metadata).unwrap();
        let as_candle: Vec<(String, Tensor)> = contents
            .tensors
            .iter()
            .map(|(name, t)| {
                let t = match t {
                    HostTensor::F32 { shape, values } => {
                        Tensor::from_slice(values, shape.as_slice(), &Device::Cpu).unwrap()
                    }
                    HostTensor::Tensor(t) => t.clone(),
                };
                (name.clone(), t)
            })
            .collect();
        let want = safetensors::serialize(as_candle, Some(contents.metadata.clone())).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last.safetensors");
        contents.write(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), want);
        let loaded = load_checkpoint(&path, &Device::Cpu).unwrap();
        assert_eq!(loaded.epoch, 2);
        let ids: Vec<u32> = loaded.extra["memory.images.ids"].to_vec1().unwrap();
        assert_eq!(ids, [7, 1, 4]);
        for ((name, var, _), (_, back, _)) in model.named().into_iter().zip(loaded.model.named()) {
            let (a, b): (Vec<f32>, Vec<f32>) = (
                var.as_tensor().flatten_all().unwrap().to_vec1().unwrap(),
                back.as_tensor().flatten_all().unwrap().to_vec1().unwrap(),
            );
            assert_eq!(a, b, "{name}");
        }
    }
}
