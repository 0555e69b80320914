//! Optimisers behind one interface: Adam(W) and SGD with momentum. Both are our own (a few
//! lines each) because a resumed run needs their state: candle's AdamW keeps its moments
//! private, and its SGD has no momentum.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use std::cell::RefCell;

use candle_core::{DType, Tensor, Var};

use super::adam_kernel::{AdamConstants, AdamInPlace};

use crate::config::{OptimizerKind, TrainConfig};
use crate::error::Result;

/// Adam's first and second moments of one parameter.
#[derive(Debug)]
enum Moments {
    /// For a contiguous f32 parameter on the CPU: updated in place by one fused pass
    /// ([`super::adam_kernel`]).
    Host { m: Vec<f32>, v: Vec<f32> },
    /// Anywhere else (a GPU, other dtypes): candle tensor arithmetic.
    Tensors { m: Tensor, v: Tensor },
}

impl Moments {
    fn zeros_for(var: &Var) -> Result<Self> {
        let t = var.as_tensor();
        Ok(
            if t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous() {
                Moments::Host {
                    m: vec![0.0; t.elem_count()],
                    v: vec![0.0; t.elem_count()],
                }
            } else {
                let zeros = t.zeros_like()?;
                Moments::Tensors {
                    m: zeros.clone(),
                    v: zeros,
                }
            },
        )
    }

    /// As tensors shaped like `var`, for a checkpoint.
    fn tensors(&self, var: &Var) -> Result<(Tensor, Tensor)> {
        Ok(match self {
            Moments::Host { m, v } => (
                Tensor::from_slice(m, var.shape(), var.device())?,
                Tensor::from_slice(v, var.shape(), var.device())?,
            ),
            Moments::Tensors { m, v } => (m.clone(), v.clone()),
        })
    }

    /// Replaces the moments by checkpointed ones (already shaped and placed like the var).
    fn restore(&mut self, m: Tensor, v: Tensor) -> candle_core::Result<()> {
        match self {
            Moments::Host { m: hm, v: hv } => {
                *hm = m.flatten_all()?.to_vec1()?;
                *hv = v.flatten_all()?.to_vec1()?;
            }
            Moments::Tensors { m: tm, v: tv } => {
                *tm = m;
                *tv = v;
            }
        }
        Ok(())
    }
}

/// Adam with decoupled weight decay (AdamW, Loshchilov & Hutter), β = (0.9, 0.999), ε = 1e-8;
/// the same arithmetic, in the same order, as candle-nn's `AdamW`.
#[derive(Debug)]
pub struct Adam {
    vars: Vec<(Var, Moments)>,
    lr: f64,
    weight_decay: f64,
    step: u64,
}

impl Adam {
    const BETA1: f64 = 0.9;
    const BETA2: f64 = 0.999;
    const EPS: f64 = 1e-8;

