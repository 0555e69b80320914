//! Optimisers behind one interface: Adam(W) and SGD with momentum. Both are our own (a few
//! lines each) because a resumed run needs their state: candle's AdamW keeps its moments
//! private, and its SGD has no momentum.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::config::{OptimizerKind, TrainConfig};
use crate::error::Result;

/// Adam with decoupled weight decay (AdamW, Loshchilov & Hutter), β = (0.9, 0.999), ε = 1e-8;
/// the same arithmetic, in the same order, as candle-nn's `AdamW`.
#[derive(Debug)]
pub struct Adam {
    vars: Vec<(Var, Tensor, Tensor)>,
    lr: f64,
    weight_decay: f64,
    step: u64,
}

impl Adam {
    const BETA1: f64 = 0.9;
    const BETA2: f64 = 0.999;
    const EPS: f64 = 1e-8;

    /// A new optimiser over `vars` with zero moments.
    ///
    /// # Errors
    /// A tensor error from allocation.
    pub fn new(vars: Vec<Var>, lr: f64, weight_decay: f64) -> Result<Self> {
        let vars = vars
            .into_iter()
            .map(|v| {
                let zeros = v.as_tensor().zeros_like()?;
                Ok((v, zeros.clone(), zeros))
            })
            .collect::<Result<_>>()?;
        Ok(Adam {
            vars,
            lr,
            weight_decay,
            step: 0,
        })
    }

    /// One update from `grads`.
    ///
    /// # Errors
    /// A tensor error from the arithmetic.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let (b1, b2) = (Self::BETA1, Self::BETA2);
        let scale_m = 1.0 / (1.0 - b1.powi(self.step as i32));
        let scale_v = 1.0 / (1.0 - b2.powi(self.step as i32));
        for (var, m, v) in &mut self.vars {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let next_m = ((&*m * b1)? + (g * (1.0 - b1))?)?;
            let next_v = ((&*v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let m_hat = (&next_m * scale_m)?;
            let v_hat = (&next_v * scale_v)?;
            let decayed = (var.as_tensor() * (1.0 - self.lr * self.weight_decay))?;
            let update = (m_hat / (v_hat.sqrt()? + Self::EPS)?)?;
            var.set(&(decayed - (update * self.lr)?)?)?;
            *m = next_m;
            *v = next_v;
        }
        Ok(())
    }
}

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
    Adam(Adam),
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
            OptimizerKind::Adam => Optimizer::Adam(Adam::new(vars, cfg.lr, cfg.weight_decay)?),
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
            Optimizer::Adam(a) => a.lr = lr,
            Optimizer::Sgd(s) => s.lr = lr,
        }
    }

    /// The optimiser's state as named tensors (moments or velocities, by variable position)
    /// and its step count, for a checkpoint a run can resume from.
    pub fn state(&self) -> (Vec<(String, Tensor)>, u64) {
        match self {
            Optimizer::Adam(a) => (
                a.vars
                    .iter()
                    .enumerate()
                    .flat_map(|(i, (_, m, v))| {
                        [
                            (format!("optimizer.{i}.m"), m.clone()),
                            (format!("optimizer.{i}.v"), v.clone()),
                        ]
                    })
                    .collect(),
                a.step,
            ),
            Optimizer::Sgd(s) => (
                s.vars
                    .iter()
                    .enumerate()
                    .filter_map(|(i, (_, velocity))| {
                        velocity
                            .as_ref()
                            .map(|v| (format!("optimizer.{i}.velocity"), v.clone()))
                    })
                    .collect(),
                0,
            ),
        }
    }

    /// Restores state written by [`Optimizer::state`] for the same variables.
    ///
    /// # Errors
    /// A message naming a missing or mis-shaped tensor.
    pub fn restore(
        &mut self,
        tensors: &HashMap<String, Tensor>,
        step: u64,
    ) -> std::result::Result<(), String> {
        let fetch = |name: String, like: &Tensor| -> std::result::Result<Tensor, String> {
            let t = tensors
                .get(&name)
                .ok_or_else(|| format!("optimizer tensor `{name}` is missing"))?;
            if t.dims() != like.dims() {
                return Err(format!(
                    "optimizer tensor `{name}` has shape {:?}, expected {:?}",
                    t.dims(),
                    like.dims()
                ));
            }
            t.to_dtype(like.dtype())
                .and_then(|t| t.to_device(like.device()))
                .map_err(|e| e.to_string())
        };
        match self {
            Optimizer::Adam(a) => {
                for (i, (var, m, v)) in a.vars.iter_mut().enumerate() {
                    *m = fetch(format!("optimizer.{i}.m"), var.as_tensor())?;
                    *v = fetch(format!("optimizer.{i}.v"), var.as_tensor())?;
                }
                a.step = step;
            }
            Optimizer::Sgd(s) => {
                for (i, (var, velocity)) in s.vars.iter_mut().enumerate() {
                    let name = format!("optimizer.{i}.velocity");
                    *velocity = if tensors.contains_key(&name) {
                        Some(fetch(name, var.as_tensor())?)
                    } else {
                        None
                    };
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::Optimizer as _;

    #[test]
    fn adam_matches_candle_adamw_step_for_step() {
        let start = [0.5f32, -1.5, 2.0];
        let ours = Var::new(&start, &Device::Cpu).unwrap();
        let theirs = Var::new(&start, &Device::Cpu).unwrap();
        let mut adam = Adam::new(vec![ours.clone()], 0.01, 0.1).unwrap();
        let mut reference = candle_nn::AdamW::new(
            vec![theirs.clone()],
            candle_nn::ParamsAdamW {
                lr: 0.01,
                weight_decay: 0.1,
                ..Default::default()
            },
        )
        .unwrap();
        for _ in 0..5 {
            let loss = |w: &Var| {
                (w.as_tensor().sqr().unwrap() * 3.0)
                    .unwrap()
                    .sum_all()
                    .unwrap()
            };
            adam.step(&loss(&ours).backward().unwrap()).unwrap();
            reference.step(&loss(&theirs).backward().unwrap()).unwrap();
        }
        assert_eq!(
            ours.as_tensor().to_vec1::<f32>().unwrap(),
            theirs.as_tensor().to_vec1::<f32>().unwrap()
        );
    }

    #[test]
    fn restored_state_continues_identically() {
        for kind in [OptimizerKind::Adam, OptimizerKind::Sgd] {
            let cfg = TrainConfig {
                optimizer: kind,
                lr: 0.05,
                ..TrainConfig::default()
            };
            let a = Var::new(&[1.0f64, -2.0], &Device::Cpu).unwrap();
            let mut first = Optimizer::new(vec![a.clone()], &cfg).unwrap();
            let step = |opt: &mut Optimizer, w: &Var| {
                let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap();
                opt.step(&loss.backward().unwrap()).unwrap();
            };
            for _ in 0..3 {
                step(&mut first, &a);
            }
            let (tensors, count) = first.state();
            // A fresh copy (Var::from_tensor of a Var would share its storage).
            let b = Var::new(a.as_tensor().to_vec1::<f64>().unwrap(), &Device::Cpu).unwrap();
            let mut second = Optimizer::new(vec![b.clone()], &cfg).unwrap();
            second
                .restore(&tensors.into_iter().collect(), count)
                .unwrap();
            step(&mut first, &a);
            step(&mut second, &b);
            assert_eq!(
                a.as_tensor().to_vec1::<f64>().unwrap(),
                b.as_tensor().to_vec1::<f64>().unwrap(),
                "{kind:?}"
            );
        }
    }

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
