//! Asynchronous successive halving (ASHA; Li et al., MLSys 2020) for one worker.
//!
//! Trials start with the smallest epoch budget (rung 0). Whenever the worker is free, the best
//! trial of the highest rung that is in the top `1/eta` of that rung and not yet promoted goes
//! on to the next rung; otherwise a new trial starts. Unlike synchronous halving this needs no
//! number of trials in advance, so a search can be cut by a time budget at any point and still
//! has its best trials trained longest.

/// The epochs of each rung, ascending; the last is the full budget.
///
/// Counted down from `max_epochs` by factors of `eta` (20 epochs, eta 3, min 2: 2, 7, 20), so
/// the full budget is always a rung and the first rung is at least `min_epochs`.
pub fn rungs(min_epochs: usize, max_epochs: usize, eta: usize) -> Vec<usize> {
    let (min_epochs, eta) = (min_epochs.max(1), eta.max(2) as f64);
    let mut rungs = vec![max_epochs];
    let mut at = max_epochs as f64;
    loop {
        at /= eta;
        let epochs = at.round() as usize;
        if epochs < min_epochs || epochs >= *rungs.last().expect("non-empty") {
            break;
        }
        rungs.push(epochs);
    }
    rungs.reverse();
    rungs
}

/// What the worker should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Continue `trial` to rung `rung`.
    Promote {
        /// The trial to continue.
        trial: usize,
        /// The rung to train it to.
        rung: usize,
    },
    /// Start a new trial at rung 0.
    Start,
}

/// The scheduler's memory: each rung's scores and which trials left it.
#[derive(Debug, Clone)]
pub struct Asha {
    eta: usize,
    /// Per rung: `(trial, score)` of every trial that finished it.
    finished: Vec<Vec<(usize, f64)>>,
    /// Per rung: trials promoted out of it.
    promoted: Vec<Vec<usize>>,
}

impl Asha {
    /// A scheduler over `rungs` rungs.
    pub fn new(rungs: usize, eta: usize) -> Self {
        Asha {
            eta: eta.max(2),
            finished: vec![Vec::new(); rungs],
            promoted: vec![Vec::new(); rungs],
        }
    }

    /// `trial` finished `rung` with `score` (higher is better; a failed trial scores −∞).
    pub fn record(&mut self, trial: usize, rung: usize, score: f64) {
        self.finished[rung].push((trial, score));
    }

    /// `trial` was sent from `rung - 1` to `rung` (also when replaying a journal).
    pub fn mark_promoted(&mut self, trial: usize, rung: usize) {
        if rung > 0 && !self.promoted[rung - 1].contains(&trial) {
            self.promoted[rung - 1].push(trial);
        }
    }

    /// The next job. `can_start` says whether a new trial may start (trials and grid left);
    /// when it may not, each rung promotes its top `ceil(n / eta)` instead of `floor(n / eta)`,
    /// so a finite set of trials still ends with at least one trained to the full budget.
    /// `None` when there is nothing left to do.
    pub fn next(&self, can_start: bool) -> Option<Decision> {
        if let Some(d) = self.promotion(false) {
            return Some(d);
        }
        if can_start {
            return Some(Decision::Start);
        }
        self.promotion(true)
    }

    fn promotion(&self, round_up: bool) -> Option<Decision> {
        let top_rung = self.finished.len() - 1;
        for rung in (0..top_rung).rev() {
            let mut ranked = self.finished[rung].clone();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let n = ranked.len();
            let quota = if round_up {
                n.div_ceil(self.eta)
            } else {
                n / self.eta
            };
            let candidate = ranked
                .iter()
                .take(quota)
                .find(|(trial, score)| score.is_finite() && !self.promoted[rung].contains(trial));
            if let Some(&(trial, _)) = candidate {
                return Some(Decision::Promote {
                    trial,
                    rung: rung + 1,
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rungs_count_down_from_the_full_budget() {
        assert_eq!(rungs(2, 20, 3), [2, 7, 20]);
        assert_eq!(rungs(1, 27, 3), [1, 3, 9, 27]);
        assert_eq!(rungs(5, 20, 3), [7, 20]);
        assert_eq!(rungs(1, 8, 2), [1, 2, 4, 8]);
        assert_eq!(rungs(30, 20, 3), [20]);
        assert_eq!(rungs(1, 1, 3), [1]);
    }

    /// Simulates a search where trial `t` scores `score(t)` at every rung.
    fn simulate(
        trials: usize,
        eta: usize,
        rungs: usize,
        score: &dyn Fn(usize) -> f64,
    ) -> Vec<usize> {
        let mut asha = Asha::new(rungs, eta);
        let mut started = 0;
        let mut reached = vec![0; trials];
        while let Some(d) = asha.next(started < trials) {
            match d {
                Decision::Start => {
                    asha.record(started, 0, score(started));
                    started += 1;
                }
                Decision::Promote { trial, rung } => {
                    asha.mark_promoted(trial, rung);
                    reached[trial] = rung;
                    asha.record(trial, rung, score(trial));
                }
            }
        }
        reached
    }

    #[test]
    fn the_best_trials_reach_the_top_rung() {
        // 27 trials, eta 3: at least the top 9 reach rung 1, the top 3 rung 2, the best rung
        // 3. (Asynchronous promotion may also send on trials that led only early on.)
        let reached = simulate(27, 3, 4, &|t| ((t * 7) % 27) as f64);
        let rank = |t: usize| 26 - (t * 7) % 27; // 0 = best
        for (t, &r) in reached.iter().enumerate() {
            let at_least = match rank(t) {
                0 => 3,
                1..=2 => 2,
                3..=8 => 1,
                _ => 0,
            };
            assert!(
                r >= at_least,
                "trial {t} (rank {}) reached rung {r}",
                rank(t)
            );
        }
        let promoted = reached.iter().filter(|&&r| r >= 1).count();
        assert!(
            (9..=14).contains(&promoted),
            "{promoted} trials left rung 0"
        );
    }

    #[test]
    fn a_few_trials_still_finish_one_at_the_full_budget() {
        let reached = simulate(2, 3, 3, &|t| t as f64);
        assert_eq!(reached, [0, 2]);
        let reached = simulate(1, 3, 3, &|_| 1.0);
        assert_eq!(reached, [2]);
    }

    #[test]
    fn failed_trials_are_never_promoted() {
        let reached = simulate(3, 3, 2, &|_| f64::NEG_INFINITY);
        assert_eq!(reached, [0, 0, 0]);
    }

    #[test]
    fn promotion_is_asynchronous() {
        // After three trials the best goes on before a fourth starts.
        let mut asha = Asha::new(3, 3);
        for (t, s) in [(0, 1.0), (1, 5.0), (2, 3.0)] {
            assert_eq!(asha.next(true), Some(Decision::Start));
            asha.record(t, 0, s);
        }
        assert_eq!(
            asha.next(true),
            Some(Decision::Promote { trial: 1, rung: 1 })
        );
        asha.mark_promoted(1, 1);
        assert_eq!(asha.next(true), Some(Decision::Start));
    }
}
