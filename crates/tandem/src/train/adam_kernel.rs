//! Adam's update as one in-place pass over a parameter on the CPU, instead of the thirteen
//! tensor operations of the reference path (each of which reads and writes the whole tensor
//! and allocates a fresh one: 1.1 GB of temporaries per step at the paper's size, single
//! threaded). Every element sees the same f32 operations in the same order as the tensor
//! path, so both give the same bits (checked in the tests of [`super::optimizer`]).

use std::cell::RefCell;

use candle_core::{CpuStorage, InplaceOp2, Layout};
use rayon::prelude::*;

/// Elements per parallel task: large enough that scheduling is noise, small enough that both
/// cores get work on a 2048 × 512 layer.
pub(super) const CHUNK: usize = 1 << 15;

/// The step's constants, rounded to f32 as candle's affine rounds its f64 factors.
#[derive(Debug, Clone, Copy)]
pub(super) struct AdamConstants {
    pub b1: f32,
    pub one_minus_b1: f32,
    pub b2: f32,
    pub one_minus_b2: f32,
    /// `1 / (1 - β1^t)`.
    pub scale_m: f32,
    /// `1 / (1 - β2^t)`.
    pub scale_v: f32,
    /// `1 - lr · weight_decay`.
    pub decay: f32,
    pub eps: f32,
    pub lr: f32,
}

impl AdamConstants {
    /// One element. `x * c + 0.0` is candle's affine `x * mul + add` with `add = 0` (it maps
    /// -0 to +0, so it is kept); `x + eps` is its affine with `mul = 1`.
    #[inline(always)]
    fn update(&self, p: &mut f32, g: f32, m: &mut f32, v: &mut f32) {
        let next_m = (*m * self.b1 + 0.0) + (g * self.one_minus_b1 + 0.0);
        let next_v = (*v * self.b2 + 0.0) + ((g * g) * self.one_minus_b2 + 0.0);
        let m_hat = next_m * self.scale_m + 0.0;
        let v_hat = next_v * self.scale_v + 0.0;
        let decayed = *p * self.decay + 0.0;
        let update = m_hat / (v_hat.sqrt() * 1.0 + self.eps);
        *p = decayed - (update * self.lr + 0.0);
        *m = next_m;
        *v = next_v;
    }
}

/// The update of one parameter whose moments live in host memory, applied to the parameter's
/// storage in place with its gradient as the second operand.
pub(super) struct AdamInPlace<'a> {
    pub constants: AdamConstants,
    pub moments: RefCell<(&'a mut [f32], &'a mut [f32])>,
}

impl InplaceOp2 for AdamInPlace<'_> {
    fn name(&self) -> &'static str {
        "adam_in_place"
    }

    fn cpu_fwd(
        &self,
        param: &mut CpuStorage,
        param_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> candle_core::Result<()> {
        let (CpuStorage::F32(param), CpuStorage::F32(grad)) = (param, grad) else {
            candle_core::bail!("adam_in_place: parameter and gradient must be f32");
        };
        let (Some((p0, p1)), Some((g0, g1))) = (
            param_layout.contiguous_offsets(),
            grad_layout.contiguous_offsets(),
        ) else {
            candle_core::bail!("adam_in_place: parameter and gradient must be contiguous");
        };
        let (param, grad) = (&mut param[p0..p1], &grad[g0..g1]);
        let mut moments = self.moments.borrow_mut();
        let (m, v) = &mut *moments;
        if grad.len() != param.len() || m.len() != param.len() || v.len() != param.len() {
            candle_core::bail!(
                "adam_in_place: {} parameters, {} gradients, {}/{} moments",
                param.len(),
                grad.len(),
                m.len(),
                v.len()
            );
        }
        let c = self.constants;
        param
            .par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| update_chunk(&c, p, g, m, v));
        Ok(())
    }
}

/// [`AdamConstants::update`] over a chunk, compiled for AVX2 where the CPU has it (the
/// baseline x86-64 build does the divisions and square roots four lanes at a time). Both are
/// exact IEEE operations and nothing is fused, so every target gives the same bits.
#[multiversion::multiversion(targets("x86_64+avx2+fma", "aarch64+neon"))]
fn update_chunk(c: &AdamConstants, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        c.update(p, g, m, v);
    }
}
