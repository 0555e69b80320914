//! The sum of a term's selected hinges as one op on the embeddings themselves, for the
//! distances whose gradient a pair of rows gives directly (Euclidean and dot).
//!
//! Through the distance matrix, the backward is dense: the matrix's gradient (zero but for
//! the selected entries) goes back through the Euclidean parts and the product `a bᵀ`, two
//! `[n, m] × [m, d]` products per matrix, about 3 GFLOP at the paper's batch, for some ten
//! entries per tuple row that are not zero. Here each selected entry adds its pair's
//! gradient to the two rows, `∂d(u, v)/∂u = (u − v) / d` for the Euclidean distance and `−v`
//! for the dot one, which is a few MFLOP. The forward reads the distances the miner read, so
//! the loss is the value the matrix gives, bit for bit.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::Distance;

/// `Σ_t max(0, margin + d(a_t, p_t) − d(a_t, n_t))` over selected triplets, as an op on the
/// anchors `[n, dim]` and the references `[m, dim]`.
pub(super) struct SelectedHinges {
    pub margin: f64,
    /// Euclidean or dot (see [`SelectedHinges::supports`]).
    pub distance: Distance,
    /// `(anchor row, positive reference, negative reference)`, those of one tuple row
    /// consecutive.
    pub triplets: Vec<[u32; 3]>,
    /// `(d(a, p), d(a, n))` of each triplet, from the matrix the miner read.
    pub distances: Vec<(f64, f64)>,
}

impl SelectedHinges {
    /// Whether the op can differentiate `distance`.
    pub fn supports(distance: Distance) -> bool {
        matches!(distance, Distance::Euclidean | Distance::Dot)
    }

    fn hinge(&self, (positive, negative): (f64, f64)) -> f64 {
        self.margin + positive - negative
    }

    /// The rows' values as f64, `[rows, dim]` row-major.
    fn rows(t: &Tensor) -> candle_core::Result<(Vec<f64>, usize)> {
        let (_, dim) = t.dims2()?;
        Ok((t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?, dim))
    }
}

impl CustomOp2 for SelectedHinges {
    fn name(&self) -> &'static str {
        "selected_hinges"
    }

    fn cpu_fwd(
        &self,
        anchors: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let sum: f64 = self
            .distances
            .iter()
            .map(|&pair| self.hinge(pair).max(0.0))
            .sum();
        let out = match anchors {
            CpuStorage::F32(_) => CpuStorage::F32(vec![sum as f32]),
            CpuStorage::F64(_) => CpuStorage::F64(vec![sum]),
            other => candle_core::bail!("selected_hinges: unsupported dtype {:?}", other.dtype()),
        };
        Ok((out, Shape::from(())))
    }

    fn bwd(
        &self,
        anchors: &Tensor,
        references: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let upstream = grad.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let (u, dim) = Self::rows(anchors)?;
        let (v, _) = Self::rows(references)?;
        // Each active pair adds `c · ∂d(u_a, v_r)` to both rows: `s (u_a − v_r)` with
        // `s = c / d` (Euclidean) or `−c v_r` and `−c u_a` with `s = c` (dot). ReLU passes the
        // gradient at exactly 0, as candle's does. The positive's coefficient is gathered over
        // its tuple row's triplets and added once, after the row's negatives.
        let euclidean = matches!(self.distance, Distance::Euclidean);
        let scale = |d: f64, c: f64| if euclidean { c / d } else { c };
        let mut pairs: Vec<(u32, u32, f64)> = Vec::with_capacity(2 * self.triplets.len());
        let mut positive: Option<(u32, u32, f64, f64)> = None;
        for (&[a, p, n], &pair) in self.triplets.iter().zip(&self.distances) {
            if self.hinge(pair) < 0.0 {
                continue;
            }
            match &mut positive {
                Some((pa, pp, _, c)) if (*pa, *pp) == (a, p) => *c += upstream,
                _ => {
                    if let Some((pa, pp, d, c)) = positive.take() {
                        pairs.push((pa, pp, scale(d, c)));
                    }
                    positive = Some((a, p, pair.0, upstream));
                }
            }
            pairs.push((a, n, scale(pair.1, -upstream)));
        }
        if let Some((pa, pp, d, c)) = positive {
            pairs.push((pa, pp, scale(d, c)));
        }
        // Rows in parallel, each adding its pairs in the order above: the same additions in
        // the same order as one pass over the pairs, so the same bits. The pair's gradient is
        // the same expression from either side: `s (own − other)` or `−s · other`.
        let add = |gradient: &mut [f64], own: &[f64], other: &[f64], s: f64| {
            // One loop per distance (a branch inside kept it from vectorising).
            if euclidean {
                for ((g, x), y) in gradient.iter_mut().zip(own).zip(other) {
                    *g += s * (x - y);
                }
            } else {
                for (g, y) in gradient.iter_mut().zip(other) {
                    *g -= s * y;
                }
            }
        };
        // One side's gradient: `oriented` gives a pair's (own row, other row).
        let side = |own: &[f64], other: &[f64], oriented: fn(&(u32, u32, f64)) -> (u32, u32)| {
            let mut gradient = vec![0f64; own.len()];
            for_each_row(
                &mut gradient,
                dim,
                &pairs,
                |pair| oriented(pair).0,
                |gradient, pair| {
                    let (i, j) = oriented(pair);
                    add(gradient, row_of(own, i, dim), row_of(other, j, dim), pair.2);
                },
            );
            gradient
        };
        let du = side(&u, &v, |&(a, r, _)| (a, r));
        let dv = side(&v, &u, |&(a, r, _)| (r, a));
        let gradient = |values: Vec<f64>, like: &Tensor| {
            Tensor::from_vec(values, like.shape(), like.device())?.to_dtype(like.dtype())
        };
        Ok((
            Some(gradient(du, anchors)?),
            Some(gradient(dv, references)?),
        ))
    }
}

