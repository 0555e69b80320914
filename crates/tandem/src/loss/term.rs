//! One hinge term: anchors of one modality ranked against references of another (or the same).

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::loss::{Distance, Miner, Reducer};

/// Which side of the pair a term's anchors or references come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    /// Image embeddings.
    Image,
    /// Caption embeddings.
    Text,
}

/// Which positives an anchor is ranked from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Positive {
    /// One tuple row per (anchor, positive) pair.
    Each,
    /// One row per anchor, from its farthest positive (the structure-preserving term: every
    /// caption of the image must be closer than any caption of another image).
    Farthest,
}

/// The embeddings of one batch with the image id of every row.
#[derive(Debug, Clone, Copy)]
pub struct Embedded<'a> {
    /// `[n_images, dim]`.
    pub images: &'a Tensor,
    /// `[n_texts, dim]`.
    pub texts: &'a Tensor,
    /// Image id of each image row.
    pub image_ids: &'a [u32],
    /// Image id of each text row.
    pub text_ids: &'a [u32],
}

impl<'a> Embedded<'a> {
    fn side(&self, m: Modality) -> (&'a Tensor, &'a [u32]) {
        match m {
            Modality::Image => (self.images, self.image_ids),
            Modality::Text => (self.texts, self.text_ids),
        }
    }
}

/// A triplet hinge term: `Σ reducer over mined (a, p, n) of max(0, margin + d(a,p) - d(a,n))`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Term {
    /// Name used in logs, e.g. `text_to_image`.
    pub name: String,
    /// Modality of the anchors.
    pub anchor: Modality,
    /// Modality of positives and negatives.
    pub reference: Modality,
    /// How positives form tuple rows.
    pub positive: Positive,
    /// Which negatives are kept.
    pub miner: Miner,
    /// How kept hinges are combined.
    pub reducer: Reducer,
    /// Dissimilarity.
    pub distance: Distance,
    /// Hinge margin.
    pub margin: f64,
}

/// The value of a term on one batch.
#[derive(Debug, Clone)]
pub struct TermOutput {
    /// Scalar loss tensor (unweighted), differentiable.
    pub loss: Tensor,
    /// Number of (anchor, positive, negative) tuples selected.
    pub selected: usize,
    /// How many of them had a positive hinge.
    pub active: usize,
}

impl Term {
    /// Computes the term on a batch.
    ///
    /// # Shapes
    /// `images: [n_images, dim]`, `texts: [n_texts, dim]` → scalar.
    ///
    /// # Errors
    /// A tensor error when shapes disagree.
    pub fn forward(&self, batch: &Embedded<'_>) -> Result<TermOutput> {
        let (anchors, anchor_ids) = batch.side(self.anchor);
        let (refs, ref_ids) = batch.side(self.reference);
        let same_set = self.anchor == self.reference;
        let dist = self.distance.matrix(anchors, refs)?;
        let n_refs = ref_ids.len();
        let values: Vec<f64> = dist.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;

        // Tuple rows (anchor, positive), chosen on values only.
        let mut rows: Vec<(u32, u32)> = Vec::new();
        for (a, &id) in anchor_ids.iter().enumerate() {
            let row = &values[a * n_refs..(a + 1) * n_refs];
            let positives = (0..n_refs).filter(|&r| ref_ids[r] == id && !(same_set && r == a));
            match self.positive {
                Positive::Each => rows.extend(positives.map(|p| (a as u32, p as u32))),
                Positive::Farthest => {
                    // Largest distance; ties to the lower index.
                    let far = positives.fold(None::<usize>, |best, p| match best {
                        Some(b) if row[b] >= row[p] => Some(b),
                        _ => Some(p),
                    });
                    rows.extend(far.map(|p| (a as u32, p as u32)));
                }
            }
        }

        let mut mask = vec![0f32; rows.len() * n_refs];
        let mut selected = 0;
        let mut active = 0;
        let mut hinge = vec![0f64; n_refs];
        let mut negative = vec![false; n_refs];
        for (k, &(a, p)) in rows.iter().enumerate() {
            let (a, p) = (a as usize, p as usize);
            let row = &values[a * n_refs..(a + 1) * n_refs];
            for r in 0..n_refs {
                negative[r] = ref_ids[r] != anchor_ids[a];
                hinge[r] = (self.margin + row[p] - row[r]).max(0.0);
            }
            for r in self.miner.select_row(&hinge, &negative) {
                mask[k * n_refs + r] = 1.0;
                selected += 1;
                active += usize::from(hinge[r] > 0.0);
            }
        }

        let device = dist.device();
        let loss = if rows.is_empty() {
            Tensor::zeros((), dist.dtype(), device)?
        } else {
            let a_idx = Tensor::from_vec(
                rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                rows.len(),
                device,
            )?;
            let p_idx = Tensor::from_vec(
                rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                (rows.len(), 1),
                device,
            )?;
            let d_rows = dist.index_select(&a_idx, 0)?;
            let d_pos = d_rows.gather(&p_idx, 1)?;
            let hinges = (d_pos.broadcast_sub(&d_rows)? + self.margin)?.relu()?;
            let mask =
                Tensor::from_vec(mask, (rows.len(), n_refs), device)?.to_dtype(dist.dtype())?;
            let sum = (hinges * mask)?.sum_all()?;
            self.reducer.reduce(&sum, selected, active)?
        };
        Ok(TermOutput {
            loss,
            selected,
            active,
        })
    }
}
