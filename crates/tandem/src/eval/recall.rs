//! Ranks of the first relevant item for every query, streamed in blocks of queries so the full
//! similarity matrix is never held.
//!
//! Tie rule: the gallery is ordered by score, higher first, and equal scores by lower index
//! first (a stable sort). The rank of a query is the 1-based position of its first relevant item
//! in that order.

use candle_core::{Device, Tensor};

use crate::error::Result;

/// 1-based rank of the first relevant item for every query, both ways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranks {
    /// Image→text: for each image, the rank of its best-placed caption among all captions.
    pub image_to_text: Vec<usize>,
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
    let image_to_text = (0..n_images)
        .map(|i| {
            let mut order: Vec<usize> = (0..scores.len()).collect();
            order.sort_by(|&a, &b| scores[b][i].total_cmp(&scores[a][i]).then(a.cmp(&b)));
            1 + order
                .iter()
                .position(|&t| text_image[t] as usize == i)
                .unwrap_or(scores.len())
        })
        .collect();
    Ranks {
        image_to_text,
        text_to_image,
    }
}

/// Ranks from L2-normalised embeddings, scoring by inner product, `block` captions at a time.
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
    let n_images = images.len() / dim;
    let n_texts = texts.len() / dim;
    let gallery = Tensor::from_slice(images, (n_images, dim), device)?
        .t()?
        .contiguous()?;
    let block = block.max(1);
    let scores_of = |start: usize, end: usize| -> Result<Vec<f32>> {
        let q = Tensor::from_slice(&texts[start * dim..end * dim], (end - start, dim), device)?;
        Ok(q.matmul(&gallery)?.flatten_all()?.to_vec1::<f32>()?)
    };
    // Pass 1: the score of each caption's own image, and each image's best caption (ties to
    // the lower caption index).
    let mut positive = vec![0f32; n_texts];
    let mut best: Vec<Option<(f32, usize)>> = vec![None; n_images];
    let mut text_to_image = vec![0usize; n_texts];
    for start in (0..n_texts).step_by(block) {
        let end = (start + block).min(n_texts);
        let s = scores_of(start, end)?;
        for t in start..end {
            let row = &s[(t - start) * n_images..(t - start + 1) * n_images];
            let img = text_image[t] as usize;
            let p = row[img];
            positive[t] = p;
            if best[img].is_none_or(|(b, _)| p > b) {
                best[img] = Some((p, t));
            }
            text_to_image[t] = 1 + row
                .iter()
                .enumerate()
                .filter(|&(j, &v)| j != img && before(v, j, p, img))
                .count();
        }
    }
    // Pass 2: for each image, how many captions of other images come before its best caption.
    let mut image_to_text = vec![1usize; n_images];
    for start in (0..n_texts).step_by(block) {
        let end = (start + block).min(n_texts);
        let s = scores_of(start, end)?;
        for t in start..end {
            let row = &s[(t - start) * n_images..(t - start + 1) * n_images];
            let own = text_image[t] as usize;
            for (i, &v) in row.iter().enumerate() {
                if i != own
                    && let Some((b, bt)) = best[i]
                    && before(v, t, b, bt)
                {
                    image_to_text[i] += 1;
                }
            }
        }
    }
    Ok(Ranks {
        image_to_text,
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
            prop_assert_eq!(got, expected);
        }
    }
}
