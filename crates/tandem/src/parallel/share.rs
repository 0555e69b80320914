//! How a batch is split over the ranks, and the moves of rows and gradients between them.

use std::sync::Arc;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::data::Batch;
use crate::error::Result;
use crate::parallel::Collective;

/// A rank's rows of one side (images or captions) of the whole batch.
#[derive(Clone, Copy)]
pub struct Shard<'a> {
    /// The group the batch is split over.
    pub collective: &'a Arc<dyn Collective>,
    /// The batch row of each of this rank's rows.
    pub rows: &'a [usize],
    /// Rows of the whole batch.
    pub total: usize,
}

/// Which rows of a batch a rank trains: a run of the batch's images and the captions of those
/// images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchShare {
    /// Positions in `batch.images`.
    pub images: Vec<usize>,
    /// Positions in `batch.texts`.
    pub texts: Vec<usize>,
}

impl BatchShare {
    /// Every rank's share of `batch`, in rank order: images split into `ranks` runs as even as
    /// can be (a rank may have none when the batch has fewer images than ranks).
    pub fn split(batch: &Batch, ranks: usize) -> Vec<BatchShare> {
        let (n, ranks) = (batch.images.len(), ranks.max(1));
        (0..ranks)
            .map(|r| {
                let (first, end) = (r * n / ranks, (r + 1) * n / ranks);
                BatchShare {
                    images: (first..end).collect(),
                    texts: (0..batch.texts.len())
                        .filter(|&k| (first..end).contains(&(batch.text_image[k] as usize)))
                        .collect(),
                }
            })
            .collect()
    }

    /// The part of `batch` this share trains, as a batch of its own (its rows in the share's
    /// order; `text_image` relative to the share's images).
    pub fn of(&self, batch: &Batch) -> Batch {
        let first = self.images.first().copied().unwrap_or(0) as u32;
        Batch {
            images: self.images.iter().map(|&i| batch.images[i]).collect(),
            texts: self.texts.iter().map(|&t| batch.texts[t]).collect(),
            text_image: self
                .texts
                .iter()
                .map(|&t| batch.text_image[t] - first)
                .collect(),
        }
    }
}

/// The whole batch's rows from each rank's `local` rows: gathered, then put in their batch
/// places (`shares[r]` lists rank r's places).
///
/// # Shapes
/// `local: [shares[rank].len(), dim]` → `[total, dim]`.
///
/// # Errors
/// When another rank stopped, or a tensor error.
pub(crate) fn gather_rows(
    collective: &dyn Collective,
    local: &Tensor,
    shares: &[&[usize]],
    total: usize,
) -> Result<Tensor> {
    let dim = local.dim(1)?;
    let all = collective.all_gather(&local.flatten_all()?.to_vec1::<f32>()?)?;
    let mut rows = vec![0f32; total * dim];
    let places = shares.iter().flat_map(|s| s.iter());
    for (&place, row) in places.zip(all.chunks_exact(dim.max(1))) {
        rows[place * dim..(place + 1) * dim].copy_from_slice(row);
    }
    Ok(Tensor::from_vec(rows, (total, dim), local.device())?)
}

/// The rows `rows` of `whole`, `[rows.len(), dim]`.
///
/// # Errors
/// A tensor error.
pub(crate) fn local_rows(whole: &Tensor, rows: &[usize]) -> Result<Tensor> {
    let dim = whole.dim(1)?;
    let values: Vec<f32> = whole
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    let mut out = Vec::with_capacity(rows.len() * dim);
    for &r in rows {
        out.extend_from_slice(&values[r * dim..(r + 1) * dim]);
    }
    Ok(Tensor::from_vec(out, (rows.len(), dim), whole.device())?)
}

/// Replaces each of `vars`' gradients in `grads` (this rank's share) with the sum over the
/// ranks. Every rank reduces every var, in the same order; a var without a gradient counts as
/// zeros.
///
/// # Errors
/// When another rank stopped, or a tensor error.
pub(crate) fn sum_model_gradients(
    collective: &dyn Collective,
    vars: &[Var],
    grads: &mut GradStore,
) -> Result<()> {
    let mut flat = Vec::new();
    for var in vars {
        match grads.get(var.as_tensor()) {
            Some(g) => flat.extend(
                g.to_dtype(candle_core::DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            ),
            None => flat.resize(flat.len() + var.elem_count(), 0.0),
        }
    }
    // One reduction for all of them: one round of the group per step, not one per tensor.
    collective.all_reduce_sum(&mut flat)?;
    let mut at = 0;
    for var in vars {
        let n = var.elem_count();
        let summed = Tensor::from_slice(&flat[at..at + n], var.shape(), var.device())?
            .to_dtype(var.dtype())?;
        grads.insert(var.as_tensor(), summed);
        at += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_batch_once_and_keep_captions_with_their_images() {
        let batch = Batch {
            images: vec![10, 11, 12, 13, 14],
            texts: vec![100, 101, 102, 103, 104, 105, 106, 107, 108, 109],
            text_image: vec![0, 1, 2, 3, 4, 0, 1, 2, 3, 4],
        };
        for ranks in 1..=7 {
            let shares = BatchShare::split(&batch, ranks);
            assert_eq!(shares.len(), ranks);
            let mut images: Vec<usize> = shares.iter().flat_map(|s| s.images.clone()).collect();
            let mut texts: Vec<usize> = shares.iter().flat_map(|s| s.texts.clone()).collect();
            images.sort_unstable();
            texts.sort_unstable();
            assert_eq!(images, (0..5).collect::<Vec<_>>());
            assert_eq!(texts, (0..10).collect::<Vec<_>>());
            for share in &shares {
                let local = share.of(&batch);
                for (k, &t) in local.texts.iter().enumerate() {
                    let image = local.images[local.text_image[k] as usize];
                    assert_eq!(image, 10 + (t - 100) % 5, "caption {t} with its image");
                }
            }
        }
        let two = BatchShare::split(&batch, 2);
        assert_eq!(two[0].images, vec![0, 1]);
        assert_eq!(two[0].texts, vec![0, 1, 5, 6]);
    }
}
