//! Early stopping on a validation score (higher is better).

/// Tracks the best score and how many epochs have passed without beating it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EarlyStopping {
    patience: usize,
    best: Option<f64>,
    since_best: usize,
}

/// The verdict after one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The score beat every earlier one (the first score always does).
    pub improved: bool,
    /// `patience` epochs in a row brought no improvement (never with patience 0).
    pub stop: bool,
}

impl EarlyStopping {
    /// Stops after `patience` epochs without improvement; 0 never stops.
    pub fn new(patience: usize) -> Self {
        EarlyStopping {
            patience,
            best: None,
            since_best: 0,
        }
    }

    /// Records one epoch's score.
    pub fn update(&mut self, score: f64) -> Verdict {
        let improved = self.best.is_none_or(|b| score > b);
        if improved {
            self.best = Some(score);
            self.since_best = 0;
        } else {
            self.since_best += 1;
        }
        Verdict {
            improved,
            stop: self.patience > 0 && self.since_best >= self.patience,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_after_patience_epochs_without_improvement() {
        let mut e = EarlyStopping::new(2);
        let v: Vec<Verdict> = [1.0, 3.0, 2.0, 3.0, 4.0, 4.0, 1.0]
            .iter()
            .map(|&s| e.update(s))
            .collect();
        let improved: Vec<bool> = v.iter().map(|v| v.improved).collect();
        let stop: Vec<bool> = v.iter().map(|v| v.stop).collect();
        // An equal score is not an improvement.
        assert_eq!(improved, [true, true, false, false, true, false, false]);
        assert_eq!(stop, [false, false, false, true, false, false, true]);
    }

    #[test]
    fn patience_zero_never_stops() {
        let mut e = EarlyStopping::new(0);
        assert!((0..10).all(|_| !e.update(0.0).stop));
    }
}
