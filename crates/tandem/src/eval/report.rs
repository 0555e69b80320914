//! Retrieval metrics from ranks, as the field reports them.

use serde::{Deserialize, Serialize};

use crate::eval::Ranks;

/// Recall at one more K, both ways (hit rate, percent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecallAt {
    /// The K.
    pub k: usize,
    /// Image→text hit rate at K.
    pub image_to_text: f64,
    /// Text→image hit rate at K.
    pub text_to_image: f64,
}

/// Recall@K as the field reports it (hit rate: a query counts when any relevant item is in the
/// top K; percent), median and mean rank both ways, rsum, and for image→text, where an image
/// has several relevant captions, mAP@R and NDCG@10.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievalMetrics {
    /// Which split was evaluated.
    pub split: String,
    /// The protocol (`full`, `flickr-1k`, `coco-1k`, `coco-5k`).
    #[serde(default = "full")]
    pub protocol: String,
    /// Folds averaged (5 for `coco-1k`, else 1); `images` and `texts` are per fold.
    #[serde(default = "one")]
    pub folds: usize,
    /// Number of images (image→text queries).
    pub images: usize,
    /// Number of captions (text→image queries).
    pub texts: usize,
    /// Image→text R@1, R@5, R@10 (% of images with a caption in the top K).
    pub image_to_text: [f64; 3],
    /// Text→image R@1, R@5, R@10 (% of captions with their image in the top K).
    pub text_to_image: [f64; 3],
    /// Median rank image→text (`floor(median(rank - 1)) + 1`, as VSE++ computes it).
    pub image_to_text_medr: f64,
    /// Mean rank image→text.
    pub image_to_text_meanr: f64,
    /// Median rank text→image.
    pub text_to_image_medr: f64,
    /// Mean rank text→image.
    pub text_to_image_meanr: f64,
    /// Image→text mAP@R (percent): per image with R captions, the mean over its captions in
    /// the top R of the precision at their position (Musgrave et al. 2020).
    #[serde(default)]
    pub image_to_text_map_at_r: f64,
    /// Image→text NDCG@10 (percent), binary relevance.
    #[serde(default)]
    pub image_to_text_ndcg_at_10: f64,
    /// Hit-rate recall at further K, when asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recall_at: Vec<RecallAt>,
    /// Sum of the six recalls.
    pub rsum: f64,
}

fn full() -> String {
    "full".into()
}

fn one() -> usize {
    1
}

/// mAP@R of one query from the sorted 1-based positions of its R relevant items.
pub fn average_precision_at_r(positions: &[usize]) -> f64 {
    let r = positions.len();
    if r == 0 {
        return 0.0;
    }
    positions
        .iter()
        .enumerate()
        .filter(|&(_, &p)| p <= r)
        .map(|(j, &p)| (j + 1) as f64 / p as f64)
        .sum::<f64>()
        / r as f64
}

/// NDCG@k of one query (binary relevance) from the sorted 1-based positions of its relevant
/// items.
pub fn ndcg_at(positions: &[usize], k: usize) -> f64 {
    let gain = |p: usize| 1.0 / ((p + 1) as f64).log2();
    let ideal: f64 = (1..=positions.len().min(k)).map(gain).sum();
    if ideal == 0.0 {
        return 0.0;
    }
    positions
        .iter()
        .filter(|&&p| p <= k)
        .map(|&p| gain(p))
        .sum::<f64>()
        / ideal
}

/// The K of the reported recalls.
pub const RECALL_KS: [usize; 3] = [1, 5, 10];

fn recall(ranks: &[usize], k: usize) -> f64 {
    100.0 * ranks.iter().filter(|&&r| r <= k).count() as f64 / ranks.len().max(1) as f64
}

fn median_rank(ranks: &[usize]) -> f64 {
    if ranks.is_empty() {
        return 0.0;
    }
    let mut r: Vec<usize> = ranks.to_vec();
    r.sort_unstable();
    let n = r.len();
    let zero_based = if n % 2 == 1 {
        (r[n / 2] - 1) as f64
    } else {
        ((r[n / 2 - 1] + r[n / 2]) as f64 - 2.0) / 2.0
    };
    zero_based.floor() + 1.0
}

fn mean_rank(ranks: &[usize]) -> f64 {
    ranks.iter().sum::<usize>() as f64 / ranks.len().max(1) as f64
}

