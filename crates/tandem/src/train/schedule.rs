//! Learning-rate schedules. The default is a constant rate: the reference code computes an
//! exponential decay but never hands it to its optimiser, so the results it reports come from a
//! constant 1e-4. Step decay, cosine annealing and a linear warm-up are options.

use crate::config::{LrScheduleKind, TrainConfig};

/// The learning rate of every step of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    base: f64,
    kind: LrScheduleKind,
    decay_every: usize,
    decay_factor: f64,
    warmup_steps: usize,
    total_steps: usize,
    min_lr: f64,
}

impl LrSchedule {
    /// The schedule of `config` for a run of `steps_per_epoch × config.epochs` steps.
    pub fn new(config: &TrainConfig, steps_per_epoch: usize) -> Self {
        LrSchedule {
            base: config.lr,
            kind: config.lr_schedule,
            decay_every: config.lr_decay_epochs,
            decay_factor: config.lr_decay_factor,
            warmup_steps: config.lr_warmup_steps,
            total_steps: steps_per_epoch * config.epochs,
            min_lr: config.min_lr,
        }
    }

    /// The rate of the step numbered `step` (0-based over the whole run) in `epoch` (0-based).
    pub fn lr(&self, step: usize, epoch: usize) -> f64 {
        let annealed = match self.kind {
            LrScheduleKind::Step => {
                step_decay(self.base, self.decay_factor, self.decay_every, epoch)
            }
            LrScheduleKind::Cosine => self.cosine(step),
        };
        if step < self.warmup_steps {
            annealed * (step + 1) as f64 / self.warmup_steps as f64
        } else {
            annealed
        }
    }

    /// Half a cosine from `base` (at the end of the warm-up) to `min_lr` (at the last step).
    fn cosine(&self, step: usize) -> f64 {
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let t = step.saturating_sub(self.warmup_steps).min(span) as f64 / span as f64;
        self.min_lr + (self.base - self.min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

/// Step decay: `lr · factor^⌊epoch / every⌋` (`every = 0` keeps `lr`). `epoch` is 0-based.
pub fn step_decay(lr: f64, factor: f64, every: usize, epoch: usize) -> f64 {
    match epoch.checked_div(every) {
        Some(steps) => lr * factor.powi(steps as i32),
        None => lr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(overrides: impl FnOnce(&mut TrainConfig)) -> LrSchedule {
        let mut config = TrainConfig {
            lr: 1e-3,
            epochs: 10,
            ..TrainConfig::default()
        };
        overrides(&mut config);
        LrSchedule::new(&config, 5)
    }

    #[test]
    fn decays_in_steps() {
        assert_eq!(step_decay(1e-3, 0.1, 10, 0), 1e-3);
        assert_eq!(step_decay(1e-3, 0.1, 10, 9), 1e-3);
        assert!((step_decay(1e-3, 0.1, 10, 10) - 1e-4).abs() < 1e-15);
        assert!((step_decay(1e-3, 0.1, 10, 25) - 1e-5).abs() < 1e-16);
        assert_eq!(step_decay(1e-3, 0.1, 0, 100), 1e-3);
    }

    #[test]
    fn the_default_is_the_constant_rate_the_reference_runs() {
        let s = schedule(|_| {});
        for (step, epoch) in [(0, 0), (24, 4), (25, 5), (49, 9)] {
            assert_eq!(s.lr(step, epoch), 1e-3);
        }
    }

    #[test]
    fn step_decay_applies_per_epoch() {
        let s = schedule(|c| {
            c.lr_decay_epochs = 4;
            c.lr_decay_factor = 0.5;
        });
        assert_eq!(s.lr(19, 3), 1e-3);
        assert_eq!(s.lr(20, 4), 5e-4);
        assert_eq!(s.lr(49, 9), 2.5e-4);
    }

    #[test]
    fn cosine_runs_from_the_base_to_the_floor_after_a_linear_warm_up() {
        let s = schedule(|c| {
            c.lr_schedule = LrScheduleKind::Cosine;
            c.lr_warmup_steps = 10;
            c.min_lr = 1e-5;
        });
        // Warm-up: 1/10, 2/10, … of the base (the cosine is still at its top).
        assert!((s.lr(0, 0) - 1e-4).abs() < 1e-15);
        assert!((s.lr(4, 0) - 5e-4).abs() < 1e-15);
        assert!((s.lr(9, 1) - 1e-3).abs() < 1e-15);
        // Half-way through the 40 annealed steps the rate is midway between base and floor.
        assert!((s.lr(30, 6) - (1e-5 + 0.5 * (1e-3 - 1e-5))).abs() < 1e-15);
        assert!((s.lr(50, 9) - 1e-5).abs() < 1e-15);
        let rates: Vec<f64> = (10..50).map(|k| s.lr(k, k / 5)).collect();
        assert!(rates.windows(2).all(|w| w[1] < w[0]), "{rates:?}");
    }
}
