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
    tensors: Vec<(String, candle_core::Tensor)>,
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
            tensors.push((name, snapshot(var.as_tensor())?));
        }
        for (name, tensor) in extra {
            tensors.push((name.clone(), tensor.to_device(&Device::Cpu)?));
        }
        Ok(CheckpointContents { tensors, metadata })
    }

    /// Serialises and writes to `path` atomically (temporary file, fsync, rename).
    ///
    /// # Errors
    /// [`Error::Checkpoint`] when serialisation fails, [`Error::Io`] naming the file.
    pub fn write(self, path: &Path) -> Result<()> {
        let bytes = safetensors::serialize(self.tensors, Some(self.metadata)).map_err(|e| {
            Error::Checkpoint {
                path: path.to_path_buf(),
                problem: e.to_string(),
            }
        })?;
        fsio::write_atomic(path, &bytes)
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