impl RetrievalMetrics {
    /// Metrics from ranks (protocol `full`).
    pub fn from_ranks(split: &str, ranks: &Ranks) -> Self {
        Self::from_ranks_at(split, ranks, &[])
    }

    /// Metrics from ranks, with hit-rate recall at each of `extra_ks` too.
    pub fn from_ranks_at(split: &str, ranks: &Ranks, extra_ks: &[usize]) -> Self {
        let i2t = RECALL_KS.map(|k| recall(&ranks.image_to_text, k));
        let t2i = RECALL_KS.map(|k| recall(&ranks.text_to_image, k));
        let per_image = |f: &dyn Fn(&[usize]) -> f64| {
            100.0 * ranks.image_to_text_all.iter().map(|p| f(p)).sum::<f64>()
                / ranks.image_to_text_all.len().max(1) as f64
        };
        RetrievalMetrics {
            split: split.to_string(),
            protocol: full(),
            folds: 1,
            image_to_text_map_at_r: per_image(&average_precision_at_r),
            image_to_text_ndcg_at_10: per_image(&|p| ndcg_at(p, 10)),
            recall_at: extra_ks
                .iter()
                .map(|&k| RecallAt {
                    k,
                    image_to_text: recall(&ranks.image_to_text, k),
                    text_to_image: recall(&ranks.text_to_image, k),
                })
                .collect(),
            images: ranks.image_to_text.len(),
            texts: ranks.text_to_image.len(),
            image_to_text: i2t,
            text_to_image: t2i,
            image_to_text_medr: median_rank(&ranks.image_to_text),
            image_to_text_meanr: mean_rank(&ranks.image_to_text),
            text_to_image_medr: median_rank(&ranks.text_to_image),
            text_to_image_meanr: mean_rank(&ranks.text_to_image),
            rsum: i2t.iter().chain(&t2i).sum(),
        }
    }

    /// Expected metrics of a random ranking (chance level), given the captions per image.
    ///
    /// Text→image: the own image is uniform among `n` positions, so R@K = K/n. Image→text: with
    /// `c` relevant among `m` captions, P(none in top K) = C(m-c, K) / C(m, K).
    pub fn chance(split: &str, captions_per_image: &[u32]) -> Self {
        let n = captions_per_image.len();
        let m: usize = captions_per_image.iter().map(|&c| c as usize).sum();
        let t2i = RECALL_KS.map(|k| 100.0 * (k.min(n) as f64) / n as f64);
        let i2t = RECALL_KS.map(|k| {
            let hit: f64 = captions_per_image
                .iter()
                .map(|&c| {
                    let mut miss = 1.0;
                    for j in 0..k.min(m) {
                        miss *= (m - c as usize).saturating_sub(j) as f64 / (m - j) as f64;
                    }
                    1.0 - miss
                })
                .sum();
            100.0 * hit / n as f64
        });
        RetrievalMetrics {
            split: split.to_string(),
            protocol: full(),
            folds: 1,
            image_to_text_map_at_r: f64::NAN,
            image_to_text_ndcg_at_10: f64::NAN,
            recall_at: Vec::new(),
            images: n,
            texts: m,
            image_to_text: i2t,
            text_to_image: t2i,
            image_to_text_medr: f64::NAN,
            image_to_text_meanr: f64::NAN,
            text_to_image_medr: ((n as f64 - 1.0) / 2.0).floor() + 1.0,
            text_to_image_meanr: (n as f64 + 1.0) / 2.0,
            rsum: i2t.iter().chain(&t2i).sum(),
        }
    }

    /// The mean of every metric over the folds of one protocol (COCO 1K: five folds of 1000).
    ///
    /// # Panics
    /// Never for a non-empty `folds`; an empty one is a caller bug.
    pub fn mean_of_folds(protocol: &str, folds: &[RetrievalMetrics]) -> Self {
        assert!(!folds.is_empty(), "no folds to average");
        let n = folds.len() as f64;
        let mean = |f: &dyn Fn(&RetrievalMetrics) -> f64| folds.iter().map(f).sum::<f64>() / n;
        let first = &folds[0];
        RetrievalMetrics {
            split: first.split.clone(),
            protocol: protocol.to_string(),
            folds: folds.len(),
            images: first.images,
            texts: (mean(&|m| m.texts as f64)).round() as usize,
            image_to_text: [0, 1, 2].map(|k| mean(&|m| m.image_to_text[k])),
            text_to_image: [0, 1, 2].map(|k| mean(&|m| m.text_to_image[k])),
            image_to_text_medr: mean(&|m| m.image_to_text_medr),
            image_to_text_meanr: mean(&|m| m.image_to_text_meanr),
            text_to_image_medr: mean(&|m| m.text_to_image_medr),
            text_to_image_meanr: mean(&|m| m.text_to_image_meanr),
            image_to_text_map_at_r: mean(&|m| m.image_to_text_map_at_r),
            image_to_text_ndcg_at_10: mean(&|m| m.image_to_text_ndcg_at_10),
            recall_at: first
                .recall_at
                .iter()
                .enumerate()
                .map(|(j, r)| RecallAt {
                    k: r.k,
                    image_to_text: mean(&|m| m.recall_at[j].image_to_text),
                    text_to_image: mean(&|m| m.recall_at[j].text_to_image),
                })
                .collect(),
            rsum: mean(&|m| m.rsum),
        }
    }

