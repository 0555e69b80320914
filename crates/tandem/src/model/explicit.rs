//! A branch's training forward and backward written out by hand for the CPU, in place of
//! candle's autograd, which for this network spends more time around the matrix products
//! than in them: every gradient is accumulated into a fresh zero tensor (`zeros + grad`, one
//! single-threaded pass each, and for a weight's gradient, which candle's matmul backward
//! leaves transposed, a strided one: 0.2 s of the text branch's 0.4 s weight gradient at the
//! paper's size), and BatchNorm, ReLU and dropout are a dozen single-threaded passes with a
//! fresh allocation each. Here the matrix products are still candle's (the same gemm), the
//! weight gradients come out of the gemm in their own `[out, in]` layout, and everything else
//! is a few fused passes split across cores with rayon. The values equal autograd's up to f32
//! rounding (checked in the tests against [`Branch::forward`] and its autograd gradients).

use candle_core::backprop::GradStore;
use std::ops::Range;

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::model::Branch;
use crate::model::gemm::{product, with_values};
use crate::model::layers::{BN_EPS, DropoutDraws};
use crate::parallel::Shard;

/// Rows per task of a row-wise pass.
const ROWS_PER_TASK: usize = 16;
/// Columns per task of a column reduction: each task walks every row over its columns.
const COLUMNS_PER_TASK: usize = 128;

/// Whether the explicit path can run on these features: f32 on the CPU.
pub(crate) fn supported(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// What one hidden block's forward keeps for its backward.
struct BlockTape {
    /// The block's input, `[n, in]` (for the weight gradient).
    input: Tensor,
    /// BatchNorm's normalised values and `std`, when the block has BatchNorm.
    normalised: Option<Normalised>,
    /// `∂a/∂y` of ReLU and dropout together: the dropout factor where `y ≥ 0`, else 0.
    gate: Vec<f32>,
}

/// BatchNorm's normalised values `(z - mean) / std`, `[n, h]`, and `std` per column.
type Normalised = (Vec<f32>, Vec<f32>);

/// What a branch's explicit forward keeps for its backward.
pub(crate) struct BranchTape {
    blocks: Vec<BlockTape>,
    /// The output layer's input, `[n, w]`.
    out_input: Tensor,
    /// The embeddings, `[n, dim]`, unit rows.
    embedded: Tensor,
    /// The output layer's row norms before normalisation.
    norms: Vec<f32>,
}

/// `K` column sums in one pass over a row-major `[rows, cols]` layout, the columns split
/// across tasks: `add_row(row, columns, sums)` adds row `row`'s values in `columns` to
/// `sums[k]` (indexed from the range's start). Every column is summed over the rows in order,
/// so the sums do not depend on the split; written over slices, the additions vectorise across
/// columns (a closure per element did not, and ran at about 1.4 GB/s).
fn column_sums<const K: usize>(
    rows: usize,
    cols: usize,
    add_row: impl Fn(usize, Range<usize>, &mut [Vec<f32>; K]) + Sync,
) -> [Vec<f32>; K] {
    let tasks: Vec<[Vec<f32>; K]> = (0..cols.div_ceil(COLUMNS_PER_TASK))
        .into_par_iter()
        .map(|task| {
            let first = task * COLUMNS_PER_TASK;
            let columns = first..COLUMNS_PER_TASK.min(cols - first) + first;
            let mut sums: [Vec<f32>; K] = std::array::from_fn(|_| vec![0f32; columns.len()]);
            for row in 0..rows {
                add_row(row, columns.clone(), &mut sums);
            }
            sums
        })
        .collect();
    std::array::from_fn(|k| tasks.iter().flat_map(|t| t[k].iter().copied()).collect())
}

/// Row `row` of a row-major matrix with `cols` columns.
fn row_of(values: &[f32], row: usize, cols: usize) -> &[f32] {
    &values[row * cols..][..cols]
}

/// Row `row`'s values in `columns` of a row-major matrix with `cols` columns.
fn in_row<'a>(values: &'a [f32], row: usize, cols: usize, columns: &Range<usize>) -> &'a [f32] {
    &row_of(values, row, cols)[columns.clone()]
}

