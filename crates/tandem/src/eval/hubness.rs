//! Hubness: how often each image is among the top k of the caption queries. In high-dimensional
//! spaces a few "hub" images sit near everything and are retrieved for unrelated captions; the
//! k-occurrence counts and their skewness (Radovanović et al. 2010) show it.

use candle_core::{Device, Tensor};
use serde::Serialize;

use crate::error::Result;

/// k-occurrence of every image over all caption queries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hubness {
    /// The k of the top-k lists.
    pub k: usize,
    /// For each image, in how many captions' top k it appears.
    pub occurrences: Vec<u32>,
    /// Skewness of the occurrence counts (0 for a symmetric spread; large and positive when a
    /// few images are hubs).
    pub skewness: f64,
}

impl Hubness {
    /// Image indices by occurrence, most retrieved first (ties: lower index first), at most `n`.
    pub fn hubs(&self, n: usize) -> Vec<(usize, u32)> {
        let mut order: Vec<usize> = (0..self.occurrences.len()).collect();
        order.sort_by(|&a, &b| {
            self.occurrences[b]
                .cmp(&self.occurrences[a])
                .then(a.cmp(&b))
        });
        order
            .into_iter()
            .take(n)
            .map(|i| (i, self.occurrences[i]))
            .collect()
    }
}

/// The top `k` gallery rows (`images`) of each query row (`texts`) by inner product, ordered
/// as [`crate::eval::Ranks`] orders them (score descending, lower index first on ties). Any
/// gallery works: the index also searches captions with image queries.
///
/// # Shapes
/// `images: [n_gallery * dim]`, `texts: [n_queries * dim]`, row-major.
///
/// # Errors
/// A tensor error from the matrix products.
pub fn top_k(
    images: &[f32],
    texts: &[f32],
    dim: usize,
    k: usize,
    block: usize,
    device: &Device,
) -> Result<Vec<Vec<u32>>> {
    let n_images = images.len() / dim;
    let n_texts = texts.len() / dim;
    let k = k.min(n_images);
    let gallery = Tensor::from_slice(images, (n_images, dim), device)?
        .t()?
        .contiguous()?;
    let mut out = Vec::with_capacity(n_texts);
    for start in (0..n_texts).step_by(block.max(1)) {
        let end = (start + block.max(1)).min(n_texts);
        let q = Tensor::from_slice(&texts[start * dim..end * dim], (end - start, dim), device)?;
        let scores: Vec<f32> = q.matmul(&gallery)?.flatten_all()?.to_vec1()?;
        for row in scores.chunks(n_images) {
            let order = |a: &u32, b: &u32| by_score_then_index(row, *a, *b);
            let mut idx: Vec<u32> = (0..n_images as u32).collect();
            if k < n_images && k > 0 {
                idx.select_nth_unstable_by(k - 1, order);
            }
            idx.truncate(k);
            idx.sort_by(order);
            out.push(idx);
        }
    }
    Ok(out)
}

/// Higher score first, lower index on equal scores (IEEE equality, so 0.0 and -0.0 tie), the
/// tie rule of [`crate::eval::Ranks`].
fn by_score_then_index(row: &[f32], a: u32, b: u32) -> std::cmp::Ordering {
    let (x, y) = (row[a as usize], row[b as usize]);
    if x > y {
        std::cmp::Ordering::Less
    } else if x < y {
        std::cmp::Ordering::Greater
    } else {
        a.cmp(&b)
    }
}

/// k-occurrence counts and their skewness.
///
/// # Errors
/// A tensor error from the matrix products.
pub fn hubness(
    images: &[f32],
    texts: &[f32],
    dim: usize,
    k: usize,
    block: usize,
    device: &Device,
) -> Result<Hubness> {
    let n_images = images.len() / dim;
    let mut occurrences = vec![0u32; n_images];
    for list in top_k(images, texts, dim, k, block, device)? {
        for i in list {
            occurrences[i as usize] += 1;
        }
    }
    Ok(Hubness {
        k,
        skewness: skewness(&occurrences),
        occurrences,
    })
}

/// Sample skewness `E[(x − μ)³] / σ³` (0 when all counts are equal).
fn skewness(values: &[u32]) -> f64 {
    let n = values.len() as f64;
    if n == 0.0 {
        return 0.0;
    }
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let moment = |p: i32| {
        values
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(p))
            .sum::<f64>()
            / n
    };
    let variance = moment(2);
    if variance == 0.0 {
        0.0
    } else {
        moment(3) / variance.powf(1.5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hand_computed_hub() {
        // Image 0 = (1, 0) is closest to every caption; images 1, 2 point away.
        let images = [1.0, 0.0, -1.0, 0.0, 0.0, -1.0];
        let texts = [0.9, 0.1, 0.8, 0.3, 0.7, -0.2];
        let h = hubness(&images, &texts, 2, 1, 2, &Device::Cpu).unwrap();
        assert_eq!(h.occurrences, vec![3, 0, 0]);
        assert_eq!(h.hubs(2), vec![(0, 3), (1, 0)]);
        // Counts 3, 0, 0: mean 1, central moments m2 = 2, m3 = 2 → 2 / 2^1.5.
        assert!((h.skewness - 2.0 / 2f64.powf(1.5)).abs() < 1e-12);
    }

    proptest! {
        /// The streamed top k equals a full stable sort of each query's scores, ties included.
        #[test]
        fn top_k_equals_full_sort(
            n_images in 1usize..9,
            n_texts in 1usize..9,
            raw in proptest::collection::vec(-3i8..3, 9 * 3 * 2),
            k in 1usize..10,
            block in 1usize..4,
        ) {
            let images: Vec<f32> = raw[..n_images * 3].iter().map(|&v| f32::from(v)).collect();
            let texts: Vec<f32> = raw[27..27 + n_texts * 3].iter().map(|&v| f32::from(v)).collect();
            let got = top_k(&images, &texts, 3, k, block, &Device::Cpu).unwrap();
            for (t, list) in got.iter().enumerate() {
                let scores: Vec<f32> = (0..n_images)
                    .map(|i| (0..3).map(|d| texts[t * 3 + d] * images[i * 3 + d]).sum())
                    .collect();
                let mut order: Vec<u32> = (0..n_images as u32).collect();
                // A full sort under the ranking's tie rule (0.0 and -0.0 are equal scores).
                order.sort_by(|&a, &b| {
                    scores[b as usize]
                        .partial_cmp(&scores[a as usize])
                        .unwrap()
                        .then(a.cmp(&b))
                });
                order.truncate(k);
                prop_assert_eq!(list, &order);
            }
        }
    }
}
