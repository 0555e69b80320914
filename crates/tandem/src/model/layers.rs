//! Layers with explicit parameters, initialised from tandem's own seeded RNG so a run is
//! reproducible (candle's CPU RNG cannot be seeded).

use candle_core::{D, DType, Device, Tensor, Var};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::error::Result;
use crate::parallel::{Shard, group_sum};

fn uniform(rng: &mut impl Rng, n: usize, bound: f64) -> Vec<f32> {
    (0..n)
        .map(|_| rng.random_range(-bound..bound) as f32)
        .collect()
}

/// `y = x Wᵀ + b`, initialised as PyTorch does: `U(-1/√in, 1/√in)`.
#[derive(Debug, Clone)]
pub struct Linear {
    /// `[out, in]`.
    pub weight: Var,
    /// `[out]`.
    pub bias: Var,
}

impl Linear {
    /// A new layer with seeded initialisation.
    ///
    /// # Errors
    /// A tensor error from allocation on `device`.
    pub fn new(d_in: usize, d_out: usize, rng: &mut impl Rng, device: &Device) -> Result<Self> {
        let bound = 1.0 / (d_in as f64).sqrt();
        let weight = Tensor::from_vec(uniform(rng, d_in * d_out, bound), (d_out, d_in), device)?;
        let bias = Tensor::from_vec(uniform(rng, d_out, bound), d_out, device)?;
        Ok(Linear {
            weight: Var::from_tensor(&weight)?,
            bias: Var::from_tensor(&bias)?,
        })
    }

    /// # Shapes
    /// `x: [n, in]` → `[n, out]`.
    ///
    /// # Errors
    /// A tensor error when `in` disagrees.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.matmul(&self.weight.as_tensor().t()?)?
            .broadcast_add(self.bias.as_tensor())?)
    }
    /// [`Linear::forward`] on raw input features: the same value, but backward skips the
    /// gradient with respect to `x` (`model::input_linear`).
    ///
    /// # Shapes
    /// `x: [n, in]` → `[n, out]`.
    ///
    /// # Errors
    /// A tensor error when `in` disagrees.
    pub fn forward_input(&self, x: &Tensor) -> Result<Tensor> {
        Ok(
            super::input_linear::input_times_weight_t(x, self.weight.as_tensor())?
                .broadcast_add(self.bias.as_tensor())?,
        )
    }
}

/// Batch normalisation over the rows of a batch, with running statistics for evaluation
/// (momentum 0.1, eps 1e-5, unbiased running variance: PyTorch's defaults).
#[derive(Debug, Clone)]
pub struct BatchNorm {
    /// Scale, `[features]`.
    pub gamma: Var,
    /// Shift, `[features]`.
    pub beta: Var,
    /// Running mean, `[features]`; updated in place by training forwards, not by gradient.
    pub running_mean: Var,
    /// Running variance, `[features]`; updated in place by training forwards, not by gradient.
    pub running_var: Var,
}

pub(crate) const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;

impl BatchNorm {
    /// Identity scale and zero shift; running mean 0 and variance 1.
    ///
    /// # Errors
    /// A tensor error from allocation.
    pub fn new(features: usize, device: &Device) -> Result<Self> {
        Ok(BatchNorm {
            gamma: Var::ones(features, DType::F32, device)?,
            beta: Var::zeros(features, DType::F32, device)?,
            running_mean: Var::zeros(features, DType::F32, device)?,
            running_var: Var::ones(features, DType::F32, device)?,
        })
    }

