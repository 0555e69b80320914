//! Pairwise dissimilarity between two sets of embeddings.

use candle_core::{D, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Added under the square root of the Euclidean distance, as in the reference code: it keeps
/// the gradient finite when two embeddings coincide.
pub const EUCLIDEAN_EPS: f64 = 1e-4;

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
                let a2 = a.sqr()?.sum_keepdim(D::Minus1)?;
                let b2 = b.sqr()?.sum_keepdim(D::Minus1)?.t()?;
                let d2 = a2.broadcast_add(&b2)?.broadcast_sub(&(dot * 2.0)?)?;
                (d2.relu()? + EUCLIDEAN_EPS)?.sqrt()?
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
