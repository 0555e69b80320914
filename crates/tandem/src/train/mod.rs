//! The training loop: batches, optimiser, schedule, validation, checkpoints, metrics log.

mod adam_kernel;
pub mod bench;
mod checkpoint_writer;
mod cpu_peak;
mod data_parallel;
mod early_stop;
mod evaluate;
mod health;
mod metrics_log;
mod nonfinite;
mod observer;
mod on_pool;
mod optimizer;
mod read_ahead;
mod run_files;
mod schedule;
mod trainer;

pub use cpu_peak::{CpuPeak, measured_fma_peak};
pub use data_parallel::{train_data_parallel, train_on_devices};
pub use early_stop::{EarlyStopping, Verdict};
pub use evaluate::{evaluate_protocol, evaluate_split, resolve_splits};
pub use health::{COLLAPSE_SPREAD, Health};
pub use observer::{EpochReport, NoopObserver, Observer, StepReport};
pub use optimizer::{Adam, Optimizer, SgdMomentum};
pub use run_files::{OpenedModel, RunFiles};
pub use schedule::{LrSchedule, step_decay};
pub use trainer::{StepEvent, TrainOutcome, Trainer, resume, train};
