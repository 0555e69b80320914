//! The Euclidean distance matrix from its parts, `sqrt(relu(|a|² + |b|² − 2 a·b) + ε)`, as one
//! op on the CPU. The tensor version makes six `[n, m]` tensors forward (the doubled product,
//! the broadcast sum, the difference, ReLU, `+ ε`, the root) and backward as many again, each
//! accumulated by candle's autograd into a fresh zero tensor: at the paper's batch that was
//! most of the loss's time outside its matrix products. This op reads the product once and
//! writes the distances once; its backward is one pass giving all three gradients.
//!
//! The forward is bit-identical to the tensor version (the same f32/f64 operations in the same
//! order); the backward's row and column sums add in a different order.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Storage, Tensor, WithDType};
use rayon::prelude::*;

use super::distance::EUCLIDEAN_EPS;

/// `d[i, j] = sqrt(max(a2[i] + b2[j] − 2 dot[i, j], 0) + ε)` on `dot: [n, m]`, `a2: [n, 1]`,
/// `b2: [1, m]`, all contiguous on the CPU in f32 or f64.
pub(super) struct EuclideanFromParts;

/// The contiguous part of `values` that `layout` covers, or an error naming the op.
fn contiguous<'a, T: WithDType>(values: &'a [T], layout: &Layout) -> candle_core::Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&values[start..end]),
        None => candle_core::bail!("euclidean: the operands must be contiguous"),
    }
}

/// Rows of the matrix at a time for the parallel passes (whole rows: each is `m` values).
fn rows_per_task(m: usize) -> usize {
    (1 << 15) / m.max(1) + 1
}

/// Values per parallel task: whole rows, never zero (an empty matrix then has no tasks).
fn chunk_len(m: usize) -> usize {
    m.max(1) * rows_per_task(m)
}

fn forward<T: Real>(dot: &[T], a2: &[T], b2: &[T]) -> Vec<T> {
    let m = b2.len();
    let per_task = rows_per_task(m);
    let two = T::from_f64(2.0);
    let eps = T::from_f64(EUCLIDEAN_EPS);
    let mut out = vec![T::from_f64(0.0); dot.len()];
    out.par_chunks_mut(chunk_len(m))
        .zip(dot.par_chunks(chunk_len(m)))
        .enumerate()
        .for_each(|(task, (out, dot))| {
            let first = task * per_task;
            for (r, (out, dot)) in out.chunks_mut(m).zip(dot.chunks(m)).enumerate() {
                let a = a2[first + r];
                for ((o, &d), &b) in out.iter_mut().zip(dot).zip(b2) {
                    // The tensor version's order: (a2 + b2) − (dot · 2), ReLU, + ε, root.
                    let squared = (a + b) - d * two;
                    *o = (squared.max_zero() + eps).root();
                }
            }
        });
    out
}

/// The gradients for `dot`, `a2` and `b2` from the distances' gradient `grad` (all `[n, m]`
/// contiguous): `h = grad / (2 d)` where the squared distance is ≥ 0 (candle's ReLU passes the
/// gradient at exactly 0), then `−2h`, its row sums and its column sums.
fn backward<T: Real>(
    dot: &[T],
    a2: &[T],
    b2: &[T],
    distances: &[T],
    grad: &[T],
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let m = b2.len();
    let per_task = rows_per_task(m);
    let two = T::from_f64(2.0);
    let half = T::from_f64(0.5);
    let mut grad_dot = vec![T::from_f64(0.0); dot.len()];
    let mut grad_a2 = vec![T::from_f64(0.0); a2.len()];
    let grad_b2 = grad_dot
        .par_chunks_mut(chunk_len(m))
        .zip(grad_a2.par_chunks_mut(per_task))
        .enumerate()
        .map(|(task, (grad_dot, grad_a2))| {
            let first = task * per_task;
            let mut columns = vec![T::from_f64(0.0); m];
            for (r, (grad_dot, row_sum)) in grad_dot.chunks_mut(m).zip(grad_a2).enumerate() {
                let i = first + r;
                let at = i * m;
                let a = a2[i];
                let mut sum = T::from_f64(0.0);
                for j in 0..m {
                    let squared = (a + b2[j]) - dot[at + j] * two;
                    // Candle's root backward: grad / d · 0.5.
                    let h = if squared >= T::from_f64(0.0) {
                        grad[at + j] / distances[at + j] * half
                    } else {
                        T::from_f64(0.0)
                    };
                    grad_dot[j] = -(h * two);
                    sum += h;
                    columns[j] += h;
                }
                *row_sum = sum;
            }
            columns
        })
        .reduce(
            || vec![T::from_f64(0.0); m],
            |mut a, b| {
                a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
                a
            },
        );
    (grad_dot, grad_a2, grad_b2)
}

