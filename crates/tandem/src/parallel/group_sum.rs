//! The sum of a tensor over the ranks as an autograd operation, for the data-parallel forward
//! on candle's autograd (any device): BatchNorm's column sums are summed over the ranks going
//! forward, and the gradient reaching that sum is summed over the ranks going back. Every
//! rank's loss is the whole batch's, but a rank's backward carries only the part of
//! `∂loss/∂sum` that flows through its own rows; `∂loss/∂local` is the whole of it, the sum of
//! those parts over the ranks.

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

use crate::error::Result;
use crate::parallel::Collective;

/// `local` summed over the ranks of `collective`, tracked by autograd: its gradient is
/// summed over the ranks in the backward. Every rank calls it in the same order, and the
/// backward reaches it on every rank (the ranks build the same graph).
///
/// # Shapes
/// `local: [...]` → the same shape; every rank gets the same bits.
///
/// # Errors
/// When another rank stopped, or a tensor error.
pub(crate) fn group_sum(collective: &Arc<dyn Collective>, local: &Tensor) -> Result<Tensor> {
    let summed = summed_over_ranks(&**collective, local)?;
    let op = GroupSum {
        collective: collective.clone(),
    };
    Ok(local.apply_op2(&summed, op)?)
}

/// The values of `t` summed over the ranks, as a new tensor on `t`'s device (untracked).
fn summed_over_ranks(collective: &dyn Collective, t: &Tensor) -> Result<Tensor> {
    let mut values: Vec<f32> = t
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    collective.all_reduce_sum(&mut values)?;
    Ok(Tensor::from_vec(values, t.shape(), t.device())?.to_dtype(t.dtype())?)
}

/// `(local, summed) ↦ summed`, with the backward `∂/∂local = Σ_ranks ∂/∂result`: the values are
/// summed before the op (a host round through the collective), the op only ties them into the
/// graph.
struct GroupSum {
    collective: Arc<dyn Collective>,
}

impl CustomOp2 for GroupSum {
    fn name(&self) -> &'static str {
        "group_sum"
    }

    fn cpu_fwd(
        &self,
        _local: &CpuStorage,
        _: &Layout,
        summed: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((copy_of(summed, layout)?, layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _local: &candle_core::CudaStorage,
        _: &Layout,
        summed: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        Ok((copy_of(summed, layout)?, layout.shape().clone()))
    }

    fn bwd(
        &self,
        _local: &Tensor,
        _summed: &Tensor,
        _result: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let summed = summed_over_ranks(&*self.collective, grad)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Ok((Some(summed), None))
    }
}

/// A copy of a storage that `layout` covers whole (the summed values are a fresh tensor).
fn copy_of<S: BackendStorage>(storage: &S, layout: &Layout) -> candle_core::Result<S> {
    match layout.contiguous_offsets() {
        Some((0, end)) if end == layout.shape().elem_count() => storage.try_clone(layout),
        _ => Err(candle_core::Error::Msg(
            "group_sum: the summed values must be a fresh contiguous tensor".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::collective::on_every_rank;
    use candle_core::{Device, Var};

    /// Forward: every rank holds the sum. Backward of `Σ_r c_r · sum` (rank r's loss part is
    /// `c_r · sum`): every rank's local gets `Σ_r c_r`, as `loss = (Σ c_r) · Σ local_r` gives.
    #[test]
    fn sums_values_forward_and_gradients_backward() {
        let results = on_every_rank(3, |rank| {
            let r = rank.rank() as f32;
            let local = Var::from_vec(vec![r, 10.0 * r], (1, 2), &Device::Cpu).unwrap();
            let sum = group_sum(rank, local.as_tensor()).unwrap();
            let part = (&sum * f64::from(r + 1.0)).unwrap().sum_all().unwrap();
            let grads = part.backward().unwrap();
            let values = |t: &Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
            (values(&sum), values(grads.get(local.as_tensor()).unwrap()))
        });
        for (sum, grad) in results {
            assert_eq!(sum, vec![3.0, 30.0]);
            assert_eq!(grad, vec![6.0, 6.0], "1 + 2 + 3 on every rank");
        }
    }
}
