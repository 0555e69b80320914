//! One hinge term: anchors of one modality ranked against references of another (or the same).

use candle_core::{DType, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::loss::hinge_sum::{HingeSum, MatrixValues};
use crate::loss::selected_hinges::SelectedHinges;
use crate::loss::{Distance, Memory, Miner, Reducer, Temperature};

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

/// The embeddings of one batch with the image id of every row, and what the loss may use
/// besides them: the cross-batch memory and the learnable temperature.
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
    /// Sample key (dataset row) of each image and text row. With keys, a memory row of the
    /// same sample as an anchor is never its positive or negative; without, batch rows are
    /// taken to be distinct samples.
    pub keys: Option<(&'a [u32], &'a [u32])>,
    /// Previous samples, as extra references of every term.
    pub memory: Option<&'a Memory>,
    /// Logit scale and bias of the softmax and sigmoid criteria.
    pub temperature: Option<&'a Temperature>,
}

impl<'a> Embedded<'a> {
    /// A batch without memory, keys or temperature.
    pub fn new(
        images: &'a Tensor,
        texts: &'a Tensor,
        image_ids: &'a [u32],
        text_ids: &'a [u32],
    ) -> Self {
        Embedded {
            images,
            texts,
            image_ids,
            text_ids,
            keys: None,
            memory: None,
            temperature: None,
        }
    }

    /// Adds the cross-batch memory.
    pub fn with_memory(self, memory: &'a Memory) -> Self {
        Embedded {
            memory: Some(memory),
            ..self
        }
    }

    /// Adds sample keys for images and texts.
    pub fn with_keys(self, image_keys: &'a [u32], text_keys: &'a [u32]) -> Self {
        Embedded {
            keys: Some((image_keys, text_keys)),
            ..self
        }
    }

    /// Adds the learnable temperature.
    pub fn with_temperature(self, temperature: &'a Temperature) -> Self {
        Embedded {
            temperature: Some(temperature),
            ..self
        }
    }

    fn side(&self, m: Modality) -> (&'a Tensor, &'a [u32], Option<&'a [u32]>) {
        match m {
            Modality::Image => (self.images, self.image_ids, self.keys.map(|k| k.0)),
            Modality::Text => (self.texts, self.text_ids, self.keys.map(|k| k.1)),
        }
    }
}

/// How a term turns the distances of a tuple row into a loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Criterion {
    /// `max(0, margin + d(a,p) - d(a,n))` over the negatives the miner keeps, reduced.
    Hinge {
        /// Hinge margin.
        margin: f64,
        /// Which negatives are kept.
        miner: Miner,
        /// How kept hinges are combined.
        reducer: Reducer,
    },
    /// `-log softmax` of the positive among itself and every negative, logits
    /// `scale · similarity`; mean over (anchor, positive) rows. Other positives of the anchor
    /// are left out of the denominator, so several captions of one image never compete.
    Softmax,
    /// `-log σ(z · (scale · similarity + bias))` over every (anchor, reference) pair, `z = +1`
    /// for the same image and -1 otherwise; summed and divided by the number of anchors
    /// (SigLIP).
    Sigmoid,
}

/// Distance matrices already computed on one batch, shared between the terms of an
/// objective: `image → text` is the transpose of `text → image` (every distance here is
/// symmetric), so the two ranking directions make one matrix, one product and one backward.
#[derive(Default)]
pub struct DistanceCache {
    matrices: std::cell::RefCell<Vec<(MatrixKey, Tensor)>>,
}

/// Anchors, references and distance of a matrix.
type MatrixKey = (Modality, Modality, Distance);

impl DistanceCache {
    /// How many matrices were computed (a transpose served from the cache is not one).
    pub fn computed(&self) -> usize {
        self.matrices.borrow().len()
    }

    fn matrix(&self, key: MatrixKey, compute: impl FnOnce() -> Result<Tensor>) -> Result<Tensor> {
        let (anchor, reference, distance) = key;
        for (k, m) in self.matrices.borrow().iter() {
            if *k == key {
                return Ok(m.clone());
            }
            if *k == (reference, anchor, distance) {
                // A transposed view, no copy: the miner reads any layout, and the tensor
                // paths make it contiguous where they need to.
                return Ok(m.t()?);
            }
        }
        let m = compute()?;
        self.matrices.borrow_mut().push((key, m.clone()));
        Ok(m)
    }
}

