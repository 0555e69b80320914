//! # tandem
//!
//! Joint image–text embeddings learned with a two-branch network and ranking losses that see
//! the whole mini-batch, after Wang, Li & Lazebnik, *Learning Deep Structure-Preserving
//! Image-Text Embeddings* (CVPR 2016).
//!
//! ```text
//! features (.npy / .safetensors) + caption → image ids
//!   → data::PairedDataset → data::Batcher (B captions, their images, one more caption each)
//!   → model::TwoBranch (image branch, text branch) → L2-normalised embeddings
//!   → loss::Objective = Σ weight · Term (distance → miner → hinge → reducer)
//!   → train::Trainer (Adam/SGD, lr schedules, validation rsum, best checkpoint, exact resume)
//!   → eval (R@1/5/10 both ways, median/mean rank, rsum)
//! ```
//!
//! The library never prints; progress reaches the caller through [`train::Observer`].
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use tandem::loss::{Embedded, Objective};
//!
//! // Two images and one caption each, already embedded and normalised.
//! let images = Tensor::new(&[[1f32, 0.], [0., 1.]], &Device::Cpu)?;
//! let texts = Tensor::new(&[[1f32, 0.], [0.6, 0.8]], &Device::Cpu)?;
//! let objective = Objective::paper(&tandem::config::LossConfig::default());
//! let out = objective.forward(&Embedded::new(&images, &texts, &[0, 1], &[0, 1]))?;
//! let loss: f32 = out.total.to_scalar()?;
//! assert!(loss >= 0.0);
//! # Ok::<(), tandem::Error>(())
//! ```

#![warn(missing_docs)]

pub mod config;
pub mod data;
mod device;
mod error;
pub mod eval;
pub mod fsio;
pub mod image;
pub mod index;
pub mod loss;
pub mod model;
pub mod parallel;
pub mod staged_folder;
pub mod text;
pub mod train;
pub mod tune;

#[cfg(test)]
mod test_values;

pub use device::{default_device, parse_device};
pub use error::{Error, Result};
