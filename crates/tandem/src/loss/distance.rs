//! Pairwise dissimilarity between two sets of embeddings.

use candle_core::{D, Tensor};
use serde::{Deserialize, Serialize};

use super::euclidean::EuclideanFromParts;
use crate::error::Result;

/// Added under the square root of the Euclidean distance, as in the reference code: it keeps
/// the gradient finite when two embeddings coincide.
pub const EUCLIDEAN_EPS: f64 = 1e-4;

/// Whether the Euclidean matrix goes through [`EuclideanFromParts`]: f32/f64 on the CPU.
fn fused_on(dot: &Tensor) -> bool {
    dot.device().is_cpu()
        && matches!(
            dot.dtype(),
            candle_core::DType::F32 | candle_core::DType::F64
        )
}

/// `sqrt(relu(|a|² + |b|² − 2 dot) + ε)` with `dot = a bᵀ`: one [`EuclideanFromParts`] op when
/// `fused`, else candle's tensor ops (any device and dtype).
fn euclidean(a: &Tensor, b: &Tensor, dot: Tensor, fused: bool) -> Result<Tensor> {
    let a2 = a.sqr()?.sum_keepdim(D::Minus1)?;
    let b2 = b.sqr()?.sum_keepdim(D::Minus1)?.t()?;
    if fused {
        return Ok(dot.apply_op3(&a2.contiguous()?, &b2.contiguous()?, EuclideanFromParts)?);
    }
    let d2 = a2.broadcast_add(&b2)?.broadcast_sub(&(dot * 2.0)?)?;
    Ok((d2.relu()? + EUCLIDEAN_EPS)?.sqrt()?)
}

/// A dissimilarity: smaller always means closer, so every hinge reads `margin + d(a,p) - d(a,n)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distance {
    /// `sqrt(|a - b|² + 1e-4)`; the paper's choice.
    Euclidean,
    /// `1 - cos(a, b)`.
    Cosine,
    /// `-a·b` (on L2-normalised rows this ranks like cosine).
    Dot,
}

impl Distance {
    /// The matrix of dissimilarities between the rows of `a` and the rows of `b`.
    ///
    /// # Shapes
    /// `a: [n, d]`, `b: [m, d]` → `[n, m]`.
    ///
    /// # Errors
    /// A tensor error when the dimensions disagree.
    pub fn matrix(self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let dot = a.matmul(&b.t()?)?;
        Ok(match self {
            Distance::Euclidean => {
                let fused = fused_on(&dot);
                euclidean(a, b, dot, fused)?
            }
            Distance::Cosine => {
                let na = a.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
                let nb = b.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.t()?;
                let cos = dot.broadcast_div(&na)?.broadcast_div(&nb)?;
                cos.affine(-1.0, 1.0)?
            }
            Distance::Dot => dot.neg()?,
        })
    }