/// A fresh `[rows, cols]` buffer, row `row` written by `fill(row, values)`, rows split across
/// tasks. The callers write each row with loops over slices of their inputs, which vectorise
/// (a closure per element, with its index bounds-checked in every input, did not).
fn map_rows(rows: usize, cols: usize, fill: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    let mut out = vec![0f32; rows * cols];
    out.par_chunks_mut(cols.max(1) * ROWS_PER_TASK)
        .enumerate()
        .for_each(|(task, chunk)| {
            for (offset, values) in chunk.chunks_mut(cols.max(1)).enumerate() {
                fill(task * ROWS_PER_TASK + offset, values);
            }
        });
    out
}

/// `buffer` in chunks of `len`, or `tasks` times nothing when it is empty (a pass that writes
/// it only in some configurations).
fn chunks_or_none(buffer: &mut [f32], len: usize, tasks: usize) -> Vec<Option<&mut [f32]>> {
    if buffer.is_empty() {
        (0..tasks).map(|_| None).collect()
    } else {
        buffer.chunks_mut(len).map(Some).collect()
    }
}

/// BatchNorm's batch statistics of `z + bias` per column: mean and biased variance, in two
/// passes as candle's `mean_keepdim` then `sqr().mean_keepdim()` compute them.
fn batch_statistics(
    z: &[f32],
    bias: &[f32],
    n: usize,
    h: usize,
    shard: Option<&Shard>,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let scale = (1.0 / shard.map_or(n, |s| s.total) as f64) as f32;
    let [mut mean] = column_sums(n, h, |row, columns, [sums]| {
        let z = in_row(z, row, h, &columns);
        for ((sum, z), b) in sums.iter_mut().zip(z).zip(&bias[columns]) {
            *sum += z + b;
        }
    });
    if let Some(shard) = shard {
        shard.collective.all_reduce_sum(&mut mean)?;
    }
    let mean: Vec<f32> = mean.into_iter().map(|s| s * scale).collect();
    let [mut var] = column_sums(n, h, |row, columns, [sums]| {
        let z = in_row(z, row, h, &columns);
        let (bias, mean) = (&bias[columns.clone()], &mean[columns]);
        for (((sum, z), b), m) in sums.iter_mut().zip(z).zip(bias).zip(mean) {
            let c = z + b - m;
            *sum += c * c;
        }
    });
    if let Some(shard) = shard {
        shard.collective.all_reduce_sum(&mut var)?;
    }
    Ok((mean, var.into_iter().map(|s| s * scale).collect()))
}

