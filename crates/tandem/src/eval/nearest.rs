//! Exact k-nearest search by inner product: the top `k` gallery rows of each query, on the tiled
//! kernel, on every core, without a score matrix.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::score::{BlockScorer, GALLERY_GROUP, Packed, QUERY_GROUP, chunk_groups_for};

/// The top `k` gallery rows (`images`) of each query row (`texts`) by inner product
/// ([`crate::eval::dot`]), ordered as [`crate::eval::Ranks`] orders them (score descending,
/// lower index first on ties). Any gallery works: the index also searches captions with image
/// queries. Packs the gallery first; to search one gallery many times pack it once and call
/// [`top_k_in`].
///
/// # Shapes
/// `images: [n_gallery * dim]`, `texts: [n_queries * dim]`, row-major.
pub fn top_k(images: &[f32], texts: &[f32], dim: usize, k: usize) -> Vec<Vec<u32>> {
    top_k_in(&Packed::pack(images, dim.max(1)), texts, k)
}

/// [`top_k`] against a gallery packed once ([`Packed::pack`]). Blocks of queries are scored
/// against cache-sized gallery chunks, keeping each query's best `k` so far; when there are
/// fewer query blocks than cores (a single query, say) the gallery is split between the
/// cores too and the partial lists merged, so one query over a large gallery uses them all.
///
/// # Shapes
/// `queries: [n_queries * gallery.dim()]`, row-major.
pub fn top_k_in(gallery: &Packed<GALLERY_GROUP>, queries: &[f32], k: usize) -> Vec<Vec<u32>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk_groups = chunk_groups_for(gallery.dim());
    top_k_tiled(gallery, queries, k, 8 * QUERY_GROUP, chunk_groups, threads)
}

/// A query's best `(score, gallery row)` pairs so far, best first.
type BestList = Vec<(f32, u32)>;

/// `a` comes before `b`: higher score, or equal score and lower index.
fn before(a: (f32, u32), b: (f32, u32)) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 < b.1)
}

/// [`top_k_in`] with explicit tiling (queries per work item, a multiple of [`QUERY_GROUP`];
/// gallery groups per tile) and thread count; tests use tiny ones.
fn top_k_tiled(
    gallery: &Packed<GALLERY_GROUP>,
    queries: &[f32],
    k: usize,
    query_block: usize,
    chunk_groups: usize,
    threads: usize,
) -> Vec<Vec<u32>> {
    let dim = gallery.dim();
    let n_queries = queries.len() / dim;
    let k = k.min(gallery.len());
    let threads = threads.max(1);
    let n_blocks = n_queries.div_ceil(query_block);
    // Work item w: query block w / slices against gallery slice w % slices.
    let slices = if n_blocks >= threads {
        1
    } else {
        threads
            .div_ceil(n_blocks.max(1))
            .min(gallery.groups().max(1))
    };
    let n_items = n_blocks * slices;
    let next_item = AtomicUsize::new(0);
    let next_item = &next_item;
    let work = move || {
        let mut scorer = BlockScorer::new(gallery, query_block, chunk_groups);
        let mut done: Vec<(usize, Vec<BestList>)> = Vec::new();
        loop {
            let item = next_item.fetch_add(1, Ordering::Relaxed);
            if item >= n_items {
                break;
            }
            let (block, slice) = (item / slices, item % slices);
            let start = block * query_block;
            let end = (start + query_block).min(n_queries);
            let groups = gallery.groups();
            let range = slice * groups / slices..(slice + 1) * groups / slices;
            // Each query's best so far, in order; full lists admit only what beats the last.
            let mut best: Vec<BestList> = vec![Vec::with_capacity(k + 1); end - start];
            scorer.score_groups(
                &queries[start * dim..end * dim],
                range,
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
            done.push((start, best));
        }
        done
    };
    let mut merged: Vec<BestList> = vec![Vec::new(); n_queries];
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.min(n_items.max(1)))
            .map(|_| scope.spawn(work))
            .collect();
        for handle in handles {
            for (start, lists) in handle.join().expect("a top-k thread panicked") {
                for (r, list) in lists.into_iter().enumerate() {
                    merged[start + r].extend(list);
                }
            }
        }
    });
    merged
        .into_iter()
        .map(|mut list| {
            // Partial lists from disjoint slices: (score, index) pairs are distinct, so the
            // order is total and the merge is the same whichever thread finished first.
            list.sort_by(|&a, &b| {
                if before(a, b) {
                    std::cmp::Ordering::Less
                } else {
                    std::cmp::Ordering::Greater
                }
            });
            list.truncate(k);
            list.into_iter().map(|(_, i)| i).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::dot;
    use proptest::prelude::*;

    proptest! {
        /// The tiled top k equals a full stable sort of each query's scores, ties included,
        /// whatever the tiling, threads and gallery split.
        #[test]
        fn top_k_equals_full_sort(
            n_images in 1usize..40,
            n_texts in 1usize..30,
            raw in proptest::collection::vec(-3i8..3, 70 * 3),
            k in 0usize..12,
            query_groups in 1usize..3,
            chunk_groups in 1usize..3,
            threads in 1usize..6,
        ) {
            let images: Vec<f32> = raw[..n_images * 3].iter().map(|&v| f32::from(v)).collect();
            let texts: Vec<f32> = raw[40 * 3..40 * 3 + n_texts * 3].iter().map(|&v| f32::from(v)).collect();
            let gallery = Packed::pack(&images, 3);
            let got = top_k_tiled(&gallery, &texts, k, query_groups * QUERY_GROUP, chunk_groups, threads);
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