    /// Normalises with batch statistics and updates the running ones when `train`; with the
    /// running statistics otherwise.
    ///
    /// # Shapes
    /// `x: [n, features]` → `[n, features]`.
    ///
    /// # Errors
    /// A tensor error when shapes disagree.
    pub fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (mean, var) = if train {
            let n = x.dim(0)?;
            let mean = x.mean_keepdim(0)?;
            let centered = x.broadcast_sub(&mean)?;
            let var = centered.sqr()?.mean_keepdim(0)?;
            self.update_running(&mean.detach().squeeze(0)?, &var.detach().squeeze(0)?, n)?;
            (mean, var)
        } else {
            (
                self.running_mean.unsqueeze(0)?,
                self.running_var.unsqueeze(0)?,
            )
        };
        self.normalise(x, &mean, &var)
    }

    /// [`BatchNorm::forward`] in training on one rank's rows of a data-parallel batch: the
    /// statistics are the whole batch's, from column sums summed over the ranks (and their
    /// gradients summed back), so the rows come out as on one device with the whole batch.
    ///
    /// Without `counted`, `x` is a rank's padding row (see [`crate::model::Branch`]'s shard
    /// forward): it adds zeros to the sums, still through the graph, so that the rank's
    /// backward takes part in the same collectives as the others'.
    ///
    /// # Shapes
    /// `x: [shard.rows.len(), features]` (one row when not `counted`) → the same.
    ///
    /// # Errors
    /// A tensor error when shapes disagree; when another rank stopped.
    pub(crate) fn forward_shard(
        &mut self,
        x: &Tensor,
        shard: &Shard,
        counted: bool,
    ) -> Result<Tensor> {
        let total = shard.total as f64;
        let column_sum = |t: &Tensor| -> Result<Tensor> {
            let mut sum = t.sum_keepdim(0)?;
            if !counted {
                // Times a zero tensor: candle's backward stops at a scaling by the number 0.
                sum = (&sum * sum.zeros_like()?)?;
            }
            Ok((group_sum(shard.collective, &sum)? / total)?)
        };
        let mean = column_sum(x)?;
        let centered = x.broadcast_sub(&mean)?;
        let var = column_sum(&centered.sqr()?)?;
        self.update_running(
            &mean.detach().squeeze(0)?,
            &var.detach().squeeze(0)?,
            shard.total,
        )?;
        self.normalise(x, &mean, &var)
    }

    /// `(x − mean) / √(var + ε) · γ + β`, `mean` and `var` as `[1, features]`.
    fn normalise(&self, x: &Tensor, mean: &Tensor, var: &Tensor) -> Result<Tensor> {
        let x = x
            .broadcast_sub(mean)?
            .broadcast_div(&(var + BN_EPS)?.sqrt()?)?;
        Ok(x.broadcast_mul(self.gamma.as_tensor())?
            .broadcast_add(self.beta.as_tensor())?)
    }
}

impl BatchNorm {
    /// Moves the running statistics towards a batch's: `mean` and the biased `var` of `n` rows
    /// (the running variance takes the unbiased one, as PyTorch's does).
    ///
    /// # Shapes
    /// `mean: [features]`, `var: [features]`.
    ///
    /// # Errors
    /// A tensor error when shapes disagree.
    pub(crate) fn update_running(&self, mean: &Tensor, var: &Tensor, n: usize) -> Result<()> {
        let unbiased = (var * (n as f64 / (n.max(2) - 1) as f64))?;
        self.running_mean.set(
            &((self.running_mean.as_tensor() * (1.0 - BN_MOMENTUM))? + (mean * BN_MOMENTUM)?)?,
        )?;
        self.running_var.set(
            &((self.running_var.as_tensor() * (1.0 - BN_MOMENTUM))? + (unbiased * BN_MOMENTUM)?)?,
        )?;
        Ok(())
    }
}

/// Divides each row by its Euclidean norm.
///
/// # Shapes
/// `x: [n, d]` → `[n, d]`.
///
/// # Errors
/// A tensor error from the arithmetic.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = (x.sqr()?.sum_keepdim(D::Minus1)? + 1e-12)?.sqrt()?;
    Ok(x.broadcast_div(&norm)?)
}

