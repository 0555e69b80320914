//! The sum of a term's selected hinges as one op on the distance matrix, for the cosine
//! distance (Euclidean and dot go through `selected_hinges.rs`, which never forms the matrix's
//! gradient). The tensor version (`index_select` the tuple rows, `gather` the positives,
//! subtract, add the margin, ReLU, multiply by a 0/1 mask, sum) makes eight `[tuple rows,
//! references]` tensors forward and as many backward, a million elements each at the paper's
//! batch, for the top-10 hinges of each row that the mask keeps. This op reads and
//! differentiates only the selected entries.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Storage, Tensor};

/// `Σ_t max(0, margin + d[a_t, p_t] − d[a_t, n_t])` over selected triplets, as indices into an
/// `[anchors, references]` distance matrix.
pub(super) struct HingeSum {
    pub margin: f64,
    /// `(anchor row, positive column, negative column)`.
    pub triplets: Vec<[u32; 3]>,
}

/// The distance matrix's values, read in place (the hinges touch only the selected entries, so
/// the matrix is not copied to f64 first).
enum Values<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
}

impl Values<'_> {
    fn get(&self, i: usize) -> f64 {
        match self {
            Values::F32(v) => f64::from(v[i]),
            Values::F64(v) => v[i],
        }
    }
}

/// A `[rows, cols]` matrix's values as f64, read in place from CPU storage in any 2-D layout (a
/// transposed view included, so that one direction of a term can read the other's matrix
/// without a copy).
pub(super) struct MatrixValues<'a> {
    values: Values<'a>,
    start: usize,
    strides: [usize; 2],
}

impl<'a> MatrixValues<'a> {
    /// The values of a 2-D f32 or f64 CPU tensor's storage.
    ///
    /// # Errors
    /// Another device or dtype, or a layout that is not 2-D.
    pub fn of(storage: &'a Storage, layout: &Layout) -> candle_core::Result<Self> {
        match storage {
            Storage::Cpu(cpu) => Self::of_cpu(cpu, layout),
            _ => candle_core::bail!("distance values: the matrix must be on the CPU"),
        }
    }

    /// [`MatrixValues::of`] on CPU storage.
    ///
    /// # Errors
    /// Another dtype, or a layout that is not 2-D.
    pub fn of_cpu(storage: &'a CpuStorage, layout: &Layout) -> candle_core::Result<Self> {
        let values = match storage {
            CpuStorage::F32(v) => Values::F32(v),
            CpuStorage::F64(v) => Values::F64(v),
            other => candle_core::bail!("distance values: unsupported dtype {:?}", other.dtype()),
        };
        let &[row, col] = layout.stride() else {
            candle_core::bail!("distance values: a 2-D matrix, got {:?}", layout.shape());
        };
        Ok(MatrixValues {
            values,
            start: layout.start_offset(),
            strides: [row, col],
        })
    }

    /// Row-major values with `cols` columns.
    pub fn dense(values: &'a [f64], cols: usize) -> Self {
        MatrixValues {
            values: Values::F64(values),
            start: 0,
            strides: [cols, 1],
        }
    }

    /// The value at `(row, col)`.
    pub fn get(&self, row: usize, col: usize) -> f64 {
        self.values
            .get(self.start + row * self.strides[0] + col * self.strides[1])
    }
}

impl HingeSum {
    fn hinge(&self, values: &MatrixValues<'_>, [a, p, n]: [u32; 3]) -> f64 {
        let (a, p, n) = (a as usize, p as usize, n as usize);
        self.margin + values.get(a, p) - values.get(a, n)
    }
}

impl CustomOp1 for HingeSum {
    fn name(&self) -> &'static str {
        "hinge_sum"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let values = MatrixValues::of_cpu(storage, layout)?;
        let sum: f64 = self
            .triplets
            .iter()
            .map(|&t| self.hinge(&values, t).max(0.0))
            .sum();
        let out = match storage.dtype() {
            DType::F32 => CpuStorage::F32(vec![sum as f32]),
            _ => CpuStorage::F64(vec![sum]),
        };
        Ok((out, Shape::from(())))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (rows, cols) = arg.dims2()?;
        let upstream = grad.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let (storage, layout) = arg.storage_and_layout();
        let values = MatrixValues::of(&storage, layout)?;
        // ReLU passes the gradient at exactly 0, as candle's does.
        let active = self
            .triplets
            .iter()
            .filter(|&&t| self.hinge(&values, t) >= 0.0)
            .map(|t| t.map(|i| i as usize));
        let gradient = match arg.dtype() {
            DType::F32 => {
                let mut d = vec![0f32; rows * cols];
                for [a, p, n] in active {
                    d[a * cols + p] += upstream as f32;
                    d[a * cols + n] -= upstream as f32;
                }
                Tensor::from_vec(d, (rows, cols), arg.device())?
            }
            _ => {
                let mut d = vec![0f64; rows * cols];
                for [a, p, n] in active {
                    d[a * cols + p] += upstream;
                    d[a * cols + n] -= upstream;
                }
                Tensor::from_vec(d, (rows, cols), arg.device())?.to_dtype(arg.dtype())?
            }
        };
        Ok(Some(gradient))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// On a transposed view (what one ranking direction reads of the other's matrix) the op
    /// gives the same sum and the same gradient as on a contiguous copy.
    #[test]
    fn a_transposed_view_reads_like_its_copy() {
        let stored =
            Var::from_vec(crate::test_values::spread(4 * 6, 3), (4, 6), &Device::Cpu).unwrap();
        // `[6, 4]` anchors × references, as the view and as a copy.
        let view = stored.as_tensor().t().unwrap();
        let copy = view.contiguous().unwrap();
        assert!(!view.is_contiguous());
        let op = || HingeSum {
            margin: 0.5,
            triplets: vec![[0, 1, 2], [0, 1, 3], [5, 2, 0], [3, 3, 1]],
        };
        let (on_view, on_copy) = (view.apply_op1(op()).unwrap(), copy.apply_op1(op()).unwrap());
        let scalar = |t: &Tensor| t.to_scalar::<f64>().unwrap();
        assert_eq!(scalar(&on_view), scalar(&on_copy));
        assert!(scalar(&on_view) > 0.0);
        let via_view = on_view.backward().unwrap();
        let via_copy = on_copy.backward().unwrap();
        let grad = |g: &candle_core::backprop::GradStore| -> Vec<f64> {
            g.get(stored.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        assert_eq!(grad(&via_view), grad(&via_copy));
        assert!(grad(&via_view).iter().any(|&g| g != 0.0));
    }
}
