//! Ranks of the first relevant item for every query, streamed in blocks of queries so the full
//! similarity matrix is never held.
//!
//! Tie rule: the gallery is ordered by score, higher first, and equal scores by lower index
//! first (a stable sort). The rank of a query is the 1-based position of its first relevant item
//! in that order; for image queries the positions of all their captions are kept too (for
//! mAP@R and NDCG).

use candle_core::{Device, Tensor};

use crate::error::Result;

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
/// The brute-force reference for [`ranks_from_embeddings`].
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

/// Score blocks kept between the two passes of [`ranks_from_embeddings`], at most this many
/// bytes (1 GiB); blocks beyond it are recomputed in the second pass, so memory stays bounded
/// by this plus one block (at most 64 MiB) whatever the gallery size.
pub const SCORE_CACHE_BYTES: usize = 1 << 30;

/// Ranks from L2-normalised embeddings, scoring by inner product, `block` captions at a time,
/// the scans spread over every core.
///
/// # Shapes
/// `images: [n_images * dim]`, `texts: [n_texts * dim]`, row-major.
///
/// # Errors
/// A tensor error from the matrix products.
pub fn ranks_from_embeddings(
    images: &[f32],
    texts: &[f32],
    dim: usize,
    text_image: &[u32],
    block: usize,
    device: &Device,
) -> Result<Ranks> {
    ranks_streamed(
        images,
        texts,
        dim,
        text_image,
        block,
        SCORE_CACHE_BYTES,
        device,
    )
}