/// Row `i` of a `[rows, dim]` row-major matrix.
fn row_of(values: &[f64], i: u32, dim: usize) -> &[f64] {
    &values[i as usize * dim..(i as usize + 1) * dim]
}

/// Calls `add(row_values, pair)` for every pair whose row (`pair_row`) is that row of `values`
/// (`[rows, dim]` row-major), rows in parallel, each row's pairs in their order in `pairs`.
fn for_each_row<P: Sync>(
    values: &mut [f64],
    dim: usize,
    pairs: &[P],
    pair_row: impl Fn(&P) -> u32 + Sync,
    add: impl Fn(&mut [f64], &P) + Sync,
) {
    if dim == 0 {
        return;
    }
    let rows = values.len() / dim;
    // A stable counting sort of the pairs by row: row `i`'s are `order[starts[i]..starts[i + 1]]`.
    let mut starts = vec![0usize; rows + 1];
    for pair in pairs {
        starts[pair_row(pair) as usize + 1] += 1;
    }
    for i in 0..rows {
        starts[i + 1] += starts[i];
    }
    let mut next = starts.clone();
    let mut order = vec![0usize; pairs.len()];
    for (index, pair) in pairs.iter().enumerate() {
        let slot = &mut next[pair_row(pair) as usize];
        order[*slot] = index;
        *slot += 1;
    }
    values
        .par_chunks_mut(dim)
        .enumerate()
        .for_each(|(i, values)| {
            for &index in &order[starts[i]..starts[i + 1]] {
                add(values, &pairs[index]);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::hinge_sum::HingeSum;
    use candle_core::{Device, Var};

    /// The parallel backward against one sequential pass over the pairs (the positive's
    /// coefficient added after its tuple row's negatives): the same bits, on a batch where
    /// rows are shared by many pairs, for both distances and with some hinges inactive.
    #[test]
    fn rows_in_parallel_equal_one_pass_in_order() {
        let (n, m, dim) = (40, 50, 16);
        let u = crate::test_values::spread(n * dim, 3);
        let v = crate::test_values::spread(m * dim, 4);
        let mut triplets = Vec::new();
        for a in 0..n as u32 {
            for p in [a % m as u32, (a * 7 + 1) % m as u32] {
                for k in 0..5u32 {
                    triplets.push([a, p, (a * 13 + k * 11 + 2) % m as u32]);
                }
            }
        }
        let distances: Vec<(f64, f64)> = triplets
            .iter()
            .enumerate()
            .map(|(i, _)| (0.5 + (i % 7) as f64 * 0.1, 0.4 + (i % 5) as f64 * 0.13))
            .collect();
        for distance in [Distance::Euclidean, Distance::Dot] {
            let op = SelectedHinges {
                margin: 0.05,
                distance,
                triplets: triplets.clone(),
                distances: distances.clone(),
            };
            assert!(distances.iter().any(|&d| op.hinge(d) < 0.0));
            let tensor = |values: &[f64], rows: usize| {
                Tensor::from_vec(values.to_vec(), (rows, dim), &candle_core::Device::Cpu).unwrap()
            };
            let (anchors, references) = (tensor(&u, n), tensor(&v, m));
            let upstream = Tensor::new(0.75f64, &candle_core::Device::Cpu).unwrap();
            let (du, dv) = op.bwd(&anchors, &references, &upstream, &upstream).unwrap();
            let flat = |t: Option<Tensor>| -> Vec<f64> {
                t.unwrap().flatten_all().unwrap().to_vec1().unwrap()
            };
            let (du, dv) = (flat(du), flat(dv));

            let (mut want_u, mut want_v) = (vec![0f64; n * dim], vec![0f64; m * dim]);
            let mut add = |a: usize, r: usize, d: f64, c: f64| {
                for k in 0..dim {
                    let (x, y) = (u[a * dim + k], v[r * dim + k]);
                    if distance == Distance::Euclidean {
                        let step = c / d * (x - y);
                        want_u[a * dim + k] += step;
                        want_v[r * dim + k] -= step;
                    } else {
                        want_u[a * dim + k] -= c * y;
                        want_v[r * dim + k] -= c * x;
                    }
                }
            };
            let mut positive: Option<(usize, usize, f64, f64)> = None;
            for (&[a, p, q], &pair) in triplets.iter().zip(&distances) {
                if op.hinge(pair) < 0.0 {
                    continue;
                }
                let (a, p, q) = (a as usize, p as usize, q as usize);
                match &mut positive {
                    Some((pa, pp, _, c)) if (*pa, *pp) == (a, p) => *c += 0.75,
                    _ => {
                        if let Some((pa, pp, d, c)) = positive.take() {
                            add(pa, pp, d, c);
                        }
                        positive = Some((a, p, pair.0, 0.75));
                    }
                }
                add(a, q, pair.1, -0.75);
            }
            if let Some((pa, pp, d, c)) = positive {
                add(pa, pp, d, c);
            }
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert!(
                want_u.iter().any(|g| g.abs() > 0.1),
                "{distance:?}: a real gradient"
            );
            assert_eq!(bits(&du), bits(&want_u), "{distance:?}: anchors");
            assert_eq!(bits(&dv), bits(&want_v), "{distance:?}: references");
        }
    }

    /// The op against the sum through the distance matrix ([`HingeSum`] on
    /// [`Distance::matrix`], differentiated by autograd): the same loss bit for bit and the same
    /// gradients, in f32 and f64, for two sets and for one set ranked against itself, with
    /// triplets that share a positive, one with an inactive hinge, and an anchor whose
    /// positive repeats after another row.
    #[test]
    fn equals_the_sum_through_the_matrix() {
        let values = crate::test_values::spread;
        let triplets: Vec<[u32; 3]> = vec![
            [0, 1, 2],
            [0, 1, 3],
            [0, 1, 4],
            [2, 0, 1],
            [2, 0, 5],
            [0, 1, 5],
            [4, 3, 0],
        ];
        let (n, m, dim) = (5, 6, 4);
        for distance in [Distance::Euclidean, Distance::Dot] {
            for dtype in [DType::F32, DType::F64] {
                for same_set in [false, true] {
                    let what = format!("{distance:?} {dtype:?} same set {same_set}");
                    let leaf = |rows: usize, salt: usize| {
                        Var::from_tensor(
                            &Tensor::from_vec(values(rows * dim, salt), (rows, dim), &Device::Cpu)
                                .unwrap()
                                .to_dtype(dtype)
                                .unwrap(),
                        )
                        .unwrap()
                    };
                    let u = leaf(m, 1);
                    let v = if same_set { u.clone() } else { leaf(m, 2) };
                    let anchors = u.as_tensor().narrow(0, 0, n).unwrap();
                    let matrix = distance.matrix(&anchors, v.as_tensor()).unwrap();
                    let entries: Vec<f64> = matrix
                        .to_dtype(DType::F64)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1()
                        .unwrap();
                    // The margin puts one triplet's hinge below zero.
                    let at = |a: u32, r: u32| entries[a as usize * m + r as usize];
                    let hinges: Vec<f64> = triplets
                        .iter()
                        .map(|&[a, p, q]| at(a, p) - at(a, q))
                        .collect();
                    let margin = -(hinges.iter().copied().fold(f64::MAX, f64::min) + 1e-3);
                    assert!(hinges.iter().any(|h| margin + h > 0.0), "{what}");
                    let by_matrix = matrix
                        .apply_op1(HingeSum {
                            margin,
                            triplets: triplets.clone(),
                        })
                        .unwrap();
                    let by_rows = anchors
                        .apply_op2(
                            v.as_tensor(),
                            SelectedHinges {
                                margin,
                                distance,
                                triplets: triplets.clone(),
                                distances: triplets
                                    .iter()
                                    .map(|&[a, p, q]| (at(a, p), at(a, q)))
                                    .collect(),
                            },
                        )
                        .unwrap();
                    let scalar = |t: &Tensor| -> f64 {
                        t.to_dtype(DType::F64).unwrap().to_scalar().unwrap()
                    };
                    assert_eq!(
                        scalar(&by_matrix).to_bits(),
                        scalar(&by_rows).to_bits(),
                        "{what}"
                    );
                    let (want, got) = (by_matrix.backward().unwrap(), by_rows.backward().unwrap());
                    let tolerance = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
                    for leaf in [&u, &v] {
                        let flat = |g: &candle_core::backprop::GradStore| -> Vec<f64> {
                            g.get(leaf.as_tensor())
                                .unwrap()
                                .to_dtype(DType::F64)
                                .unwrap()
                                .flatten_all()
                                .unwrap()
                                .to_vec1()
                                .unwrap()
                        };
                        let (want, got) = (flat(&want), flat(&got));
                        assert!(
                            want.iter().any(|g| g.abs() > 0.1),
                            "{what}: a real gradient"
                        );
                        for (w, g) in want.iter().zip(&got) {
                            assert!((w - g).abs() <= tolerance, "{what}: {g} vs {w}");
                        }
                    }
                }
            }
        }
    }
}
