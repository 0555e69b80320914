//! The training loop: batches, optimiser, schedule, validation, checkpoints, metrics log.

mod observer;
mod optimizer;
mod schedule;
mod trainer;

pub use observer::{EpochReport, NoopObserver, Observer, StepReport};
pub use optimizer::{Optimizer, SgdMomentum};
pub use schedule::step_decay;
pub use trainer::{RunFiles, TrainOutcome, evaluate_split, resolve_splits, train};
