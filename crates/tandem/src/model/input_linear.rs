//! The first layer of a branch, `x Wᵀ` on the raw input features, as a custom op whose
//! backward computes only the weight's gradient. candle's matmul backward always computes
//! both operands' gradients; for the first layer the input's — `[n, d_in]`, 500 × 4096 and
//! 1000 × 6000 at the paper's size — is a third of the step's matrix work and nobody reads it.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

/// `x Wᵀ` with `x: [n, in]` (data, no gradient) and `W: [out, in]`.
struct InputTimesWeightT;

impl InputTimesWeightT {
    fn dims(x: &Layout, w: &Layout) -> candle_core::Result<(usize, usize, usize)> {
        let (n, d_in) = x.shape().dims2()?;
        let (d_out, w_in) = w.shape().dims2()?;
        if d_in != w_in {
            return Err(candle_core::Error::ShapeMismatchBinaryOp {
                lhs: x.shape().clone(),
                rhs: w.shape().clone(),
                op: "input_linear",
            });
        }
        Ok((n, d_in, d_out))
    }
}

impl CustomOp2 for InputTimesWeightT {
    fn name(&self) -> &'static str {
        "input_linear"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, d_in, d_out) = Self::dims(x_layout, w_layout)?;
        // Wᵀ as a strided view: the gemm reads it in place.
        let product = x.matmul(w, (1, n, d_out, d_in), x_layout, &w_layout.transpose(0, 1)?)?;
        Ok((product, Shape::from((n, d_out))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        x_layout: &Layout,
        w: &candle_core::CudaStorage,
        w_layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (n, d_in, d_out) = Self::dims(x_layout, w_layout)?;
        let product = x.matmul(w, (1, n, d_out, d_in), x_layout, &w_layout.transpose(0, 1)?)?;
        Ok((product, Shape::from((n, d_out))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        _w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // dL/dW = (xᵀ grad)ᵀ, `[out, in]`, computed exactly as candle's matmul backward
        // computes it for `x.matmul(&w.t())` (so training is bit for bit unchanged); no dL/dx.
        Ok((None, Some(x.t()?.matmul(grad)?.t()?)))
    }
}

/// `x Wᵀ` where `x` carries no gradient: the same value as `x.matmul(&w.t())`, but backward
/// computes only `dL/dW`. Falls back to the plain product when `x` is tracked, so a gradient
/// that is needed is never dropped.
///
/// # Shapes
/// `x: [n, in]`, `w: [out, in]` → `[n, out]`.
///
/// # Errors
/// A shape mismatch between `x` and `w`.
pub fn input_times_weight_t(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    if x.track_op() {
        return x.matmul(&w.t()?);
    }
    x.apply_op2(w, InputTimesWeightT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// Same value and the same weight gradient as the plain product (bit for bit: one gemm
    /// each way), and no gradient entry for the input.
    #[test]
    fn equals_the_plain_product_and_its_weight_gradient() {
        let device = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (7, 5), &device).unwrap();
        let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 5), &device).unwrap()).unwrap();
        let mix = Tensor::randn(0f32, 1.0, (7, 3), &device).unwrap();
        let fast = input_times_weight_t(&x, w.as_tensor()).unwrap();
        let plain = x.matmul(&w.as_tensor().t().unwrap()).unwrap();
        let diff = |a: &Tensor, b: &Tensor| -> f32 {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_keepdim(0)
                .unwrap()
                .max_keepdim(1)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()[0]
        };
        assert_eq!(diff(&fast, &plain), 0.0);
        let loss = |y: &Tensor| (y * &mix).unwrap().sum_all().unwrap();
        let g_fast = loss(&fast).backward().unwrap();
        let g_plain = loss(&plain).backward().unwrap();
        assert_eq!(diff(g_fast.get(&w).unwrap(), g_plain.get(&w).unwrap()), 0.0);
        assert!(g_fast.get(&x).is_none());
        assert!(
            g_plain.get(&x).is_some(),
            "the plain product computes dL/dx"
        );
        // A tracked input keeps its gradient.
        let xv = Var::from_tensor(&x).unwrap();
        let g = loss(&input_times_weight_t(xv.as_tensor(), w.as_tensor()).unwrap())
            .backward()
            .unwrap();
        assert!(g.get(&xv).is_some());
    }
}
