//! One branch: `[Linear → BatchNorm → ReLU → Dropout]* → Linear → L2-normalise`.

use candle_core::{Device, Tensor, Var};
use rand::Rng;

use crate::config::ModelConfig;
use crate::error::Result;
use crate::model::layers::{BatchNorm, Linear, dropout, dropout_shard, l2_normalize};
use crate::parallel::Shard;

/// Looks up a tensor by name and expected shape; the error is a message for the caller to wrap.
pub type TensorSource<'a> = dyn FnMut(&str, &[usize]) -> std::result::Result<Tensor, String> + 'a;

/// A hidden block.
#[derive(Debug, Clone)]
pub(super) struct Block {
    pub(super) linear: Linear,
    pub(super) norm: Option<BatchNorm>,
}

/// The stack of layers that maps one modality's features into the joint space.
#[derive(Debug, Clone)]
pub struct Branch {
    pub(super) blocks: Vec<Block>,
    pub(super) out: Linear,
    pub(super) dropout: f64,
}

impl Branch {
    /// A freshly initialised branch from `d_in` features.
    ///
    /// # Errors
    /// A tensor error from allocation.
    pub fn new(
        d_in: usize,
        cfg: &ModelConfig,
        rng: &mut impl Rng,
        device: &Device,
    ) -> Result<Self> {
        let mut blocks = Vec::with_capacity(cfg.hidden.len());
        let mut width = d_in;
        for &h in &cfg.hidden {
            blocks.push(Block {
                linear: Linear::new(width, h, rng, device)?,
                norm: if cfg.batch_norm {
                    Some(BatchNorm::new(h, device)?)
                } else {
                    None
                },
            });
            width = h;
        }
        Ok(Branch {
            blocks,
            out: Linear::new(width, cfg.dim, rng, device)?,
            dropout: cfg.dropout,
        })
    }

    /// Embeds `x`. In training mode BatchNorm uses (and updates) batch statistics and dropout
    /// draws from `rng`; in evaluation mode (`rng` is `None`) both are deterministic.
    ///
    /// # Shapes
    /// `x: [n, d_in]` → `[n, dim]`, rows of unit norm.
    ///
    /// # Errors
    /// A tensor error when `d_in` disagrees.
    pub fn forward(
        &mut self,
        x: &Tensor,
        rng: Option<&mut rand_chacha::ChaCha8Rng>,
    ) -> Result<Tensor> {
        self.embed(x, rng, None)
    }

    /// The training [`Branch::forward`] of one rank's rows of a data-parallel batch, on
    /// autograd (any device): BatchNorm with the whole batch's statistics, dropout with each
    /// row's factors from its place in the whole batch.
    ///
    /// A rank without rows embeds one padding row of zeros that counts in no sum (the caller
    /// drops its embedding and gives it a zero gradient): candle does not track operations on
    /// empty tensors (they return their input, or zeros), so an empty rank's backward would
    /// skip the collectives the other ranks wait in.
    ///
    /// # Shapes
    /// `x: [shard.rows.len(), d_in]` → `[max(shard.rows.len(), 1), dim]`, rows of unit norm.
    ///
    /// # Errors
    /// A tensor error when `d_in` disagrees; when another rank stopped.
    pub(crate) fn forward_train_shard(
        &mut self,
        x: &Tensor,
        rng: &mut rand_chacha::ChaCha8Rng,
        shard: &Shard,
    ) -> Result<Tensor> {
        if x.dim(0)? > 0 {
            return self.embed(x, Some(rng), Some((shard, true)));
        }
        let padding = Tensor::zeros((1, x.dim(1)?), x.dtype(), x.device())?;
        self.embed(&padding, Some(rng), Some((shard, false)))
    }

    /// The forward; on a rank's rows (`shard`, and whether they count: false for the padding
    /// row) in training.
    fn embed(
        &mut self,
        x: &Tensor,
        mut rng: Option<&mut rand_chacha::ChaCha8Rng>,
        shard: Option<(&Shard, bool)>,
    ) -> Result<Tensor> {
        let train = rng.is_some();
        let mut h = x.clone();
        for (i, block) in self.blocks.iter_mut().enumerate() {
            // The first layer reads the features, whose gradient nobody needs.
            h = if i == 0 {
                block.linear.forward_input(&h)?
            } else {
                block.linear.forward(&h)?
            };
            if let Some(norm) = &mut block.norm {
                h = match shard {
                    Some((shard, counted)) => norm.forward_shard(&h, shard, counted)?,
                    None => norm.forward(&h, train)?,
                };
            }
            h = h.relu()?;
            if let Some(rng) = rng.as_deref_mut() {
                h = match shard {
                    // The padding row takes the factors of the batch's first row.
                    Some((shard, counted)) => {
                        let rows = if counted { shard.rows } else { &[0] };
                        dropout_shard(&h, self.dropout, rng, (rows, shard.total))?
                    }
                    None => dropout(&h, self.dropout, rng)?,
                };
            }
        }
        let out = if self.blocks.is_empty() {
            self.out.forward_input(&h)?
        } else {
            self.out.forward(&h)?
        };
        l2_normalize(&out)
    }

    /// Every tensor of the branch by checkpoint name, with whether the optimiser trains it
    /// (BatchNorm running statistics are not trained by gradient).
    pub fn named(&self, prefix: &str) -> Vec<(String, Var, bool)> {
        let mut out = Vec::new();
        let mut push =
            |name: String, v: &Var, trainable: bool| out.push((name, v.clone(), trainable));
        for (i, b) in self.blocks.iter().enumerate() {
            push(format!("{prefix}.{i}.weight"), &b.linear.weight, true);
            push(format!("{prefix}.{i}.bias"), &b.linear.bias, true);
            if let Some(n) = &b.norm {
                push(format!("{prefix}.{i}.bn.weight"), &n.gamma, true);
                push(format!("{prefix}.{i}.bn.bias"), &n.beta, true);
                push(
                    format!("{prefix}.{i}.bn.running_mean"),
                    &n.running_mean,
                    false,
                );
                push(
                    format!("{prefix}.{i}.bn.running_var"),
                    &n.running_var,
                    false,
                );
            }
        }
        push(format!("{prefix}.out.weight"), &self.out.weight, true);
        push(format!("{prefix}.out.bias"), &self.out.bias, true);
        out
    }

    /// Replaces every tensor of [`Branch::named`] by the one of the same name in `get`.
    ///
    /// # Errors
    /// The name of a missing tensor or a shape mismatch, as a string for the caller to wrap.
    pub fn load(
        &self,
        prefix: &str,
        get: &mut TensorSource<'_>,
    ) -> std::result::Result<(), String> {
        for (name, var, _) in self.named(prefix) {
            let t = get(&name, var.dims())?;
            var.set(&t).map_err(|e| format!("tensor `{name}`: {e}"))?;
        }
        Ok(())
    }
}