/// The references of a term: the batch's rows of the reference modality, then the memory's.
struct References {
    embeddings: Tensor,
    ids: Vec<u32>,
    /// Keys of the memory rows (batch rows are compared by position or by batch keys).
    memory_keys: Vec<u32>,
    /// How many leading rows come from the batch.
    current: usize,
}

/// Anchors of one modality ranked against references of another (or the same): a hinge over
/// mined triplets, or a softmax / sigmoid over scaled similarities.
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
    /// Hinge, softmax or sigmoid.
    pub criterion: Criterion,
    /// Dissimilarity; the softmax and sigmoid criteria score by `similarity = -distance`
    /// (`cos` for cosine).
    pub distance: Distance,
}

/// The value of a term on one batch.
#[derive(Debug, Clone)]
pub struct TermOutput {
    /// Scalar loss tensor (unweighted), differentiable.
    pub loss: Tensor,
    /// Hinge: (anchor, positive, negative) tuples selected. Softmax: (anchor, positive) rows.
    /// Sigmoid: (anchor, reference) pairs.
    pub selected: usize,
    /// Hinge: how many selected tuples had a positive hinge. Softmax: rows where a negative
    /// scores at least the positive. Sigmoid: pairs on the wrong side of 0.
    pub active: usize,
}

impl Term {
    /// The similarity offset that makes `offset - distance` the natural similarity.
    fn similarity_offset(&self) -> f64 {
        match self.distance {
            Distance::Cosine => 1.0,
            Distance::Euclidean | Distance::Dot => 0.0,
        }
    }

    fn references(&self, batch: &Embedded<'_>) -> Result<References> {
        let (embeddings, ids, _) = batch.side(self.reference);
        let mut refs = References {
            embeddings: embeddings.clone(),
            ids: ids.to_vec(),
            memory_keys: Vec::new(),
            current: ids.len(),
        };
        if let Some(memory) = batch.memory
            && let Some(rows) =
                memory.references(self.reference, embeddings.dtype(), embeddings.device())?
        {
            refs.embeddings = Tensor::cat(&[embeddings, &rows.embeddings], 0)?;
            refs.ids.extend(rows.ids);
            refs.memory_keys = rows.keys;
        }
        Ok(refs)
    }

    /// Computes the term on a batch (and the memory, when the batch carries one).
    ///
    /// # Shapes
    /// `images: [n_images, dim]`, `texts: [n_texts, dim]` → scalar.
    ///
    /// # Errors
    /// A tensor error when shapes disagree; [`Error::Config`] for a softmax or sigmoid term
    /// without a temperature.
    pub fn forward(&self, batch: &Embedded<'_>) -> Result<TermOutput> {
        self.forward_sharing(batch, &DistanceCache::default())
    }