/// The few float operations the passes need beyond [`WithDType`], for f32 and f64.
trait Real: WithDType + std::ops::Neg<Output = Self> {
    fn max_zero(self) -> Self;
    fn root(self) -> Self;
}

impl Real for f32 {
    fn max_zero(self) -> Self {
        self.max(0.0)
    }
    fn root(self) -> Self {
        self.sqrt()
    }
}

impl Real for f64 {
    fn max_zero(self) -> Self {
        self.max(0.0)
    }
    fn root(self) -> Self {
        self.sqrt()
    }
}

/// The values of a contiguous CPU tensor's storage, read in place.
fn slice_of<'a, T: WithDType>(
    storage: &'a Storage,
    layout: &Layout,
) -> candle_core::Result<&'a [T]> {
    match storage {
        Storage::Cpu(cpu) => contiguous(T::cpu_storage_as_slice(cpu)?, layout),
        _ => candle_core::bail!("euclidean: CPU only"),
    }
}

/// [`backward`] on tensors, reading them in place.
fn backward_tensors<T: Real>(
    dot: &Tensor,
    a2: &Tensor,
    b2: &Tensor,
    distances: &Tensor,
    grad: &Tensor,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    let grad = grad.contiguous()?;
    let (gd, ga, gb) = {
        let held = [dot, a2, b2, distances, &grad].map(Tensor::storage_and_layout);
        let [d, a, b, dist, g] = &held;
        backward::<T>(
            slice_of(&d.0, d.1)?,
            slice_of(&a.0, a.1)?,
            slice_of(&b.0, b.1)?,
            slice_of(&dist.0, dist.1)?,
            slice_of(&g.0, g.1)?,
        )
    };
    let device = dot.device();
    Ok((
        Tensor::from_vec(gd, dot.shape(), device)?,
        Tensor::from_vec(ga, a2.shape(), device)?,
        Tensor::from_vec(gb, b2.shape(), device)?,
    ))
}

impl CustomOp3 for EuclideanFromParts {
    fn name(&self) -> &'static str {
        "euclidean_from_parts"
    }

    fn cpu_fwd(
        &self,
        dot: &CpuStorage,
        dot_layout: &Layout,
        a2: &CpuStorage,
        a2_layout: &Layout,
        b2: &CpuStorage,
        b2_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let shape = dot_layout.shape().clone();
        let (n, m) = shape.dims2()?;
        if a2_layout.shape().elem_count() != n || b2_layout.shape().elem_count() != m {
            candle_core::bail!(
                "euclidean: norms {:?} and {:?} do not fit the product {shape:?}",
                a2_layout.shape(),
                b2_layout.shape()
            );
        }
        let out = match (dot, a2, b2) {
            (CpuStorage::F32(d), CpuStorage::F32(a), CpuStorage::F32(b)) => {
                CpuStorage::F32(forward(
                    contiguous(d, dot_layout)?,
                    contiguous(a, a2_layout)?,
                    contiguous(b, b2_layout)?,
                ))
            }
            (CpuStorage::F64(d), CpuStorage::F64(a), CpuStorage::F64(b)) => {
                CpuStorage::F64(forward(
                    contiguous(d, dot_layout)?,
                    contiguous(a, a2_layout)?,
                    contiguous(b, b2_layout)?,
                ))
            }
            _ => candle_core::bail!(
                "euclidean: f32 or f64 operands of one dtype, got {:?}",
                dot.dtype()
            ),
        };
        Ok((out, shape))
    }

    fn bwd(
        &self,
        dot: &Tensor,
        a2: &Tensor,
        b2: &Tensor,
        distances: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (gd, ga, gb) = match dot.dtype() {
            DType::F32 => backward_tensors::<f32>(dot, a2, b2, distances, grad)?,
            DType::F64 => backward_tensors::<f64>(dot, a2, b2, distances, grad)?,
            other => candle_core::bail!("euclidean: unsupported dtype {other:?}"),
        };
        Ok((Some(gd), Some(ga), Some(gb)))
    }
}
