//! How the library reports progress without printing: the caller implements [`Observer`].

use crate::eval::RetrievalMetrics;
use crate::train::Health;

/// After every optimisation step.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// 0-based epoch.
    pub epoch: usize,
    /// Global step, 1-based.
    pub step: usize,
    /// Step within the epoch, 1-based.
    pub step_in_epoch: usize,
    /// Steps in this epoch.
    pub steps_in_epoch: usize,
    /// Learning rate used.
    pub lr: f64,
    /// Weighted total loss.
    pub loss: f64,
    /// Per term: name, unweighted value, fraction of active hinges.
    pub terms: Vec<(String, f64, f64)>,
    /// Similarities and spread of the batch's embeddings.
    pub health: Health,
    /// The softmax / sigmoid logit scale (1 / temperature) after the step, when the loss has one.
    pub logit_scale: Option<f64>,
}

/// After every epoch's validation.
#[derive(Debug, Clone)]
pub struct EpochReport {
    /// 0-based epoch.
    pub epoch: usize,
    /// Total epochs planned.
    pub epochs: usize,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Validation metrics, when there is a validation split.
    pub val: Option<RetrievalMetrics>,
    /// Whether this epoch is the best so far (its model becomes best.safetensors, written
    /// with the next checkpoint).
    pub improved: bool,
    /// Whether this epoch's checkpoints were handed to the writer thread (every
    /// `train.checkpoint_seconds` and after the last epoch): a kill from here on resumes from
    /// this epoch.
    pub checkpointed: bool,
    /// Seconds the epoch took, validation included.
    pub seconds: f64,
}

/// Receives progress from [`crate::train::train`].
pub trait Observer {
    /// Once, before the first step.
    fn on_start(&mut self, _epochs: usize, _steps_per_epoch: usize) {}
    /// After each step.
    fn on_step(&mut self, _report: &StepReport) {}
    /// After each epoch.
    fn on_epoch(&mut self, _report: &EpochReport) {}
    /// Something the user should know about, e.g. collapsed embeddings (once per run).
    fn on_warning(&mut self, _message: &str) {}
    /// Asked before each epoch with the number of epochs completed (and checkpointed) so far:
    /// `true` ends the run there, as a pause that [`crate::train::resume`] continues exactly (a
    /// search stopping a trial at a rung, a callback that has seen enough).
    fn stop_requested(&mut self, _completed_epochs: usize) -> bool {
        false
    }
    /// Asked after each step: `true` abandons the epoch at once with [`Error::Interrupted`]
    /// (Ctrl-C in Python); the last epoch's checkpoint is left as it was, so
    /// [`crate::train::resume`] continues from it.
    ///
    /// [`Error::Interrupted`]: crate::Error::Interrupted
    fn interrupt_requested(&mut self) -> bool {
        false
    }
}

/// Ignores everything.
pub struct NoopObserver;

impl Observer for NoopObserver {}
