//! A weighted sum of terms: the whole recipe.

use candle_core::Tensor;

use crate::config::{LossConfig, LossKind};
use crate::error::Result;
use crate::loss::{
    Criterion, Distance, DistanceCache, Embedded, Miner, Modality, Positive, Reducer, Term,
};

/// `Σ weight · term`.
#[derive(Debug, Clone, PartialEq)]
pub struct Objective {
    /// The weighted terms; terms of weight 0 are left out.
    pub terms: Vec<(f64, Term)>,
}

/// The objective's value on a batch, with every term for logging.
#[derive(Debug, Clone)]
pub struct ObjectiveOutput {
    /// Differentiable scalar total.
    pub total: Tensor,
    /// Per term: name, unweighted value, fraction of selected hinges that are active.
    pub terms: Vec<(String, f64, f64)>,
}

impl Objective {
    /// The objective `cfg.kind` names, as used in 0-based `epoch` (only `vse_warmup` changes
    /// with the epoch).
    pub fn for_epoch(cfg: &LossConfig, epoch: usize) -> Self {
        match cfg.kind {
            LossKind::Paper => Self::paper(cfg),
            LossKind::VseSum => Self::vse(cfg, Miner::All),
            LossKind::VseMax => Self::vse(cfg, Miner::Hardest),
            LossKind::VseWarmup if epoch < cfg.warmup_epochs => Self::vse(cfg, Miner::All),
            LossKind::VseWarmup => Self::vse(cfg, Miner::Hardest),
            LossKind::InfoNce => Self::info_nce(cfg),
            LossKind::Siglip => Self::siglip(cfg),
        }
    }

    /// A hinge criterion with `miner` and `reducer`, unless the config overrides them.
    fn hinge(cfg: &LossConfig, miner: Miner, reducer: Reducer) -> Criterion {
        Criterion::Hinge {
            margin: cfg.margin,
            miner: cfg.miner.unwrap_or(miner),
            reducer: cfg.reducer.unwrap_or(reducer),
        }
    }

    /// Symmetric InfoNCE as CLIP trains: `(L(text→image) + L(image→text)) / 2`, each a softmax
    /// cross-entropy over `scale · similarity`. The paper-recipe distance (Euclidean) is
    /// replaced by cosine, as CLIP scores.
    pub fn info_nce(cfg: &LossConfig) -> Self {
        let term = |name: &str, anchor, reference| Term {
            name: name.to_string(),
            anchor,
            reference,
            positive: Positive::Each,
            criterion: Criterion::Softmax,
            distance: similarity_distance(cfg),
        };
        Objective {
            terms: vec![
                (0.5, term("text_to_image", Modality::Text, Modality::Image)),
                (0.5, term("image_to_text", Modality::Image, Modality::Text)),
            ],
        }
    }

    /// SigLIP: the sigmoid loss over every image–caption pair, images as anchors (the pair set
    /// is symmetric, so one direction covers it; the memory adds caption references).
    pub fn siglip(cfg: &LossConfig) -> Self {
        Objective {
            terms: vec![(
                1.0,
                Term {
                    name: "image_text_pairs".to_string(),
                    anchor: Modality::Image,
                    reference: Modality::Text,
                    positive: Positive::Each,
                    criterion: Criterion::Sigmoid,
                    distance: similarity_distance(cfg),
                },
            )],
        }
    }

    /// VSE++ (Faghri et al. 2018): caption→image and image→caption hinges, summed over the
    /// batch, with every negative (`Miner::All`) or only the hardest (`Miner::Hardest`). VSE++
    /// scores by cosine similarity with margin 0.2: set `distance = "cosine"` (or `"dot"`) and
    /// `margin = 0.2`.
    pub fn vse(cfg: &LossConfig, miner: Miner) -> Self {
        let term = |name: &str, anchor, reference| Term {
            name: name.to_string(),
            anchor,
            reference,
            positive: Positive::Each,
            criterion: Self::hinge(cfg, miner, Reducer::Sum),
            distance: cfg.distance,
        };
        Objective {
            terms: vec![
                (1.0, term("text_to_image", Modality::Text, Modality::Image)),
                (1.0, term("image_to_text", Modality::Image, Modality::Text)),
            ],
        }
    }

    /// The paper's objective (Wang, Li & Lazebnik 2016): caption→image, image→caption and the
    /// caption→caption structure-preserving term, each keeping its top-K violations, mean over
    /// the kept tuples.
    pub fn paper(cfg: &LossConfig) -> Self {
        let term = |name: &str, anchor, reference, positive| Term {
            name: name.to_string(),
            anchor,
            reference,
            positive,
            criterion: Self::hinge(cfg, Miner::TopK(cfg.top_k), Reducer::Mean),
            distance: cfg.distance,
        };
        let terms = [
            (
                cfg.text_to_image,
                term(
                    "text_to_image",
                    Modality::Text,
                    Modality::Image,
                    Positive::Each,
                ),
            ),
            (
                cfg.image_to_text,
                term(
                    "image_to_text",
                    Modality::Image,
                    Modality::Text,
                    Positive::Each,
                ),
            ),
            (
                cfg.text_to_text,
                term(
                    "text_to_text",
                    Modality::Text,
                    Modality::Text,
                    Positive::Farthest,
                ),
            ),
        ];
        Objective {
            terms: terms.into_iter().filter(|(w, _)| *w > 0.0).collect(),
        }
    }

