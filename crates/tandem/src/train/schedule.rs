//! Learning-rate schedule. The reference code computes a decayed rate but never hands it to the
//! optimiser; tandem applies it.

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

    #[test]
    fn decays_in_steps() {
        assert_eq!(step_decay(1e-3, 0.1, 10, 0), 1e-3);
        assert_eq!(step_decay(1e-3, 0.1, 10, 9), 1e-3);
        assert!((step_decay(1e-3, 0.1, 10, 10) - 1e-4).abs() < 1e-15);
        assert!((step_decay(1e-3, 0.1, 10, 25) - 1e-5).abs() < 1e-16);
        assert_eq!(step_decay(1e-3, 0.1, 0, 100), 1e-3);
    }
}
