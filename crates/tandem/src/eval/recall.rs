//! Ranks of the first relevant item for every query, streamed in blocks of queries so the full
//! similarity matrix is never held.
//!
//! Tie rule: the gallery is ordered by score, higher first, and equal scores by lower index
//! first (a stable sort). The rank of a query is the 1-based position of its first relevant item
//! in that order; for image queries the positions of all their captions are kept too (for
//! mAP@R and NDCG).

use std::sync::atomic::{AtomicUsize, Ordering};

use super::score::{BlockScorer, GALLERY_GROUP, Packed, QUERY_GROUP, chunk_groups_for, dot};

/// 1-based rank of the first relevant item for every query, both ways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranks {
    /// Image→text: for each image, the rank of its best-placed caption among all captions.
    pub image_to_text: Vec<usize>,
    /// Image→text: for each image, the ranks of all its captions, ascending.
    pub image_to_text_all: Vec<Vec<usize>>,
    /// Text→image: for each caption, the rank of its image among all images.
    pub text_to_image: Vec<usize>,
}

/// Does `other` (score `s`, index `j`) come before the positive (score `p`, index `i`)?
#[inline]
fn before(s: f32, j: usize, p: f32, i: usize) -> bool {
    s > p || (s == p && j < i)
}

/// Ranks from a full score matrix `scores[t][i]` (text `t`, image `i`, higher = closer).
/// The brute-force reference for [`ranks_from_embeddings`] (with `scores[t][i]` = [`dot`]).
pub fn ranks_from_scores(scores: &[Vec<f32>], text_image: &[u32], n_images: usize) -> Ranks {
    let text_to_image = scores
        .iter()
        .zip(text_image)
        .map(|(row, &img)| {
            let img = img as usize;
            1 + (0..n_images)
                .filter(|&j| j != img && before(row[j], j, row[img], img))
                .count()
        })
        .collect();
    let image_to_text_all: Vec<Vec<usize>> = (0..n_images)
        .map(|i| {
            let mut order: Vec<usize> = (0..scores.len()).collect();
            // IEEE comparison, as `before`: 0.0 and -0.0 are equal scores.
            order.sort_by(|&a, &b| {
                scores[b][i]
                    .partial_cmp(&scores[a][i])
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then(a.cmp(&b))
            });
            order
                .iter()
                .enumerate()
                .filter(|&(_, &t)| text_image[t] as usize == i)
                .map(|(position, _)| position + 1)
                .collect()
        })
        .collect();
    Ranks {
        image_to_text: first_ranks(&image_to_text_all, scores.len()),
        image_to_text_all,
        text_to_image,
    }
}

/// The first rank of each image; an image without captions ranks after every caption.
fn first_ranks(all: &[Vec<usize>], n_texts: usize) -> Vec<usize> {
    all.iter()
        .map(|r| r.first().copied().unwrap_or(n_texts + 1))
        .collect()
}

/// Captions per work item of [`ranks_from_embeddings`] (a multiple of [`QUERY_GROUP`]).
const TEXT_BLOCK: usize = 8 * QUERY_GROUP;
/// Captions per image compared in the vectorised sweep (COCO has 5–7); deeper ones are
/// compared one by one.
const DENSE_DEPTH: usize = 8;
/// Ranks from L2-normalised embeddings, scoring by inner product ([`dot`]), both ways in one
/// pass over the caption × image pairs: blocks of captions are scored against cache-sized
/// chunks of the gallery (`eval::tile`) and each tile is scanned at once, so memory stays at the
/// embeddings plus O(captions + images) whatever the sizes. Blocks are shared out to every
/// core.
///
/// # Shapes
/// `images: [n_images * dim]`, `texts: [n_texts * dim]`, row-major; `text_image: [n_texts]`.
pub fn ranks_from_embeddings(
    images: &[f32],
    texts: &[f32],
    dim: usize,
    text_image: &[u32],
) -> Ranks {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    ranks_on_threads(images, texts, dim, text_image, threads)
}

/// [`ranks_from_embeddings`] on `threads` threads (the result does not depend on it).
pub fn ranks_on_threads(
    images: &[f32],
    texts: &[f32],
    dim: usize,
    text_image: &[u32],
    threads: usize,
) -> Ranks {
    let chunk_groups = chunk_groups_for(dim);
    let tiling = Tiling {
        text_block: TEXT_BLOCK,
        chunk_groups,
        max_depth: DENSE_DEPTH,
    };
    ranks_tiled(images, texts, dim, text_image, threads, tiling)
}

/// How [`ranks_tiled`] cuts the work: captions per work item (a multiple of
/// [`QUERY_GROUP`]), gallery groups per tile, and captions per image in the vectorised sweep.
/// Tests use tiny ones to cross every boundary.
#[derive(Debug, Clone, Copy)]
struct Tiling {
    text_block: usize,
    chunk_groups: usize,
    max_depth: usize,
}