    /// Evaluates every term and their weighted sum.
    ///
    /// # Shapes
    /// `images: [n_images, dim]`, `texts: [n_texts, dim]` → scalar.
    ///
    /// # Errors
    /// A tensor error when shapes disagree.
    pub fn forward(&self, batch: &Embedded<'_>) -> Result<ObjectiveOutput> {
        let mut total: Option<Tensor> = None;
        let mut terms = Vec::with_capacity(self.terms.len());
        let shared = DistanceCache::default();
        for (weight, term) in &self.terms {
            let out = term.forward_sharing(batch, &shared)?;
            let value = out
                .loss
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
            terms.push((
                term.name.clone(),
                value,
                out.active as f64 / out.selected.max(1) as f64,
            ));
            let weighted = (out.loss * *weight)?;
            total = Some(match total {
                None => weighted,
                Some(t) => (t + weighted)?,
            });
        }
        let total = match total {
            Some(t) => t,
            None => Tensor::zeros((), batch.texts.dtype(), batch.texts.device())?,
        };
        Ok(ObjectiveOutput { total, terms })
    }
}

/// The softmax and sigmoid losses score by similarity: CLIP and SigLIP use cosine, so the
/// hinge recipe's default Euclidean distance becomes cosine (an explicit `dot` is kept).
fn similarity_distance(cfg: &LossConfig) -> Distance {
    match cfg.distance {
        Distance::Euclidean => Distance::Cosine,
        d => d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sharing the text→image matrix with image→text (as its transpose) changes neither the
    /// value nor the gradients of the paper's objective, for every distance.
    #[test]
    fn shared_distance_matrices_change_nothing() {
        use candle_core::{Device, Var};
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut values =
            |n: usize| -> Vec<f64> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
        let images = Var::from_vec(values(6 * 4), (6, 4), &Device::Cpu).unwrap();
        let texts = Var::from_vec(values(12 * 4), (12, 4), &Device::Cpu).unwrap();
        let image_ids: Vec<u32> = (0..6).collect();
        let text_ids: Vec<u32> = (0..12).map(|t| t / 2).collect();
        for distance in [Distance::Euclidean, Distance::Cosine, Distance::Dot] {
            let cfg = LossConfig {
                distance,
                top_k: 3,
                ..LossConfig::default()
            };
            let objective = Objective::paper(&cfg);
            let batch = Embedded::new(images.as_tensor(), texts.as_tensor(), &image_ids, &text_ids);
            let shared = objective.forward(&batch).unwrap().total;
            let mut separate: Option<Tensor> = None;
            for (weight, term) in &objective.terms {
                let t = (term.forward(&batch).unwrap().loss * *weight).unwrap();
                separate = Some(match separate {
                    None => t,
                    Some(s) => (s + t).unwrap(),
                });
            }
            let separate = separate.unwrap();
            // Three terms, two matrices: text→image (read both ways) and text→text.
            let cache = DistanceCache::default();
            for (_, term) in &objective.terms {
                term.forward_sharing(&batch, &cache).unwrap();
            }
            assert_eq!(cache.computed(), 2);
            let (a, b) = (
                shared.to_scalar::<f64>().unwrap(),
                separate.to_scalar::<f64>().unwrap(),
            );
            assert!((a - b).abs() < 1e-12, "{distance:?}: {a} vs {b}");
            let (ga, gb) = (shared.backward().unwrap(), separate.backward().unwrap());
            let values = |grads: &candle_core::backprop::GradStore, var: &Var| -> Vec<f64> {
                let g = grads.get(var).unwrap();
                g.flatten_all().unwrap().to_vec1().unwrap()
            };
            for var in [&images, &texts] {
                let (x, y) = (values(&ga, var), values(&gb, var));
                for (x, y) in x.iter().zip(&y) {
                    assert!((x - y).abs() < 1e-12, "{distance:?}: {x} vs {y}");
                }
            }
        }
    }

    #[test]
    fn warmup_switches_from_sum_to_max_violation() {
        let cfg = LossConfig {
            kind: LossKind::VseWarmup,
            warmup_epochs: 2,
            ..LossConfig::default()
        };
        let sum = Objective::vse(&cfg, Miner::All);
        let max = Objective::vse(&cfg, Miner::Hardest);
        assert_eq!(Objective::for_epoch(&cfg, 0), sum);
        assert_eq!(Objective::for_epoch(&cfg, 1), sum);
        assert_eq!(Objective::for_epoch(&cfg, 2), max);
        assert_eq!(Objective::for_epoch(&cfg, 9), max);
        assert_ne!(sum, max);
    }
}