    /// [`Term::forward`], reusing a distance matrix of `cache` (or its transpose) when the
    /// references are the batch alone; memory rows make a term's matrix its own.
    ///
    /// # Errors
    /// As [`Term::forward`].
    pub fn forward_sharing(
        &self,
        batch: &Embedded<'_>,
        cache: &DistanceCache,
    ) -> Result<TermOutput> {
        let (anchors, anchor_ids, anchor_keys) = batch.side(self.anchor);
        let refs = self.references(batch)?;
        let same_set = self.anchor == self.reference;
        let compute = || self.distance.matrix(anchors, &refs.embeddings);
        let dist = if refs.current == refs.ids.len() {
            cache.matrix((self.anchor, self.reference, self.distance), compute)?
        } else {
            compute()?
        };
        let n_refs = refs.ids.len();
        // A sample is never its own positive or negative.
        let is_self = |a: usize, r: usize| {
            same_set
                && if r < refs.current {
                    r == a || anchor_keys.is_some_and(|k| k[a] == k[r])
                } else {
                    anchor_keys.is_some_and(|k| k[a] == refs.memory_keys[r - refs.current])
                }
        };

        if self.criterion == Criterion::Sigmoid {
            return self.sigmoid(batch, &dist, anchor_ids, &refs, &is_self);
        }

        // The distances, read in place on the CPU (elsewhere copied to the host once). The
        // storage stays held until the last read, before any tensor op on the matrix.
        let on_host = dist.device().is_cpu() && matches!(dist.dtype(), DType::F32 | DType::F64);
        let host: Vec<f64> = if on_host {
            Vec::new()
        } else {
            dist.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?
        };
        let held = dist.storage_and_layout();
        let values = if on_host {
            MatrixValues::of(&held.0, held.1)?
        } else {
            MatrixValues::dense(&host, n_refs)
        };

        // Every id's references in increasing order, so that an anchor's positives are found
        // without scanning all references (an `anchors × refs` walk that took ~3% of the loss).
        let mut refs_of_id: std::collections::HashMap<u32, Vec<usize>> =
            std::collections::HashMap::new();
        for (r, &id) in refs.ids.iter().enumerate() {
            refs_of_id.entry(id).or_default().push(r);
        }
        // Tuple rows (anchor, positive), chosen on values only; anchors in parallel, in order.
        let per_anchor: Vec<Vec<(u32, u32)>> = anchor_ids
            .par_iter()
            .enumerate()
            .map(|(a, &id)| {
                let positives = refs_of_id
                    .get(&id)
                    .into_iter()
                    .flatten()
                    .copied()
                    .filter(|&r| !is_self(a, r));
                match self.positive {
                    Positive::Each => positives.map(|p| (a as u32, p as u32)).collect(),
                    Positive::Farthest => {
                        // Largest distance; ties to the lower index.
                        let far = positives.fold(None::<usize>, |best, p| match best {
                            Some(b) if values.get(a, b) >= values.get(a, p) => Some(b),
                            _ => Some(p),
                        });
                        far.map(|p| vec![(a as u32, p as u32)]).unwrap_or_default()
                    }
                }
            })
            .collect();
        let rows: Vec<(u32, u32)> = per_anchor.into_iter().flatten().collect();
        let device = dist.device();
        if rows.is_empty() {
            return Ok(TermOutput {
                loss: Tensor::zeros((), dist.dtype(), device)?,
                selected: 0,
                active: 0,
            });
        }
        let negative_of = |a: usize, r: usize| refs.ids[r] != anchor_ids[a] && !is_self(a, r);

        // The distance rows of the tuple rows, `[rows, refs]`, and their positives, `[rows, 1]`.
        let tuple_rows = || -> Result<(Tensor, Tensor)> {
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
            let d_rows = dist.contiguous()?.index_select(&a_idx, 0)?;
            let d_pos = d_rows.gather(&p_idx, 1)?;
            Ok((d_rows, d_pos))
        };
        let mask_tensor = |mask: Vec<f32>| -> Result<Tensor> {
            Ok(Tensor::from_vec(mask, (rows.len(), n_refs), device)?.to_dtype(dist.dtype())?)
        };

        match self.criterion {
            Criterion::Hinge {
                margin,
                miner,
                reducer,
            } => {
                // Each tuple row's mining is independent: rows in parallel, order kept.
                let mined: Vec<(Vec<[u32; 3]>, usize)> = rows
                    .par_iter()
                    .map(|&(a, p)| {
                        let (a, p) = (a as usize, p as usize);
                        let positive = values.get(a, p);
                        let hinge = |r: usize| (margin + positive - values.get(a, r)).max(0.0);
                        let chosen = miner.select_where(
                            (0..n_refs).map(|r| (r, hinge(r))),
                            |r| negative_of(a, r),
                            margin,
                        );
                        let active = chosen.iter().filter(|&&r| hinge(r) > 0.0).count();
                        let triplets = chosen
                            .into_iter()
                            .map(|r| [a as u32, p as u32, r as u32])
                            .collect();
                        (triplets, active)
                    })
                    .collect();
                let active = mined.iter().map(|m| m.1).sum();
                let triplets: Vec<[u32; 3]> = mined.into_iter().flat_map(|m| m.0).collect();
                let selected = triplets.len();
                let sparse = device.is_cpu() && SelectedHinges::supports(self.distance);
                let at = |a: u32, r: u32| values.get(a as usize, r as usize);
                let distances: Vec<(f64, f64)> = if sparse {
                    let pair = |&[a, p, n]: &[u32; 3]| (at(a, p), at(a, n));
                    triplets.iter().map(pair).collect()
                } else {
                    Vec::new()
                };
                drop(held);
                let sum = if sparse {
                    anchors.contiguous()?.apply_op2(
                        &refs.embeddings.contiguous()?,
                        SelectedHinges {
                            margin,
                            distance: self.distance,
                            triplets,
                            distances,
                        },
                    )?
                } else if device.is_cpu() {
                    // Any layout: the op reads through the strides (a transposed view too).
                    dist.apply_op1(HingeSum { margin, triplets })?
                } else {
                    // On a GPU: the tensor version of the same sum over the tuple rows.
                    let mut mask = vec![0f32; rows.len() * n_refs];
                    let mut row_of = std::collections::HashMap::new();
                    for (k, &(a, p)) in rows.iter().enumerate() {
                        row_of.insert((a, p), k);
                    }
                    for [a, p, r] in triplets {
                        mask[row_of[&(a, p)] * n_refs + r as usize] = 1.0;
                    }
                    let (d_rows, d_pos) = tuple_rows()?;
                    let hinges = (d_pos.broadcast_sub(&d_rows)? + margin)?.relu()?;
                    (hinges * mask_tensor(mask)?)?.sum_all()?
                };
                Ok(TermOutput {
                    loss: reducer.reduce(&sum, selected, active)?,
                    selected,
                    active,
                })
            }
            Criterion::Softmax => {
                let scale = self.scale(batch, &dist)?;
                // 0 where the reference takes part (the positive and the negatives), a large
                // negative number elsewhere: exp of it is exactly 0 in f32 and f64.
                let mut penalty = vec![-1e9f32; rows.len() * n_refs];
                let mut active = 0;
                for (k, &(a, p)) in rows.iter().enumerate() {
                    let (a, p) = (a as usize, p as usize);
                    penalty[k * n_refs + p] = 0.0;
                    let mut beaten = false;
                    for r in (0..n_refs).filter(|&r| negative_of(a, r)) {
                        penalty[k * n_refs + r] = 0.0;
                        beaten |= values.get(a, r) <= values.get(a, p);
                    }
                    active += usize::from(beaten);
                }
                drop(held);
                let (d_rows, d_pos) = tuple_rows()?;
                let logits = (d_rows.neg()? + self.similarity_offset())?.broadcast_mul(&scale)?;
                let positive = (d_pos.neg()? + self.similarity_offset())?.broadcast_mul(&scale)?;
                let lse = (logits + mask_tensor(penalty)?)?.log_sum_exp(1)?;
                let loss = (lse - positive.squeeze(1)?)?.mean_all()?;
                Ok(TermOutput {
                    loss,
                    selected: rows.len(),
                    active,
                })
            }
            Criterion::Sigmoid => unreachable!("handled above"),
        }
    }