fn ranks_tiled(
    images: &[f32],
    texts: &[f32],
    dim: usize,
    text_image: &[u32],
    threads: usize,
    tiling: Tiling,
) -> Ranks {
    let Tiling {
        text_block,
        chunk_groups,
        max_depth,
    } = tiling;
    let dim = dim.max(1);
    let n_images = images.len() / dim;
    let n_texts = texts.len() / dim;
    // The score of each caption with its own image, bit-identical to its tile entry.
    let positive: Vec<f32> = texts
        .chunks_exact(dim)
        .zip(text_image)
        .map(|(text, &img)| dot(text, &images[img as usize * dim..(img as usize + 1) * dim]))
        .collect();

    // Each image's captions in ranking order (score descending, index ascending), flattened:
    // image i's list is `relevant[offsets[i]..offsets[i + 1]]`.
    let mut offsets = vec![0usize; n_images + 1];
    for &img in text_image {
        offsets[img as usize + 1] += 1;
    }
    for i in 0..n_images {
        offsets[i + 1] += offsets[i];
    }
    let mut relevant = vec![(0f32, 0usize); n_texts];
    let mut fill = offsets.clone();
    for (t, &img) in text_image.iter().enumerate() {
        relevant[fill[img as usize]] = (positive[t], t);
        fill[img as usize] += 1;
    }
    for i in 0..n_images {
        relevant[offsets[i]..offsets[i + 1]].sort_by(|a, b| {
            b.0.partial_cmp(&a.0)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.1.cmp(&b.1))
        });
    }
    // The first `depth` captions of every image laid out caption-rank-major —
    // `dense_score[k * n_images + i]` is image i's k-th caption — so one row of tile scores is
    // compared with every image's k-th caption in one vectorised sweep. Missing captions are
    // NaN, which compares false and so counts nothing. Captions beyond `depth` (images with
    // many captions) take a scalar path.
    let depth = (0..n_images)
        .map(|i| offsets[i + 1] - offsets[i])
        .max()
        .unwrap_or(0)
        .min(max_depth);
    let mut dense_score = vec![f32::NAN; depth * n_images];
    let mut dense_caption = vec![0u32; depth * n_images];
    for i in 0..n_images {
        for (k, &(p, c)) in relevant[offsets[i]..offsets[i + 1]]
            .iter()
            .take(depth)
            .enumerate()
        {
            dense_score[k * n_images + i] = p;
            dense_caption[k * n_images + i] = c as u32;
        }
    }
    let deep: Vec<usize> = (0..n_images)
        .filter(|&i| offsets[i + 1] - offsets[i] > depth)
        .collect();

    let gallery = Packed::<GALLERY_GROUP>::pack(images, dim);
    let n_blocks = n_texts.div_ceil(text_block);
    let next_block = AtomicUsize::new(0);
    let threads = threads.clamp(1, n_blocks.max(1));
    let (positive, relevant, offsets) = (&positive, &relevant, &offsets);
    let (dense_score, dense_caption, deep) = (&dense_score, &dense_caption, &deep);
    let (gallery, next_block) = (&gallery, &next_block);

    // Per thread: the text→image ranks of the blocks it took; `dense[k * n_images + i]`
    // counts the foreign captions that come before image i's k-th caption for k < depth, and
    // `pushed[offsets[i] + k]` for deeper ones.
    let work = move || {
        let mut scorer = BlockScorer::new(gallery, text_block, chunk_groups);
        let mut dense = vec![0u32; depth * n_images];
        let mut pushed = vec![0u32; n_texts];
        let mut ranked: Vec<(usize, Vec<usize>)> = Vec::new();
        loop {
            let block = next_block.fetch_add(1, Ordering::Relaxed);
            if block >= n_blocks {
                break;
            }
            let start = block * text_block;
            let end = (start + text_block).min(n_texts);
            let mut ahead = vec![0usize; end - start];
            scorer.score(
                &texts[start * dim..end * dim],
                |first, columns, scores, width| {
                    for (r, t) in (start..end).enumerate() {
                        let row = &scores[r * width..r * width + columns];
                        let own = text_image[t] as usize;
                        let p = positive[t];
                        // Images before the caption's own one; its own scores exactly `p` and
                        // so never counts.
                        ahead[r] += row
                            .iter()
                            .enumerate()
                            .map(|(c, &v)| usize::from((v > p) | ((v == p) & (first + c < own))))
                            .sum::<usize>();
                        let columns = first..first + columns;
                        let caption = t as u32;
                        for k in 0..depth {
                            let at = k * n_images;
                            let counts = &mut dense[at + columns.start..at + columns.end];
                            let ps = &dense_score[at + columns.start..at + columns.end];
                            let cs = &dense_caption[at + columns.start..at + columns.end];
                            for (((count, &p), &c), &v) in
                                counts.iter_mut().zip(ps).zip(cs).zip(row)
                            {
                                *count += u32::from((v > p) | ((v == p) & (caption < c)));
                            }
                        }
                        // The caption is not foreign to its own image: take back what the sweep
                        // counted there.
                        if columns.contains(&own) {
                            let v = row[own - columns.start];
                            for k in 0..depth {
                                let at = k * n_images + own;
                                let (p, c) = (dense_score[at], dense_caption[at]);
                                dense[at] -= u32::from((v > p) | ((v == p) & (caption < c)));
                            }
                        }
                        let from = deep.partition_point(|&i| i < columns.start);
                        for &i in deep[from..].iter().take_while(|&&i| i < columns.end) {
                            if i == own {
                                continue;
                            }
                            let v = row[i - columns.start];
                            let slots = offsets[i] + depth..offsets[i + 1];
                            for (count, &(p, c)) in
                                pushed[slots.clone()].iter_mut().zip(&relevant[slots])
                            {
                                *count += u32::from(before(v, t, p, c));
                            }
                        }
                    }
                },
            );
            ranked.push((start, ahead));
        }
        (ranked, dense, pushed)
    };
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads).map(|_| scope.spawn(work)).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a ranking thread panicked"))
            .collect()
    });

    let mut text_to_image = vec![0usize; n_texts];
    let mut pushed = vec![0usize; n_texts];
    for (ranked, dense, deeper) in results {
        for (start, ahead) in ranked {
            for (r, a) in ahead.into_iter().enumerate() {
                text_to_image[start + r] = 1 + a;
            }
        }
        for (total, c) in pushed.iter_mut().zip(deeper) {
            *total += c as usize;
        }
        for (k, counts) in dense.chunks_exact(n_images.max(1)).enumerate() {
            for (i, &c) in counts.iter().enumerate() {
                if offsets[i] + k < offsets[i + 1] {
                    pushed[offsets[i] + k] += c as usize;
                }
            }
        }
    }
    let image_to_text_all: Vec<Vec<usize>> = (0..n_images)
        .map(|i| {
            (offsets[i]..offsets[i + 1])
                .enumerate()
                // k of the image's own captions and `pushed` foreign ones come first.
                .map(|(k, slot)| 1 + k + pushed[slot])
                .collect()
        })
        .collect();
    Ranks {
        image_to_text: first_ranks(&image_to_text_all, n_texts),
        image_to_text_all,
        text_to_image,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hand_computed_ranks_with_ties_and_several_captions() {
        // 2 images, 3 captions: captions 0,1 → image 0; caption 2 → image 1.
        let scores = vec![vec![0.9, 0.1], vec![0.2, 0.2], vec![0.5, 0.4]];
        let r = ranks_from_scores(&scores, &[0, 0, 1], 2);
        // caption 0: image 0 first → 1. caption 1: tie 0.2/0.2, own image 0 has lower index → 1.
        // caption 2: image 0 (0.5) beats image 1 (0.4) → 2.
        assert_eq!(r.text_to_image, vec![1, 1, 2]);
        // image 0: captions ordered 0 (0.9), 2 (0.5), 1 (0.2) → first relevant at 1.
        // image 1: captions 2 (0.4), 1 (0.2), 0 (0.1) → 1.
        assert_eq!(r.image_to_text, vec![1, 1]);
        // Make image 1's best caption tie with an earlier foreign caption: it loses the tie.
        let scores = vec![vec![0.9, 0.4], vec![0.2, 0.2], vec![0.5, 0.4]];
        assert_eq!(
            ranks_from_scores(&scores, &[0, 0, 1], 2).image_to_text,
            vec![1, 2]
        );
    }

    /// Brute-force scores with the ranking's own score function.
    fn scores_of(images: &[f32], texts: &[f32], dim: usize) -> Vec<Vec<f32>> {
        texts
            .chunks_exact(dim)
            .map(|t| images.chunks_exact(dim).map(|i| dot(t, i)).collect())
            .collect()
    }

    proptest! {
        #[test]
        fn tiled_ranks_equal_brute_force(
            n_images in 1usize..40,
            extra in 0usize..40,
            dim in 1usize..6,
            integers in any::<bool>(),
            seed in any::<u64>(),
            text_groups in 1usize..4,
            chunk_groups in 1usize..3,
            max_depth in 0usize..4,
            threads in 1usize..4,
        ) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let n_texts = n_images + extra;
            // Small integers make exact ties (and 0.0 against -0.0) common; random floats
            // make the summation order matter.
            let mut value = || -> f32 {
                if integers { f32::from(rng.random_range(-3i8..3)) } else { rng.random_range(-1.0..1.0) }
            };
            let images: Vec<f32> = (0..n_images * dim).map(|_| value()).collect();
            let texts: Vec<f32> = (0..n_texts * dim).map(|_| value()).collect();
            // Every image has a caption except, sometimes, the last.
            let captioned = if extra % 2 == 0 { n_images } else { n_images.max(2) - 1 };
            let text_image: Vec<u32> = (0..n_texts)
                .map(|t| if t < captioned { t as u32 } else { rng.random_range(0..captioned as u32) })
                .collect();
            let expected = ranks_from_scores(&scores_of(&images, &texts, dim), &text_image, n_images);
            let tiling = Tiling { text_block: text_groups * QUERY_GROUP, chunk_groups, max_depth };
            let got = ranks_tiled(&images, &texts, dim, &text_image, threads, tiling);
            prop_assert_eq!(&got, &expected);
            prop_assert_eq!(ranks_from_embeddings(&images, &texts, dim, &text_image), expected);
        }
    }
}