/// [`ranks_from_embeddings`] with an explicit score-cache budget in bytes (0: recompute every
/// block in the second pass).
///
/// # Errors
/// A tensor error from the matrix products.
pub fn ranks_streamed(
    images: &[f32],
    texts: &[f32],
    dim: usize,
    text_image: &[u32],
    block: usize,
    cache_bytes: usize,
    device: &Device,
) -> Result<Ranks> {
    let n_images = images.len() / dim;
    let n_texts = texts.len() / dim;
    let gallery = Tensor::from_slice(images, (n_images, dim), device)?
        .t()?
        .contiguous()?;
    // A block of scores stays within 64 MiB however wide the gallery is.
    let block = block.min((64 << 20) / (4 * n_images.max(1))).max(1);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let scores_of = |start: usize, end: usize| -> Result<Vec<f32>> {
        let q = Tensor::from_slice(&texts[start * dim..end * dim], (end - start, dim), device)?;
        Ok(q.matmul(&gallery)?.flatten_all()?.to_vec1::<f32>()?)
    };
    let starts: Vec<usize> = (0..n_texts).step_by(block).collect();
    let mut cache: Vec<Option<Vec<f32>>> = vec![None; starts.len()];
    let mut cached = 0usize;

    // Pass 1: the score of each caption with its own image, and text→image ranks.
    let mut positive = vec![0f32; n_texts];
    let mut text_to_image = vec![0usize; n_texts];
    for (b, &start) in starts.iter().enumerate() {
        let end = (start + block).min(n_texts);
        let s = scores_of(start, end)?;
        let per_thread = (end - start).div_ceil(threads);
        std::thread::scope(|scope| {
            for (chunk, (ranks, positives)) in text_to_image[start..end]
                .chunks_mut(per_thread)
                .zip(positive[start..end].chunks_mut(per_thread))
                .enumerate()
            {
                let first = start + chunk * per_thread;
                let s = &s;
                scope.spawn(move || {
                    for (k, (rank, p_out)) in ranks.iter_mut().zip(positives).enumerate() {
                        let t = first + k;
                        let row = &s[(t - start) * n_images..(t - start + 1) * n_images];
                        let img = text_image[t] as usize;
                        let p = row[img];
                        *p_out = p;
                        *rank = 1 + row
                            .iter()
                            .enumerate()
                            .filter(|&(j, &v)| j != img && before(v, j, p, img))
                            .count();
                    }
                });
            }
        });
        if cached + s.len() * 4 <= cache_bytes {
            cached += s.len() * 4;
            cache[b] = Some(s);
        }
    }

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

    // Pass 2: each foreign caption that comes before some of an image's captions pushes all
    // later ones down by one; `pushed[offsets[i] + k]` counts the captions that first come
    // before image i's k-th caption (and so before every later one). One counter array per
    // thread, summed at the end.
    let mut pushed: Vec<Vec<u32>> = vec![vec![0u32; n_texts]; threads];
    for (b, &start) in starts.iter().enumerate() {
        let end = (start + block).min(n_texts);
        let s = match cache[b].take() {
            Some(s) => s,
            None => scores_of(start, end)?,
        };
        let per_thread = (end - start).div_ceil(threads);
        let (relevant, offsets) = (&relevant, &offsets);
        std::thread::scope(|scope| {
            for (chunk, counts) in pushed.iter_mut().enumerate() {
                let first = start + chunk * per_thread;
                let last = (first + per_thread).min(end);
                let s = &s;
                scope.spawn(move || {
                    for t in first..last {
                        let row = &s[(t - start) * n_images..(t - start + 1) * n_images];
                        let own = text_image[t] as usize;
                        for (i, &v) in row.iter().enumerate() {
                            if i == own {
                                continue;
                            }
                            let r = &relevant[offsets[i]..offsets[i + 1]];
                            // The first of image i's captions that (v, t) comes before.
                            let k = r.partition_point(|&(p, c)| !before(v, t, p, c));
                            if k < r.len() {
                                counts[offsets[i] + k] += 1;
                            }
                        }
                    }
                });
            }
        });
    }
    let image_to_text_all: Vec<Vec<usize>> = (0..n_images)
        .map(|i| {
            let mut ahead = 0usize;
            (offsets[i]..offsets[i + 1])
                .enumerate()
                .map(|(k, slot)| {
                    ahead += pushed.iter().map(|c| c[slot] as usize).sum::<usize>();
                    // k of the image's own captions and `ahead` foreign ones come first.
                    1 + k + ahead
                })
                .collect()
        })
        .collect();
    Ok(Ranks {
        image_to_text: first_ranks(&image_to_text_all, n_texts),
        image_to_text_all,
        text_to_image,
    })
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

    proptest! {
        #[test]
        fn streamed_ranks_equal_brute_force(
            n_images in 1usize..12,
            extra in 0usize..20,
            raw in proptest::collection::vec(-4i8..4, 32 * 4 * 2),
            block in 1usize..7,
            assign in proptest::collection::vec(0usize..1000, 32),
        ) {
            let dim = 4;
            let n_texts = n_images + extra;
            // Small integers make exact ties common, and their dot products are exact in f32
            // whatever order a matrix product sums them in.
            let rawf: Vec<f32> = raw.iter().map(|&v| v as f32).collect();
            let images = rawf[..n_images * dim].to_vec();
            let texts = rawf[32 * 4..32 * 4 + n_texts * dim].to_vec();
            let text_image: Vec<u32> = (0..n_texts)
                .map(|t| if t < n_images { t as u32 } else { (assign[t] % n_images) as u32 })
                .collect();
            let gallery = Tensor::from_slice(&images, (n_images, dim), &Device::Cpu).unwrap();
            let q = Tensor::from_slice(&texts, (n_texts, dim), &Device::Cpu).unwrap();
            let scores: Vec<Vec<f32>> = q.matmul(&gallery.t().unwrap()).unwrap().to_vec2().unwrap();
            let expected = ranks_from_scores(&scores, &text_image, n_images);
            let got = ranks_from_embeddings(&images, &texts, dim, &text_image, block, &Device::Cpu).unwrap();
            prop_assert_eq!(&got, &expected);
            // Recomputing every block in the second pass (no cache) gives the same ranks.
            let uncached = ranks_streamed(&images, &texts, dim, &text_image, block, 0, &Device::Cpu).unwrap();
            prop_assert_eq!(uncached, expected);
        }
    }
}