/// One hidden block after its product `z = x Wᵀ` (`[n, h]` values): bias, BatchNorm on batch
/// statistics (updating the running ones), ReLU and dropout in one pass over the rows, which
/// writes what the backward needs (normalised values, the gate) and the activations. Nothing
/// in between is stored: each separate pass read and wrote all of `[n, h]` again.
fn block_forward(
    block: &mut crate::model::branch::Block,
    z: &[f32],
    (n, h): (usize, usize),
    dropout: f64,
    rng: &mut rand_chacha::ChaCha8Rng,
    shard: Option<&Shard>,
) -> Result<(Option<Normalised>, Vec<f32>, Vec<f32>)> {
    let device = &candle_core::Device::Cpu;
    let total = shard.map_or(n, |s| s.total);
    let bias: Vec<f32> = block.linear.bias.as_tensor().to_vec1()?;
    // With BatchNorm, per column: y = (z + b − mean) / std · γ + β; without, y = z + b.
    let (mean, gamma, beta, std) = match &block.norm {
        Some(norm) => {
            let (mean, var) = batch_statistics(z, &bias, n, h, shard)?;
            norm.update_running(
                &Tensor::from_slice(&mean, h, device)?,
                &Tensor::from_slice(&var, h, device)?,
                total,
            )?;
            let std: Vec<f32> = var.iter().map(|v| (v + BN_EPS as f32).sqrt()).collect();
            let gamma: Vec<f32> = norm.gamma.as_tensor().to_vec1()?;
            let beta: Vec<f32> = norm.beta.as_tensor().to_vec1()?;
            (mean, gamma, beta, Some(std))
        }
        None => (Vec::new(), Vec::new(), Vec::new(), None),
    };
    // The whole batch's draws: a rank's rows take their global rows' places in the stream.
    let draws = (dropout > 0.0).then(|| DropoutDraws::take(total * h, dropout, rng));
    let mut xhat = vec![0f32; if std.is_some() { n * h } else { 0 }];
    let mut gate = vec![0f32; n * h];
    let mut activated = vec![0f32; n * h];
    let chunk = h.max(1) * ROWS_PER_TASK;
    let tasks = (n * h).div_ceil(chunk);
    chunks_or_none(&mut xhat, chunk, tasks)
        .into_par_iter()
        .zip(gate.par_chunks_mut(chunk))
        .zip(activated.par_chunks_mut(chunk))
        .enumerate()
        .for_each(|(task, ((mut xhat, gate), activated))| {
            let first = task * chunk;
            // The task's dropout factors, drawn in bulk before the arithmetic, so that the
            // loops below have no generator call in them and vectorise.
            let mut factors = Vec::new();
            if let Some(draws) = &draws {
                factors.resize(gate.len(), 0f32);
                match shard {
                    None => draws.fill(first, &mut factors),
                    Some(shard) => {
                        for (k, row) in factors.chunks_mut(h.max(1)).enumerate() {
                            draws.fill(shard.rows[first / h.max(1) + k] * h, row);
                        }
                    }
                }
            }
            for k in (0..gate.len()).step_by(h.max(1)) {
                let z = &z[first + k..first + k + h];
                let (gate, activated) = (&mut gate[k..k + h], &mut activated[k..k + h]);
                // y first (into `activated`), then ReLU and dropout over it.
                match (&std, xhat.as_deref_mut()) {
                    (Some(std), Some(xhat)) => {
                        let xhat = &mut xhat[k..k + h];
                        for col in 0..h {
                            let x = (z[col] + bias[col] - mean[col]) / std[col];
                            xhat[col] = x;
                            activated[col] = x * gamma[col] + beta[col];
                        }
                    }
                    _ => {
                        for col in 0..h {
                            activated[col] = z[col] + bias[col];
                        }
                    }
                }
                let keep = factors.get(k..k + h);
                for col in 0..h {
                    let y = activated[col];
                    let keep = keep.map_or(1.0, |keep| keep[col]);
                    gate[col] = if y >= 0.0 { keep } else { 0.0 };
                    activated[col] = y.max(0.0) * keep;
                }
            }
        });
    Ok((std.map(|std| (xhat, std)), gate, activated))
}