/// Inverted dropout with a mask from tandem's seeded RNG.
///
/// # Errors
/// A tensor error from allocation.
pub fn dropout(x: &Tensor, p: f64, rng: &mut ChaCha8Rng) -> Result<Tensor> {
    if p == 0.0 {
        return Ok(x.clone());
    }
    let mask = dropout_mask(x.elem_count(), p, rng);
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    Ok((x * mask)?)
}

/// [`dropout`] on one rank's rows of a data-parallel batch: each row takes the factors of
/// its place in the whole batch (`rows` of `total`), and `rng` moves past the whole batch's
/// draws, as on one device.
///
/// # Shapes
/// `x: [rows.len(), features]` → the same.
///
/// # Errors
/// A tensor error from allocation.
pub(crate) fn dropout_shard(
    x: &Tensor,
    p: f64,
    rng: &mut ChaCha8Rng,
    (rows, total): (&[usize], usize),
) -> Result<Tensor> {
    if p == 0.0 {
        return Ok(x.clone());
    }
    let width = x.dim(1)?;
    let draws = DropoutDraws::take(total * width, p, rng);
    let mut mask = vec![0f32; rows.len() * width];
    mask.par_chunks_mut(width.max(1))
        .zip(rows.par_iter())
        .for_each(|(factors, &row)| draws.fill(row * width, factors));
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    Ok((x * mask)?)
}

/// Inverted dropout's factors for `len` elements in row-major order: `1 / (1 - p)` kept, `0`
/// dropped, one `f64` draw from `rng` each, leaving `rng` where drawing them one by one would.
/// (One by one this took 45 ms of each paper-size forward, on one core: chunks are drawn in
/// parallel, see [`DropoutDraws`].)
pub(crate) fn dropout_mask(len: usize, p: f64, rng: &mut ChaCha8Rng) -> Vec<f32> {
    const CHUNK: usize = 1 << 16;
    let draws = DropoutDraws::take(len, p, rng);
    let mut mask = vec![0f32; len];
    mask.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(chunk, factors)| draws.fill(chunk * CHUNK, factors));
    mask
}

/// The dropout draws of `len` elements, taken from a generator, to be read from any element
/// on: ChaCha's stream can be entered at any word, and every `f64` takes two 32-bit words, so
/// draw `k` reads words `start + 2k` and `start + 2k + 1`. Tasks that each cover some rows can
/// then draw their own factors in parallel, inside the pass that uses them.
pub(crate) struct DropoutDraws {
    origin: ChaCha8Rng,
    start: u128,
    keep: f64,
    scale: f32,
}

impl DropoutDraws {
    /// Takes `len` draws with drop probability `p` from `rng`, which is left where drawing
    /// them one by one would leave it.
    pub(crate) fn take(len: usize, p: f64, rng: &mut ChaCha8Rng) -> Self {
        let start = rng.get_word_pos();
        let draws = DropoutDraws {
            origin: rng.clone(),
            start,
            keep: 1.0 - p,
            scale: (1.0 / (1.0 - p)) as f32,
        };
        rng.set_word_pos(start + 2 * len as u128);
        draws
    }

