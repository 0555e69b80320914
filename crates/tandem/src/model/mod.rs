//! The two-branch network: one branch per modality into one normalised space.

mod branch;
mod checkpoint;
pub(crate) mod explicit;
pub mod gemm;
mod input_linear;
mod layers;
mod two_branch;

pub use branch::Branch;
pub(crate) use checkpoint::snapshot;
pub use checkpoint::{Checkpoint, CheckpointContents, load_checkpoint, save_checkpoint};
pub use layers::{BatchNorm, Linear};
pub use two_branch::{Backward, Mode, TrainForward, TwoBranch};