    /// A fixed-width table, one row per direction.
    pub fn table(&self) -> String {
        let folds = if self.folds > 1 {
            format!(" per fold, mean of {} folds", self.folds)
        } else {
            String::new()
        };
        let mut s = format!(
            "split {}, protocol {}: {} images, {} captions{folds}\n",
            self.split, self.protocol, self.images, self.texts
        );
        s.push_str("direction        R@1    R@5   R@10   medr    meanr\n");
        let row = |name: &str, r: &[f64; 3], medr: f64, meanr: f64| {
            format!(
                "{name:<14} {:>5.1}  {:>5.1}  {:>5.1}  {:>5}  {:>7.1}\n",
                r[0],
                r[1],
                r[2],
                if medr.is_nan() {
                    "-".to_string()
                } else {
                    format!("{medr:.0}")
                },
                meanr
            )
        };
        s.push_str(&row(
            "image→text",
            &self.image_to_text,
            self.image_to_text_medr,
            self.image_to_text_meanr,
        ));
        s.push_str(&row(
            "text→image",
            &self.text_to_image,
            self.text_to_image_medr,
            self.text_to_image_meanr,
        ));
        s.push_str(&format!("rsum {:.1}\n", self.rsum));
        if !self.image_to_text_map_at_r.is_nan() {
            s.push_str(&format!(
                "image→text mAP@R {:.1}  NDCG@10 {:.1}\n",
                self.image_to_text_map_at_r, self.image_to_text_ndcg_at_10
            ));
        }
        for r in &self.recall_at {
            s.push_str(&format!(
                "R@{}: image→text {:.1}  text→image {:.1}\n",
                r.k, r.image_to_text, r.text_to_image
            ));
        }
        s.push_str("R@K is the hit rate: a query counts when any relevant item is in the top K\n");
        s
    }