    /// The same dissimilarity on two plain vectors, for reference loops and tests.
    pub fn naive(self, a: &[f64], b: &[f64]) -> f64 {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        match self {
            Distance::Euclidean => {
                let d2: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
                (d2 + EUCLIDEAN_EPS).sqrt()
            }
            Distance::Cosine => {
                let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
                let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
                1.0 - dot / (na * nb)
            }
            Distance::Dot => -dot,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The fused CPU op against the tensor version: the same distances bit for bit and the
    /// same gradients (summed in another order), in f32 and f64, with coincident rows (the
    /// squared distance rounds to ≤ 0 there, where ReLU cuts the gradient) included.
    #[test]
    fn fused_euclidean_equals_the_tensor_version() {
        use candle_core::{DType, Var};
        let values = crate::test_values::spread;
        let (n, m, d) = (7, 9, 5);
        let mut b_values = values(m * d, 2);
        b_values[3 * d..4 * d].copy_from_slice(&values(n * d, 1)[2 * d..3 * d]);
        for dtype in [DType::F32, DType::F64] {
            let probe = Tensor::zeros((1, 1), dtype, &Device::Cpu).unwrap();
            assert!(fused_on(&probe), "{dtype:?} on the CPU takes the fused op");
            let leaf = |v: Vec<f64>, rows: usize| {
                Var::from_tensor(
                    &Tensor::from_vec(v, (rows, d), &Device::Cpu)
                        .unwrap()
                        .to_dtype(dtype)
                        .unwrap(),
                )
                .unwrap()
            };
            let weights = Tensor::from_vec(values(n * m, 3), (n, m), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let run = |fused: bool| {
                let (a, b) = (leaf(values(n * d, 1), n), leaf(b_values.clone(), m));
                let dot = a.matmul(&b.t().unwrap()).unwrap();
                let dist = euclidean(&a, &b, dot, fused).unwrap();
                let grads = (&dist * &weights)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let read = |t: &Tensor| -> Vec<f64> {
                    t.to_dtype(DType::F64)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1()
                        .unwrap()
                };
                (
                    read(&dist),
                    read(grads.get(&a).unwrap()),
                    read(grads.get(&b).unwrap()),
                )
            };
            let (fused, tensor) = (run(true), run(false));
            assert_eq!(fused.0, tensor.0, "{dtype:?}: distances");
            assert!(fused.0[2 * m + 3] < 0.011, "rows 2 and 3 coincide");
            let tolerance = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
            for (which, f, t) in [("a", &fused.1, &tensor.1), ("b", &fused.2, &tensor.2)] {
                for (x, y) in f.iter().zip(t.iter()) {
                    assert!(
                        (x - y).abs() <= tolerance * (1.0 + y.abs()),
                        "{dtype:?} grad {which}: {x} vs {y}"
                    );
                }
            }
        }
    }

    /// No references (or no anchors): an empty matrix and zero gradients, as the tensor
    /// version gives, not a zero-sized chunk.
    #[test]
    fn fused_euclidean_of_an_empty_side_is_empty() {
        use candle_core::{DType, Var};
        for (n, m) in [(3, 0), (0, 4)] {
            let a =
                Var::from_tensor(&Tensor::ones((n, 5), DType::F32, &Device::Cpu).unwrap()).unwrap();
            let b =
                Var::from_tensor(&Tensor::ones((m, 5), DType::F32, &Device::Cpu).unwrap()).unwrap();
            let dot = a.matmul(&b.t().unwrap()).unwrap();
            let dist = euclidean(&a, &b, dot, true).unwrap();
            assert_eq!(dist.dims(), [n, m]);
            let grads = dist.sum_all().unwrap().backward().unwrap();
            for (var, rows) in [(&a, n), (&b, m)] {
                let g: Vec<f32> = grads
                    .get(var)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                assert_eq!(g, vec![0.0; rows * 5]);
            }
        }
    }

    #[test]
    fn matrix_matches_naive() {
        let a = [[0.6, 0.8, 0.0], [1.0, 0.0, 0.0]];
        let b = [[0.0, 1.0, 0.0], [0.6, 0.0, 0.8], [-1.0, 0.0, 0.0]];
        let ta = Tensor::new(&a, &Device::Cpu).unwrap();
        let tb = Tensor::new(&b, &Device::Cpu).unwrap();
        for d in [Distance::Euclidean, Distance::Cosine, Distance::Dot] {
            let m: Vec<Vec<f64>> = d.matrix(&ta, &tb).unwrap().to_vec2().unwrap();
            for i in 0..2 {
                for j in 0..3 {
                    assert!(
                        (m[i][j] - d.naive(&a[i], &b[j])).abs() < 1e-12,
                        "{d:?} {i} {j}"
                    );
                }
            }
        }
        // Hand-computed: |(1,0,0) - (-1,0,0)| = 2.
        let m: Vec<Vec<f64>> = Distance::Euclidean
            .matrix(&ta, &tb)
            .unwrap()
            .to_vec2()
            .unwrap();
        assert!((m[1][2] - (4.0f64 + 1e-4).sqrt()).abs() < 1e-12);
    }
}
