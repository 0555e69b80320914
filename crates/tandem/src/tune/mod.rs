//! `tandem tune`: a budgeted search over config keys, scored on the validation split.
//!
//! A search space ([`SearchSpace`], TOML) names fixed overrides and searched keys; trials draw
//! their values at random or from a grid ([`Sampler`]); asynchronous successive halving
//! ([`asha`]) gives the promising ones more epochs. Each trial is an ordinary run folder, paused
//! at each rung and resumed exactly when promoted; the journal makes a killed search continue
//! where it stopped. Trials run one at a time, each with every core: the step's products
//! already use them all, so running trials side by side would only oversubscribe the cores.

pub mod asha;
mod journal;
mod search;
mod space;

pub use journal::{Event, Settings};
pub use search::{JobStart, TrialRow, TuneFiles, TuneObserver, TuneOptions, TuneReport, search};
pub use space::{Domain, Param, Params, Sampler, SearchSpace, apply};