    /// Writes the factors of elements `first`, `first + 1`, … into `factors`. The generator
    /// fills all their words in one call and the comparisons then run over the buffer: drawing
    /// one `f64` per element through the generator's buffer checks kept the pass that used
    /// them scalar. The values are `rand`'s own: its `f64` is the top 53 bits of a `u64` (two
    /// words, the first one low) times `2⁻⁵³`.
    pub(crate) fn fill(&self, first: usize, factors: &mut [f32]) {
        let mut local = self.origin.clone();
        local.set_word_pos(self.start + 2 * first as u128);
        let mut words = vec![0u64; factors.len()];
        local.fill(&mut words[..]);
        let unit = 1.0 / (1u64 << 53) as f64;
        let (keep, scale) = (self.keep, self.scale);
        for (factor, word) in factors.iter_mut().zip(&words) {
            *factor = if unit * ((word >> 11) as f64) < keep {
                scale
            } else {
                0.0
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngCore, SeedableRng};

    /// The parallel mask equals drawing one `f64` per element in order, from any position of
    /// the stream (an odd word included), and leaves the generator where that would.
    #[test]
    fn dropout_mask_equals_sequential_draws() {
        let sequential = |len: usize, p: f64, rng: &mut ChaCha8Rng| -> Vec<f32> {
            let keep = 1.0 - p;
            (0..len)
                .map(|_| {
                    if rng.random::<f64>() < keep {
                        (1.0 / keep) as f32
                    } else {
                        0.0
                    }
                })
                .collect()
        };
        for (len, skip_words) in [
            (0, 0),
            (1, 1),
            (7, 0),
            (65_536, 3),
            (200_003, 1),
            (131_072, 16),
        ] {
            let mut a = ChaCha8Rng::seed_from_u64(len as u64);
            for _ in 0..skip_words {
                a.next_u32();
            }
            let mut b = a.clone();
            let parallel = dropout_mask(len, 0.3, &mut a);
            assert_eq!(parallel, sequential(len, 0.3, &mut b), "len {len}");
            assert_eq!(a.next_u64(), b.next_u64(), "generator state after {len}");
            if len > 1000 {
                let kept = parallel.iter().filter(|&&f| f > 0.0).count() as f64 / len as f64;
                assert!((kept - 0.7).abs() < 0.01, "kept {kept}");
            }
        }
    }

    #[test]
    fn batch_norm_train_normalises_and_updates_running_stats() {
        let dev = Device::Cpu;
        let mut bn = BatchNorm::new(2, &dev).unwrap();
        let x = Tensor::new(&[[1f32, 10.], [3., 30.]], &dev).unwrap();
        let y: Vec<Vec<f32>> = bn.forward(&x, true).unwrap().to_vec2().unwrap();
        // Hand-computed: mean (2, 20), biased var (1, 100) → ±1/sqrt(1+eps) etc.
        assert!((y[0][0] + 1.0).abs() < 1e-4 && (y[1][1] - 1.0).abs() < 1e-4);
        let rm: Vec<f32> = bn.running_mean.to_vec1().unwrap();
        let rv: Vec<f32> = bn.running_var.to_vec1().unwrap();
        assert!((rm[0] - 0.2).abs() < 1e-6 && (rm[1] - 2.0).abs() < 1e-5);
        // Unbiased variance (2, 200): 0.9 * 1 + 0.1 * 2 = 1.1; 0.9 + 20 = 20.9.
        assert!((rv[0] - 1.1).abs() < 1e-5 && (rv[1] - 20.9).abs() < 1e-4);
        // Eval mode uses the running statistics.
        let e: Vec<Vec<f32>> = bn.forward(&x, false).unwrap().to_vec2().unwrap();
        assert!((e[0][0] - (1.0 - 0.2) / (1.1f32 + 1e-5).sqrt()).abs() < 1e-5);
    }

    #[test]
    fn dropout_keeps_expectation_and_is_seeded() {
        let x = Tensor::ones((100, 100), DType::F32, &Device::Cpu).unwrap();
        let mut r1 = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut r2 = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let a = dropout(&x, 0.5, &mut r1).unwrap();
        let b = dropout(&x, 0.5, &mut r2).unwrap();
        let mean: f32 = a.mean_all().unwrap().to_scalar().unwrap();
        assert!((mean - 1.0).abs() < 0.05, "{mean}");
        let diff: f32 = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(diff, 0.0);
    }

    #[test]
    fn rows_are_unit_norm() {
        let x = Tensor::new(&[[3f32, 4.], [0.5, 0.]], &Device::Cpu).unwrap();
        let y: Vec<Vec<f32>> = l2_normalize(&x).unwrap().to_vec2().unwrap();
        assert_eq!(y, vec![vec![0.6, 0.8], vec![1.0, 0.0]]);
    }
}
