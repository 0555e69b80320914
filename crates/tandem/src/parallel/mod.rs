//! Data-parallel training: every rank embeds its share of the batch, the embeddings are
//! gathered so that each loss term ranks against the whole batch as on one device, BatchNorm
//! normalises with the whole batch's statistics, and the gradients are summed over the ranks
//! before each rank's identical optimiser step.
//!
//! ```text
//! rank r: rows of its images and captions ─ branch forward (global BatchNorm sums, dropout
//!         drawn at the global rows) ─ all-gather ─ loss on the whole batch ─ gradient of its
//!         rows ─ branch backward ─ all-reduce of the weight gradients ─ optimiser step
//! ```
//!
//! The ranks here are threads of one process ([`ThreadGroup`]); [`Collective`] is the seam for
//! a multi-device backend.

mod collective;
mod group_sum;
mod ranked_step;
mod share;

pub use collective::{AbortOnPanic, Collective, ThreadGroup};
pub(crate) use group_sum::group_sum;
pub(crate) use ranked_step::RankedStep;
pub use share::{BatchShare, Shard};
pub(crate) use share::{gather_rows, local_rows, sum_model_gradients};