/// The training forward of `branch` on `x` (BatchNorm on batch statistics, updating the
/// running ones; dropout drawn from `rng` in the same order as [`Branch::forward`]).
///
/// # Shapes
/// `x: [n, d_in]` → `[n, dim]`, unit rows, not tracked by autograd.
///
/// # Errors
/// A tensor error when `d_in` disagrees or `x` is not f32 on the CPU.
pub(crate) fn forward(
    branch: &mut Branch,
    x: &Tensor,
    rng: &mut rand_chacha::ChaCha8Rng,
    shard: Option<&Shard>,
) -> Result<(Tensor, BranchTape)> {
    let n = x.dim(0)?;
    let device = x.device().clone();
    let mut input = x.detach();
    let mut blocks = Vec::with_capacity(branch.blocks.len());
    for block in &mut branch.blocks {
        let z = product(&input, &block.linear.weight.as_tensor().detach().t()?)?;
        let h = z.dim(1)?;
        let (normalised, gate, activated) = with_values(&z, |z| {
            block_forward(block, z, (n, h), branch.dropout, rng, shard)
        })??;
        blocks.push(BlockTape {
            input,
            normalised,
            gate,
        });
        input = Tensor::from_vec(activated, (n, h), &device)?;
    }
    // The output layer, its bias and the row normalisation in one pass per row.
    let e = product(&input, &branch.out.weight.as_tensor().detach().t()?)?;
    let dim = e.dim(1)?;
    let bias: Vec<f32> = branch.out.bias.to_vec1()?;
    let mut embedded = vec![0f32; n * dim];
    let mut norms = vec![0f32; n];
    with_values(&e, |e| {
        embedded
            .par_chunks_mut(dim.max(1))
            .zip(e.par_chunks(dim.max(1)))
            .zip(norms.par_iter_mut())
            .for_each(|((out, e), norm)| {
                for ((o, v), b) in out.iter_mut().zip(e).zip(&bias) {
                    *o = v + b;
                }
                *norm = (out.iter().map(|v| v * v).sum::<f32>() + 1e-12).sqrt();
                out.iter_mut().for_each(|o| *o /= *norm);
            })
    })?;
    let embedded = Tensor::from_vec(embedded, (n, dim), &device)?;
    Ok((
        embedded.clone(),
        BranchTape {
            blocks,
            out_input: input,
            embedded,
            norms,
        },
    ))
}

/// Adds `grad` for `var` to `grads` (summing with one already there).
fn accumulate(grads: &mut GradStore, var: &Tensor, grad: Tensor) -> Result<()> {
    let total = match grads.remove(var) {
        Some(previous) => (previous + grad)?,
        None => grad,
    };
    grads.insert(var, total);
    Ok(())
}

/// The weight gradients of a linear layer from `dz` (`[n, out]`): `dW = dzᵀ x` in `[out, in]`
/// layout straight from the gemm, `db = Σ_rows dz`; returns `dz` as a tensor for the input
/// gradient.
fn linear_backward(
    dz: Vec<f32>,
    input: &Tensor,
    layer: &crate::model::Linear,
    grads: &mut GradStore,
) -> Result<Tensor> {
    let (n, cols) = (input.dim(0)?, layer.bias.dim(0)?);
    let [db] = column_sums(n, cols, |row, columns, [sums]| {
        for (sum, d) in sums.iter_mut().zip(in_row(&dz, row, cols, &columns)) {
            *sum += d;
        }
    });
    let dz = Tensor::from_vec(dz, (n, cols), input.device())?;
    let dw = product(&dz.t()?, input)?;
    accumulate(grads, layer.weight.as_tensor(), dw)?;
    accumulate(
        grads,
        layer.bias.as_tensor(),
        Tensor::from_vec(db, cols, input.device())?,
    )?;
    Ok(dz)
}