    /// `exp(log_scale)` as a scalar tensor of the distances' dtype.
    fn scale(&self, batch: &Embedded<'_>, dist: &Tensor) -> Result<Tensor> {
        let t = self.temperature(batch)?;
        Ok(t.log_scale.as_tensor().to_dtype(dist.dtype())?.exp()?)
    }

    fn temperature<'b>(&self, batch: &Embedded<'b>) -> Result<&'b Temperature> {
        batch.temperature.ok_or_else(|| {
            Error::Config(format!(
                "loss term `{}` scores by softmax or sigmoid and needs a temperature",
                self.name
            ))
        })
    }

    fn sigmoid(
        &self,
        batch: &Embedded<'_>,
        dist: &Tensor,
        anchor_ids: &[u32],
        refs: &References,
        is_self: &dyn Fn(usize, usize) -> bool,
    ) -> Result<TermOutput> {
        let n_refs = refs.ids.len();
        let n_anchors = anchor_ids.len();
        let scale = self.scale(batch, dist)?;
        let bias = self
            .temperature(batch)?
            .bias
            .as_tensor()
            .to_dtype(dist.dtype())?;
        let mut sign = vec![0f32; n_anchors * n_refs];
        let mut mask = vec![0f32; n_anchors * n_refs];
        for a in 0..n_anchors {
            for r in (0..n_refs).filter(|&r| !is_self(a, r)) {
                sign[a * n_refs + r] = if refs.ids[r] == anchor_ids[a] {
                    1.0
                } else {
                    -1.0
                };
                mask[a * n_refs + r] = 1.0;
            }
        }
        let device = dist.device();
        let as_tensor = |v: Vec<f32>| -> Result<Tensor> {
            Ok(Tensor::from_vec(v, (n_anchors, n_refs), device)?.to_dtype(dist.dtype())?)
        };
        let logits = (dist.neg()? + self.similarity_offset())?
            .broadcast_mul(&scale)?
            .broadcast_add(&bias)?;
        let x = (logits * as_tensor(sign)?)?;
        // -log σ(x) = softplus(-x) = max(-x, 0) + log(1 + exp(-|x|)), stable for any x.
        let softplus = (x.neg()?.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
        let mask = as_tensor(mask)?;
        let active = (x.lt(0.0)?.to_dtype(dist.dtype())? * &mask)?
            .sum_all()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()? as usize;
        let selected = mask.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()? as usize;
        let loss = ((softplus * mask)?.sum_all()? / n_anchors.max(1) as f64)?;
        Ok(TermOutput {
            loss,
            selected,
            active,
        })
    }
}
