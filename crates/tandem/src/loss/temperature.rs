//! The learnable scalars of the softmax and sigmoid losses: a logit scale (1 / temperature),
//! trained in log space as CLIP does, and SigLIP's bias.

use candle_core::{DType, Device, Tensor, Var};

use crate::config::LossConfig;
use crate::error::Result;

/// `logit = exp(log_scale) · similarity + bias`.
#[derive(Debug, Clone)]
pub struct Temperature {
    /// Log of the logit scale; CLIP starts at `ln(1 / 0.07)`.
    pub log_scale: Var,
    /// Additive logit bias (SigLIP starts at -10; the softmax loss ignores it).
    pub bias: Var,
    /// Whether both are trained.
    pub learnable: bool,
    /// Upper clamp of `log_scale`, applied after every step (CLIP: `ln 100`).
    pub max_log_scale: f64,
}

impl Temperature {
    /// The scalars `cfg` starts from, as f32 tensors on `device`.
    ///
    /// # Errors
    /// A tensor error from allocation.
    pub fn new(cfg: &LossConfig, device: &Device) -> Result<Self> {
        Self::with_values(
            (1.0 / cfg.initial_temperature()).ln(),
            cfg.bias,
            cfg.learn_temperature,
            cfg.max_logit_scale.ln(),
            DType::F32,
            device,
        )
    }

    /// Explicit starting values, for tests and f64 checks.
    ///
    /// # Errors
    /// A tensor error from allocation.
    pub fn with_values(
        log_scale: f64,
        bias: f64,
        learnable: bool,
        max_log_scale: f64,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let scalar = |v: f64| -> Result<Var> {
            Ok(Var::from_tensor(&Tensor::new(v, device)?.to_dtype(dtype)?)?)
        };
        Ok(Temperature {
            log_scale: scalar(log_scale)?,
            bias: scalar(bias)?,
            learnable,
            max_log_scale,
        })
    }

    /// The checkpoint names of both scalars, with whether they are trained.
    pub fn named(&self) -> Vec<(String, Var, bool)> {
        vec![
            (
                "loss.log_scale".into(),
                self.log_scale.clone(),
                self.learnable,
            ),
            ("loss.bias".into(), self.bias.clone(), self.learnable),
        ]
    }

    /// The current logit scale `exp(log_scale)`.
    ///
    /// # Errors
    /// A tensor error.
    pub fn scale(&self) -> Result<f64> {
        Ok(self
            .log_scale
            .as_tensor()
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?
            .exp())
    }

    /// The current bias.
    ///
    /// # Errors
    /// A tensor error.
    pub fn bias_value(&self) -> Result<f64> {
        Ok(self
            .bias
            .as_tensor()
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?)
    }

    /// Clamps `log_scale` into `[0, max_log_scale]`, as CLIP does after every optimiser step.
    ///
    /// # Errors
    /// A tensor error.
    pub fn clamp(&self) -> Result<()> {
        let t = self.log_scale.as_tensor();
        self.log_scale.set(&t.clamp(0.0, self.max_log_scale)?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_initialisation_and_clamp() {
        let t = Temperature::new(&LossConfig::default(), &Device::Cpu).unwrap();
        assert!((t.scale().unwrap() - 1.0 / 0.07).abs() < 1e-4);
        t.log_scale
            .set(&Tensor::new(9.0f32, &Device::Cpu).unwrap())
            .unwrap();
        t.clamp().unwrap();
        assert!((t.scale().unwrap() - 100.0).abs() < 1e-3);
        assert_eq!(t.named().len(), 2);
    }
}
