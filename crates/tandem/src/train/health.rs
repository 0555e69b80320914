//! Health of the embedding space during training, to catch collapse early: hardest-negative
//! losses are known to map every input to one vector when started badly (VSE++, §4).

use candle_core::{DType, Tensor};
use serde::Serialize;

use crate::error::Result;

/// Below this spread a batch's embeddings are treated as collapsed: rows lie within about
/// 0.03 of their mean. Random unit vectors give a spread near 1; the paper recipe on the demo
/// data settles each modality into a cone of spread 0.05–0.1 and still ranks well, so the
/// threshold sits well below that.
pub const COLLAPSE_SPREAD: f64 = 1e-3;

/// Diagnostics of one training batch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Health {
    /// Mean cosine similarity of each caption with its image.
    pub positive_similarity: f64,
    /// Mean cosine similarity of each caption with the other images of the batch.
    pub negative_similarity: f64,
    /// `1 - |mean row|²` of the L2-normalised embeddings, the smaller of the two modalities:
    /// 0 when every row is the same vector.
    pub spread: f64,
}

impl Health {
    /// Measures a batch of L2-normalised embeddings; `text_image[k]` is the row of caption
    /// `k`'s image. Costs O((n + m) · dim): the all-pairs mean comes from the two row sums.
    ///
    /// # Shapes
    /// `images: [n, dim]`, `texts: [m, dim]`.
    ///
    /// # Errors
    /// A tensor error when shapes disagree.
    pub fn measure(images: &Tensor, texts: &Tensor, text_image: &[u32]) -> Result<Self> {
        let images = images.detach().to_dtype(DType::F64)?;
        let texts = texts.detach().to_dtype(DType::F64)?;
        let (n, m) = (images.dim(0)?, texts.dim(0)?);
        let scalar = |t: Tensor| -> Result<f64> { Ok(t.to_scalar::<f64>()?) };
        let image_sum = images.sum(0)?;
        let text_sum = texts.sum(0)?;
        let all_pairs = scalar((&image_sum * &text_sum)?.sum_all()?)?;
        let index = Tensor::from_vec(text_image.to_vec(), m, images.device())?;
        let matched = scalar((images.index_select(&index, 0)? * &texts)?.sum_all()?)?;
        let spread = |sum: &Tensor, rows: usize| -> Result<f64> {
            Ok(1.0 - scalar(sum.sqr()?.sum_all()?)? / (rows * rows).max(1) as f64)
        };
        let negatives = (n * m).saturating_sub(m);
        Ok(Health {
            positive_similarity: matched / m.max(1) as f64,
            negative_similarity: if negatives == 0 {
                0.0
            } else {
                (all_pairs - matched) / negatives as f64
            },
            spread: spread(&image_sum, n)?.min(spread(&text_sum, m)?),
        })
    }

    /// Whether the space looks collapsed.
    pub fn collapsed(&self) -> bool {
        self.spread < COLLAPSE_SPREAD
    }

    /// The warning for a collapsed batch at global `step` of 0-based `epoch`, if it is one.
    pub fn collapse_warning(&self, step: usize, epoch: usize) -> Option<String> {
        self.collapsed().then(|| {
            format!(
                "embeddings collapsed at step {step} (epoch {}): spread {:.2e} < {COLLAPSE_SPREAD:e}, every input maps to nearly one vector; lower train.lr, or start with the summed hinge (loss.kind = \"vse_warmup\")",
                epoch + 1,
                self.spread,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn hand_computed_batch() {
        // Images (1,0), (0,1); captions (1,0) of image 0, (0.6,0.8) of image 1, (0,1) of 1.
        let images = Tensor::new(&[[1f32, 0.], [0., 1.]], &Device::Cpu).unwrap();
        let texts = Tensor::new(&[[1f32, 0.], [0.6, 0.8], [0., 1.]], &Device::Cpu).unwrap();
        let h = Health::measure(&images, &texts, &[0, 1, 1]).unwrap();
        // Positives: 1, 0.8, 1 → 2.8 / 3. Negatives: c0·i1 = 0, c1·i0 = 0.6, c2·i0 = 0 → 0.2.
        assert!((h.positive_similarity - 2.8 / 3.0).abs() < 1e-6);
        assert!((h.negative_similarity - 0.2).abs() < 1e-6);
        // Image mean (0.5, 0.5): 1 - 0.5 = 0.5. Text mean (1.6/3, 1.8/3): 1 - 5.8/9.
        assert!((h.spread - (1.0 - 5.8 / 9.0)).abs() < 1e-6, "{}", h.spread);
        assert!(!h.collapsed());
        assert_eq!(h.collapse_warning(1, 0), None);
    }

    #[test]
    fn identical_rows_are_collapsed() {
        let row = [[0.6f32, 0.8]; 4];
        let t = Tensor::new(&row, &Device::Cpu).unwrap();
        let h = Health::measure(&t, &t, &[0, 1, 2, 3]).unwrap();
        assert!(h.spread.abs() < 1e-6 && h.collapsed());
        let warning = h.collapse_warning(37, 2).unwrap();
        assert!(warning.contains("step 37 (epoch 3)"), "{warning}");
    }
}