/// The backward of [`forward`]: from `grad = dL/d(embeddings)` adds every trainable tensor's
/// gradient to `grads`. No gradient for the raw features.
///
/// # Shapes
/// `grad: [n, dim]`.
///
/// # Errors
/// A tensor error when `grad`'s shape disagrees with the tape.
pub(crate) fn backward(
    branch: &Branch,
    tape: BranchTape,
    grad: &Tensor,
    grads: &mut GradStore,
    shard: Option<&Shard>,
) -> Result<()> {
    let grad = grad.to_dtype(DType::F32)?.contiguous()?;
    let (n, dim) = grad.dims2()?;
    let de = with_values(&tape.embedded, |u| {
        with_values(&grad, |du| {
            // d/de of e / ‖e‖: (du − u (u·du)) / ‖e‖, row by row.
            let dots: Vec<f32> = u
                .par_chunks(dim.max(1))
                .zip(du.par_chunks(dim.max(1)))
                .map(|(u, du)| u.iter().zip(du).map(|(a, b)| a * b).sum())
                .collect();
            map_rows(n, dim, |row, out| {
                let (u, du) = (row_of(u, row, dim), row_of(du, row, dim));
                let (dot, norm) = (dots[row], tape.norms[row]);
                for ((o, du), u) in out.iter_mut().zip(du).zip(u) {
                    *o = (du - u * dot) / norm;
                }
            })
        })
    })??;
    let mut upstream = linear_backward(de, &tape.out_input, &branch.out, grads)?;
    let mut next_weight = branch.out.weight.as_tensor().detach();
    for (block, saved) in branch.blocks.iter().zip(tape.blocks).rev() {
        // dL/d(activation) of this block, `[n, h]`.
        let da = product(&upstream, &next_weight)?;
        let h = da.dim(1)?;
        let dz = with_values(&da, |da| -> Result<Vec<f32>> {
            let (Some(norm), Some((xhat, std))) = (&block.norm, &saved.normalised) else {
                // dL/dz = dL/dy, the gate applied to dL/da.
                return Ok(map_rows(n, h, |row, out| {
                    let (da, gate) = (row_of(da, row, h), row_of(&saved.gate, row, h));
                    for ((o, da), gate) in out.iter_mut().zip(da).zip(gate) {
                        *o = da * gate;
                    }
                }));
            };
            let [dbeta, dgamma] = column_sums(n, h, |row, columns, [dbeta, dgamma]| {
                let [da, gate, xhat] =
                    [da, &saved.gate[..], &xhat[..]].map(|v| in_row(v, row, h, &columns));
                for ((((b, g), da), gate), x) in dbeta
                    .iter_mut()
                    .zip(dgamma.iter_mut())
                    .zip(da)
                    .zip(gate)
                    .zip(xhat)
                {
                    let d = da * gate;
                    *b += d;
                    *g += d * x;
                }
            });
            // With a rank's rows, the batch means are over the whole batch: the sums of every
            // rank. The rank's own sums stay its share of γ's and β's gradients.
            let (dbeta_all, dgamma_all) = match shard {
                None => (dbeta.clone(), dgamma.clone()),
                Some(shard) => {
                    let mut both = [&dbeta[..], &dgamma[..]].concat();
                    shard.collective.all_reduce_sum(&mut both)?;
                    let dgamma_all = both.split_off(h);
                    (both, dgamma_all)
                }
            };
            let gamma: Vec<f32> = norm.gamma.as_tensor().to_vec1()?;
            let inv_n = 1.0 / shard.map_or(n, |s| s.total) as f32;
            // dz = γ/σ · (dy − mean(dy) − x̂ · mean(dy x̂)), with dy = da · gate recomputed here
            // rather than stored. The per-column factors are computed once; each is the same
            // f32 operation as in the per-element formula, so the same bits.
            let scale: Vec<f32> = gamma.iter().zip(std).map(|(g, s)| g / s).collect();
            let mean_dy: Vec<f32> = dbeta_all.iter().map(|b| b * inv_n).collect();
            let dz = map_rows(n, h, |row, out| {
                let [da, gate, xhat] = [da, &saved.gate[..], &xhat[..]].map(|v| row_of(v, row, h));
                for col in 0..h {
                    let dy = da[col] * gate[col];
                    out[col] =
                        scale[col] * (dy - mean_dy[col] - xhat[col] * dgamma_all[col] * inv_n);
                }
            });
            let device = saved.input.device();
            accumulate(
                grads,
                norm.gamma.as_tensor(),
                Tensor::from_vec(dgamma, h, device)?,
            )?;
            accumulate(
                grads,
                norm.beta.as_tensor(),
                Tensor::from_vec(dbeta, h, device)?,
            )?;
            Ok(dz)
        })??;
        upstream = linear_backward(dz, &saved.input, &block.linear, grads)?;
        next_weight = block.linear.weight.as_tensor().detach();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use candle_core::Device;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// `max |a − b|` over `max |b|`; below an absolute 1e-6 everything is rounding noise (a
    /// hidden layer's bias gradient under BatchNorm is zero in exact arithmetic).
    fn max_relative(a: &Tensor, b: &Tensor) -> f32 {
        let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-2);
        a.iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs() / scale))
    }

    /// Forward values, the running statistics, the dropout masks and every trainable
    /// tensor's gradient equal autograd's through [`Branch::forward`], for each architecture
    /// the config allows: no hidden layer, one or two, with and without BatchNorm and dropout.
    #[test]
    fn equals_autograd_for_every_architecture() {
        let device = Device::Cpu;
        // Rows: one task of a row pass, and several (37 > ROWS_PER_TASK: each task draws its
        // dropout factors from its own place in the stream).
        let cases: [(&[usize], bool, f64, usize); 8] = [
            (&[], true, 0.5, 11),
            (&[24], true, 0.5, 11),
            (&[24], false, 0.5, 11),
            (&[24], true, 0.0, 11),
            (&[24, 16], true, 0.3, 11),
            (&[24, 16], false, 0.0, 11),
            (&[24, 16], true, 0.3, 37),
            (&[24], false, 0.5, 37),
        ];
        for (hidden, batch_norm, dropout, rows) in cases {
            let cfg = ModelConfig {
                hidden: hidden.to_vec(),
                dim: 8,
                batch_norm,
                dropout,
            };
            // Two independent copies of the same weights (clones of a Var share storage).
            let new = || Branch::new(13, &cfg, &mut ChaCha8Rng::seed_from_u64(7), &device);
            let (mut autograd, mut explicit) = (new().unwrap(), new().unwrap());
            let mut values = ChaCha8Rng::seed_from_u64(11);
            let mut normal =
                |n: usize| -> Vec<f32> { (0..n).map(|_| values.random_range(-2.0..2.0)).collect() };
            let x = Tensor::from_vec(normal(rows * 13), (rows, 13), &device).unwrap();
            let mix = Tensor::from_vec(normal(rows * 8), (rows, 8), &device).unwrap();
            let what = format!(
                "hidden {hidden:?}, batch norm {batch_norm}, dropout {dropout}, {rows} rows"
            );

            let mut rng = ChaCha8Rng::seed_from_u64(3);
            let reference = autograd.forward(&x, Some(&mut rng)).unwrap();
            let reference_grads = (&reference * &mix)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let mut rng = ChaCha8Rng::seed_from_u64(3);
            let (embedded, tape) = forward(&mut explicit, &x, &mut rng, None).unwrap();
            assert!(
                max_relative(&embedded, &reference) < 1e-5,
                "forward, {what}: {}",
                max_relative(&embedded, &reference)
            );
            // candle has no public empty GradStore: an untracked scalar's backward is one.
            let mut grads = Tensor::new(0f32, &device).unwrap().backward().unwrap();
            backward(&explicit, tape, &mix, &mut grads, None).unwrap();
            for ((name, theirs, trainable), (_, ours, _)) in
                autograd.named("b").into_iter().zip(explicit.named("b"))
            {
                if !trainable {
                    // Running statistics: updated by both forwards alike.
                    assert!(
                        max_relative(ours.as_tensor(), theirs.as_tensor()) < 1e-5,
                        "{name}, {what}"
                    );
                    continue;
                }
                let want = reference_grads.get(theirs.as_tensor()).unwrap();
                let got = grads
                    .get(ours.as_tensor())
                    .unwrap_or_else(|| panic!("no gradient for {name}, {what}"));
                assert_eq!(got.dims(), want.dims(), "{name}");
                if batch_norm
                    && name.ends_with(".bias")
                    && !name.contains("out")
                    && !name.contains("bn")
                {
                    // A bias before BatchNorm: zero in exact arithmetic, rounding noise in
                    // both (of the size of f32 epsilon times the other gradients).
                    for g in [got, want] {
                        let largest = g
                            .abs()
                            .unwrap()
                            .max_all()
                            .unwrap()
                            .to_scalar::<f32>()
                            .unwrap();
                        assert!(largest < 1e-5, "{name}, {what}: {largest}");
                    }
                    continue;
                }
                let error = max_relative(got, want);
                assert!(error < 1e-4, "{name}, {what}: relative error {error}");
            }
        }
    }
}