    #[cfg(test)]
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// A new optimiser over `vars` with zero moments.
    ///
    /// # Errors
    /// A tensor error from allocation.
    pub fn new(vars: Vec<Var>, lr: f64, weight_decay: f64) -> Result<Self> {
        let vars = vars
            .into_iter()
            .map(|v| Ok((Moments::zeros_for(&v)?, v)))
            .map(|pair: Result<_>| pair.map(|(moments, var)| (var, moments)))
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
        let decay = 1.0 - self.lr * self.weight_decay;
        for (var, moments) in &mut self.vars {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            match moments {
                Moments::Host { m, v } => {
                    // candle rounds an affine's f64 factors with `as f32`; so do we.
                    let constants = AdamConstants {
                        b1: b1 as f32,
                        one_minus_b1: (1.0 - b1) as f32,
                        b2: b2 as f32,
                        one_minus_b2: (1.0 - b2) as f32,
                        scale_m: scale_m as f32,
                        scale_v: scale_v as f32,
                        decay: decay as f32,
                        eps: Self::EPS as f32,
                        lr: self.lr as f32,
                    };
                    let g = g.to_dtype(DType::F32)?.contiguous()?;
                    var.as_tensor().inplace_op2(
                        &g,
                        &AdamInPlace {
                            constants,
                            moments: RefCell::new((m, v)),
                        },
                    )?;
                }
                Moments::Tensors { m, v } => {
                    let next_m = ((&*m * b1)? + (g * (1.0 - b1))?)?;
                    let next_v = ((&*v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
                    let m_hat = (&next_m * scale_m)?;
                    let v_hat = (&next_v * scale_v)?;
                    let decayed = (var.as_tensor() * decay)?;
                    let update = (m_hat / (v_hat.sqrt()? + Self::EPS)?)?;
                    var.set(&(decayed - (update * self.lr)?)?)?;
                    *m = next_m;
                    *v = next_v;
                }
            }
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
    ///
    /// # Errors
    /// A tensor error from copying host moments into tensors.
    pub fn state(&self) -> Result<(Vec<(String, Tensor)>, u64)> {
        Ok(match self {
            Optimizer::Adam(a) => {
                let mut named = Vec::with_capacity(2 * a.vars.len());
                for (i, (var, moments)) in a.vars.iter().enumerate() {
                    let (m, v) = moments.tensors(var)?;
                    named.push((format!("optimizer.{i}.m"), m));
                    named.push((format!("optimizer.{i}.v"), v));
                }
                (named, a.step)
            }
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
        })
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
                for (i, (var, moments)) in a.vars.iter_mut().enumerate() {
                    let m = fetch(format!("optimizer.{i}.m"), var.as_tensor())?;
                    let v = fetch(format!("optimizer.{i}.v"), var.as_tensor())?;
                    moments.restore(m, v).map_err(|e| e.to_string())?;
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

    /// The fused CPU pass against the tensor arithmetic it replaces, bit for bit, on a
    /// parameter that spans several parallel chunks, with weight decay and gradients that
    /// include zeros, negative zeros and a wide range of magnitudes.
    #[test]
    fn fused_update_equals_tensor_arithmetic_bit_for_bit() {
        let rows = super::super::adam_kernel::CHUNK + 41;
        let n = 3 * rows;
        let start: Vec<f32> = crate::test_values::spread(n, 0)
            .into_iter()
            .map(|v| v as f32)
            .collect();
        let fused_var = Var::from_vec(start.clone(), (rows, 3), &Device::Cpu).unwrap();
        let tensor_var = Var::from_vec(start, (rows, 3), &Device::Cpu).unwrap();
        let mut fused = Adam::new(vec![fused_var.clone()], 3e-3, 0.01).unwrap();
        let mut reference = Adam::new(vec![tensor_var.clone()], 3e-3, 0.01).unwrap();
        assert!(matches!(fused.vars[0].1, Moments::Host { .. }));
        let zeros = tensor_var.as_tensor().zeros_like().unwrap();
        reference.vars[0].1 = Moments::Tensors {
            m: zeros.clone(),
            v: zeros,
        };
        let weights: Vec<f32> = (0..n)
            .map(|i| match i % 5 {
                0 => 0.0,
                1 => -0.0,
                2 => 1e-30,
                3 => 1e6,
                _ => -((i % 97) as f32) / 13.0,
            })
            .collect();
        let weights = Tensor::from_vec(weights, (rows, 3), &Device::Cpu).unwrap();
        for step in 0..4 {
            for (var, adam) in [(&fused_var, &mut fused), (&tensor_var, &mut reference)] {
                adam.set_lr(3e-3 / (step + 1) as f64);
                let loss = (var.as_tensor().sqr().unwrap() * &weights)
                    .unwrap()
                    .sum_all()
                    .unwrap();
                adam.step(&loss.backward().unwrap()).unwrap();
            }
            let bits = |v: &Var| -> Vec<u32> {
                let values: Vec<f32> = v.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
                values.iter().map(|x| x.to_bits()).collect()
            };
            assert_eq!(bits(&fused_var), bits(&tensor_var), "step {step}");
        }
        let (a, _) = Optimizer::Adam(fused).state().unwrap();
        let (b, _) = Optimizer::Adam(reference).state().unwrap();
        for ((name, x), (_, y)) in a.iter().zip(&b) {
            let x: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
            let y: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(x, y, "{name}");
        }
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
            let (tensors, count) = first.state().unwrap();
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
