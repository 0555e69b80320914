//! Optimisers behind one interface: candle's AdamW, and SGD with momentum (candle's SGD has none).

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::Optimizer as _;

use crate::config::{OptimizerKind, TrainConfig};
use crate::error::Result;

/// SGD with classical momentum and L2 weight decay: `v = μv + g + λw; w -= lr·v`.
#[derive(Debug)]
pub struct SgdMomentum {
    vars: Vec<(Var, Option<Tensor>)>,
    lr: f64,
    momentum: f64,
    weight_decay: f64,
}

impl SgdMomentum {
    /// A new optimiser over `vars`.
    pub fn new(vars: Vec<Var>, lr: f64, momentum: f64, weight_decay: f64) -> Self {
        SgdMomentum {
            vars: vars.into_iter().map(|v| (v, None)).collect(),
            lr,
            momentum,
            weight_decay,
        }
    }

    /// One update from `grads`.
    ///
    /// # Errors
    /// A tensor error from the arithmetic.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        for (var, velocity) in &mut self.vars {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let mut g = g.clone();
            if self.weight_decay > 0.0 {
                g = (g + (var.as_tensor() * self.weight_decay)?)?;
            }
            let v = match velocity.take() {
                Some(v) if self.momentum > 0.0 => ((v * self.momentum)? + g)?,
                _ => g,
            };
            var.set(&var.as_tensor().sub(&(&v * self.lr)?)?)?;
            *velocity = Some(v);
        }
        Ok(())
    }
}

/// The optimiser chosen in the config.
pub enum Optimizer {
    /// Adam / AdamW.
    Adam(candle_nn::AdamW),
    /// SGD with momentum.
    Sgd(SgdMomentum),
}

impl Optimizer {
    /// Builds the optimiser of `cfg` over `vars`.
    ///
    /// # Errors
    /// A tensor error from candle.
    pub fn new(vars: Vec<Var>, cfg: &TrainConfig) -> Result<Self> {
        Ok(match cfg.optimizer {
            OptimizerKind::Adam => Optimizer::Adam(candle_nn::AdamW::new(
                vars,
                candle_nn::ParamsAdamW {
                    lr: cfg.lr,
                    weight_decay: cfg.weight_decay,
                    ..Default::default()
                },
            )?),
            OptimizerKind::Sgd => Optimizer::Sgd(SgdMomentum::new(
                vars,
                cfg.lr,
                cfg.momentum,
                cfg.weight_decay,
            )),
        })
    }

    /// Applies one update.
    ///
    /// # Errors
    /// A tensor error.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        match self {
            Optimizer::Adam(a) => a.step(grads)?,
            Optimizer::Sgd(s) => s.step(grads)?,
        }
        Ok(())
    }

    /// Sets the learning rate for the next steps.
    pub fn set_learning_rate(&mut self, lr: f64) {
        match self {
            Optimizer::Adam(a) => a.set_learning_rate(lr),
            Optimizer::Sgd(s) => s.lr = lr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn sgd_momentum_matches_hand_computation() {
        // Minimise w² from w = 1: g = 2w. lr 0.1, μ 0.9.
        let w = Var::new(&[1.0f64], &Device::Cpu).unwrap();
        let mut opt = SgdMomentum::new(vec![w.clone()], 0.1, 0.9, 0.0);
        let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap();
        opt.step(&loss.backward().unwrap()).unwrap();
        // v = 2, w = 1 - 0.2 = 0.8
        assert!((w.as_tensor().to_vec1::<f64>().unwrap()[0] - 0.8).abs() < 1e-12);
        let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap();
        opt.step(&loss.backward().unwrap()).unwrap();
        // v = 0.9*2 + 1.6 = 3.4, w = 0.8 - 0.34 = 0.46
        assert!((w.as_tensor().to_vec1::<f64>().unwrap()[0] - 0.46).abs() < 1e-12);
    }
}
