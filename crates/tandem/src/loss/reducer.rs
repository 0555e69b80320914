//! How the selected hinge values of a term become one number.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Reduction of the selected (anchor, positive, negative) hinge values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reducer {
    /// Mean over all selected tuples, zeros included (the reference's `reduce_mean` of top-K).
    Mean,
    /// Sum over all selected tuples (VSE++).
    Sum,
    /// Mean over the tuples whose hinge is active (> 0).
    MeanNonZero,
}

impl Reducer {
    /// Reduces `sum` (a scalar tensor, the sum of the selected values) given how many tuples were
    /// selected and how many of them were non-zero.
    ///
    /// # Errors
    /// A tensor error from the scaling.
    pub fn reduce(self, sum: &Tensor, selected: usize, nonzero: usize) -> Result<Tensor> {
        let divisor = match self {
            Reducer::Mean => selected.max(1),
            Reducer::Sum => 1,
            Reducer::MeanNonZero => nonzero.max(1),
        };
        Ok((sum / divisor as f64)?)
    }

    /// The same reduction over plain values, for reference loops and tests.
    pub fn naive(self, values: &[f64]) -> f64 {
        let sum: f64 = values.iter().sum();
        let nonzero = values.iter().filter(|&&v| v > 0.0).count();
        match self {
            Reducer::Mean => sum / values.len().max(1) as f64,
            Reducer::Sum => sum,
            Reducer::MeanNonZero => sum / nonzero.max(1) as f64,
        }
    }
}
