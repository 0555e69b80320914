//! Hubness: how often each image is among the top k of the caption queries. In high-dimensional
//! spaces a few "hub" images sit near everything and are retrieved for unrelated captions; the
//! k-occurrence counts and their skewness (Radovanović et al. 2010) show it.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

use super::score::{BlockScorer, GALLERY_GROUP, Packed, QUERY_GROUP, chunk_groups_for};

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

/// The top `k` gallery rows (`images`) of each query row (`texts`) by inner product ([`crate::eval::dot`]),
/// ordered as [`crate::eval::Ranks`] orders them (score descending, lower index first on
/// ties). Any gallery works: the index also searches captions with image queries. Blocks of
/// queries are scored against cache-sized gallery chunks by the tiled kernel on every core,
/// keeping each query's best `k` so far; no score matrix is held.
///
/// # Shapes
/// `images: [n_gallery * dim]`, `texts: [n_queries * dim]`, row-major.
pub fn top_k(images: &[f32], texts: &[f32], dim: usize, k: usize) -> Vec<Vec<u32>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk_groups = chunk_groups_for(dim);
    top_k_tiled(
        images,
        texts,
        dim,
        k,
        8 * QUERY_GROUP,
        chunk_groups,
        threads,
    )
}

/// [`top_k`] with explicit tiling (queries per work item, a multiple of [`QUERY_GROUP`];
/// gallery groups per tile) and thread count; tests use tiny ones.
fn top_k_tiled(
    images: &[f32],
    texts: &[f32],
    dim: usize,
    k: usize,
    query_block: usize,
    chunk_groups: usize,
    threads: usize,
) -> Vec<Vec<u32>> {
    let dim = dim.max(1);
    let n_images = images.len() / dim;
    let n_texts = texts.len() / dim;
    let k = k.min(n_images);
    let gallery = Packed::<GALLERY_GROUP>::pack(images, dim);
    let n_blocks = n_texts.div_ceil(query_block);
    let next_block = AtomicUsize::new(0);
    let (gallery, next_block) = (&gallery, &next_block);
    // `a` comes before `b`: higher score, or equal score and lower index.
    let before = |a: (f32, u32), b: (f32, u32)| a.0 > b.0 || (a.0 == b.0 && a.1 < b.1);
    let work = move || {
        let mut scorer = BlockScorer::new(gallery, query_block, chunk_groups);
        let mut done: Vec<(usize, Vec<Vec<u32>>)> = Vec::new();
        loop {
            let block = next_block.fetch_add(1, Ordering::Relaxed);
            if block >= n_blocks {
                break;
            }
            let start = block * query_block;
            let end = (start + query_block).min(n_texts);
            // Each query's best so far, in order; full lists admit only what beats the last.
            let mut best: Vec<Vec<(f32, u32)>> = vec![Vec::with_capacity(k + 1); end - start];
            scorer.score(
                &texts[start * dim..end * dim],
                |first, columns, scores, width| {
                    for (r, list) in best.iter_mut().enumerate() {
                        for (c, &v) in scores[r * width..r * width + columns].iter().enumerate() {
                            let candidate = (v, (first + c) as u32);
                            if k == 0 || (list.len() == k && !before(candidate, list[k - 1])) {
                                continue;
                            }
                            let at = list.partition_point(|&e| before(e, candidate));
                            list.insert(at, candidate);
                            list.truncate(k);
                        }
                    }
                },
            );
            let lists = best
                .into_iter()
                .map(|l| l.into_iter().map(|(_, i)| i).collect())
                .collect();
            done.push((start, lists));
        }
        done
    };
    let mut out = vec![Vec::new(); n_texts];
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.clamp(1, n_blocks.max(1)))
            .map(|_| scope.spawn(work))
            .collect();
        for handle in handles {
            for (start, lists) in handle.join().expect("a top-k thread panicked") {
                for (r, list) in lists.into_iter().enumerate() {
                    out[start + r] = list;
                }
            }
        }
    });
    out
}

/// k-occurrence counts and their skewness.
pub fn hubness(images: &[f32], texts: &[f32], dim: usize, k: usize) -> Hubness {
    let n_images = images.len() / dim.max(1);
    let mut occurrences = vec![0u32; n_images];
    for list in top_k(images, texts, dim, k) {
        for i in list {
            occurrences[i as usize] += 1;
        }
    }
    Hubness {
        k,
        skewness: skewness(&occurrences),
        occurrences,
    }
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
    use crate::eval::dot;
    use proptest::prelude::*;

    #[test]
    fn hand_computed_hub() {
        // Image 0 = (1, 0) is closest to every caption; images 1, 2 point away.
        let images = [1.0, 0.0, -1.0, 0.0, 0.0, -1.0];
        let texts = [0.9, 0.1, 0.8, 0.3, 0.7, -0.2];
        let h = hubness(&images, &texts, 2, 1);
        assert_eq!(h.occurrences, vec![3, 0, 0]);
        assert_eq!(h.hubs(2), vec![(0, 3), (1, 0)]);
        // Counts 3, 0, 0: mean 1, central moments m2 = 2, m3 = 2 → 2 / 2^1.5.
        assert!((h.skewness - 2.0 / 2f64.powf(1.5)).abs() < 1e-12);
    }

    proptest! {
        /// The tiled top k equals a full stable sort of each query's scores, ties included,
        /// whatever the tiling and threads.
        #[test]
        fn top_k_equals_full_sort(
            n_images in 1usize..40,
            n_texts in 1usize..30,
            raw in proptest::collection::vec(-3i8..3, 70 * 3),
            k in 0usize..12,
            query_groups in 1usize..3,
            chunk_groups in 1usize..3,
            threads in 1usize..4,
        ) {
            let images: Vec<f32> = raw[..n_images * 3].iter().map(|&v| f32::from(v)).collect();
            let texts: Vec<f32> = raw[40 * 3..40 * 3 + n_texts * 3].iter().map(|&v| f32::from(v)).collect();
            let got = top_k_tiled(&images, &texts, 3, k, query_groups * QUERY_GROUP, chunk_groups, threads);
            prop_assert_eq!(&got, &top_k(&images, &texts, 3, k));
            prop_assert_eq!(got.len(), n_texts);
            for (t, list) in got.iter().enumerate() {
                let scores: Vec<f32> = (0..n_images)
                    .map(|i| dot(&texts[t * 3..t * 3 + 3], &images[i * 3..i * 3 + 3]))
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
