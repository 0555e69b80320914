//! Ranking losses over a whole mini-batch, built from small parts as in
//! pytorch-metric-learning: a [`Distance`] matrix, a [`Miner`] that picks which negatives each
//! anchor uses, a hinge, and a [`Reducer`]. A [`Term`] ties them to an anchor and a reference
//! modality; an [`Objective`] is a weighted sum of terms.
//!
//! Positives are defined by image id everywhere: a second caption of the same image is never a
//! negative.

mod distance;
mod euclidean;
mod hinge_sum;
mod memory;
mod miner;
mod objective;
mod reducer;
mod selected_hinges;
mod temperature;
mod term;

pub use distance::Distance;
pub use memory::{Memory, MemoryRows, RingBuffer};
pub use miner::Miner;
pub use objective::{Objective, ObjectiveOutput};
pub use reducer::Reducer;
pub use temperature::Temperature;
pub use term::{Criterion, DistanceCache, Embedded, Modality, Positive, Term, TermOutput};