    /// CSV: a header and one line per direction.
    pub fn csv(&self) -> String {
        let extra_header: String = self
            .recall_at
            .iter()
            .map(|r| format!(",R@{}", r.k))
            .collect();
        let mut s = format!(
            "split,protocol,folds,direction,images,captions,R@1,R@5,R@10{extra_header},medr,meanr,mAP@R,NDCG@10,rsum\n"
        );
        let number = |v: f64| {
            if v.is_nan() {
                String::new()
            } else {
                format!("{v:.4}")
            }
        };
        for (direction, r, medr, meanr, map, ndcg) in [
            (
                "image_to_text",
                &self.image_to_text,
                self.image_to_text_medr,
                self.image_to_text_meanr,
                self.image_to_text_map_at_r,
                self.image_to_text_ndcg_at_10,
            ),
            (
                "text_to_image",
                &self.text_to_image,
                self.text_to_image_medr,
                self.text_to_image_meanr,
                f64::NAN,
                f64::NAN,
            ),
        ] {
            let extra: String = self
                .recall_at
                .iter()
                .map(|x| {
                    let v = if direction == "image_to_text" {
                        x.image_to_text
                    } else {
                        x.text_to_image
                    };
                    format!(",{}", number(v))
                })
                .collect();
            s.push_str(&format!(
                "{},{},{},{direction},{},{},{},{},{}{extra},{},{},{},{},{}\n",
                self.split,
                self.protocol,
                self.folds,
                self.images,
                self.texts,
                number(r[0]),
                number(r[1]),
                number(r[2]),
                number(medr),
                number(meanr),
                number(map),
                number(ndcg),
                number(self.rsum),
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_metrics() {
        let ranks = Ranks {
            image_to_text: vec![1, 3, 8, 20],
            image_to_text_all: vec![vec![1], vec![3], vec![8], vec![20]],
            text_to_image: vec![1, 1, 2, 6, 11, 40],
        };
        let m = RetrievalMetrics::from_ranks("test", &ranks);
        assert_eq!(m.image_to_text, [25.0, 50.0, 75.0]);
        assert_eq!(
            m.text_to_image,
            [100.0 * 2.0 / 6.0, 100.0 * 3.0 / 6.0, 100.0 * 4.0 / 6.0]
        );
        // 0-based ranks 0,2,7,19: median 4.5 → floor 4 → 5.
        assert_eq!(m.image_to_text_medr, 5.0);
        assert_eq!(m.image_to_text_meanr, 8.0);
        // 0-based 0,0,1,5,10,39: median 3 → 4.
        assert_eq!(m.text_to_image_medr, 4.0);
        assert!((m.rsum - (150.0 + 900.0 / 6.0)).abs() < 1e-9);
    }

    #[test]
    fn map_at_r_and_ndcg_hand_computed() {
        // Two captions at positions 1 and 3: AP@R counts position 1 only (3 > R = 2): 1/2.
        assert!((average_precision_at_r(&[1, 3]) - 0.5).abs() < 1e-12);
        // NDCG@10 = (1/log2 2 + 1/log2 4) / (1/log2 2 + 1/log2 3).
        let expected = 1.5 / (1.0 + 1.0 / 3f64.log2());
        assert!((ndcg_at(&[1, 3], 10) - expected).abs() < 1e-12);
        // One caption at position 2: AP@R 0, NDCG 1/log2 3; at position 11: NDCG@10 0.
        assert_eq!(average_precision_at_r(&[2]), 0.0);
        assert!((ndcg_at(&[2], 10) - 1.0 / 3f64.log2()).abs() < 1e-12);
        assert_eq!(ndcg_at(&[11], 10), 0.0);
        // Perfect rankings score 1.
        assert_eq!(average_precision_at_r(&[1, 2, 3]), 1.0);
        assert!((ndcg_at(&[1, 2, 3, 4, 5], 10) - 1.0).abs() < 1e-12);
        let ranks = Ranks {
            image_to_text: vec![1, 2],
            image_to_text_all: vec![vec![1, 3], vec![2]],
            text_to_image: vec![1, 1, 2],
        };
        let m = RetrievalMetrics::from_ranks_at("t", &ranks, &[2]);
        assert!((m.image_to_text_map_at_r - 25.0).abs() < 1e-9);
        assert_eq!(m.recall_at[0].image_to_text, 100.0);
        assert!((m.recall_at[0].text_to_image - 100.0).abs() < 1e-9);
    }

    #[test]
    fn folds_average_every_metric() {
        let fold = |first: usize| {
            RetrievalMetrics::from_ranks_at(
                "test",
                &Ranks {
                    image_to_text: vec![first, 1],
                    image_to_text_all: vec![vec![first], vec![1]],
                    text_to_image: vec![first, 2],
                },
                &[20],
            )
        };
        let folds = [fold(1), fold(6), fold(30)];
        let m = RetrievalMetrics::mean_of_folds("coco-1k", &folds);
        assert_eq!((m.protocol.as_str(), m.folds, m.images), ("coco-1k", 3, 2));
        // i2t R@1 per fold: 100, 50, 50 → 66.67; rsum is the mean of the fold rsums.
        assert!((m.image_to_text[0] - 200.0 / 3.0).abs() < 1e-9);
        let rsum = folds.iter().map(|f| f.rsum).sum::<f64>() / 3.0;
        assert!((m.rsum - rsum).abs() < 1e-9);
        assert!((m.recall_at[0].image_to_text - 100.0 * 5.0 / 6.0).abs() < 1e-9);
    }

    #[test]
    fn chance_level_hand_computed() {
        // 10 images with 2 captions each: t2i R@1 = 10%; i2t R@1 = 2/20 = 10%,
        // R@5 = 1 - C(18,5)/C(20,5) = 1 - (15*14)/(20*19).
        let c = RetrievalMetrics::chance("x", &[2; 10]);
        assert!((c.text_to_image[0] - 10.0).abs() < 1e-9);
        assert!((c.image_to_text[0] - 10.0).abs() < 1e-9);
        assert!((c.image_to_text[1] - 100.0 * (1.0 - 210.0 / 380.0)).abs() < 1e-9);
        assert_eq!(c.text_to_image[2], 100.0);
    }
}
