//! Retrieval metrics from ranks, as the field reports them.

use serde::{Deserialize, Serialize};

use crate::eval::Ranks;

/// Recall@K (hit rate, in percent), median and mean rank both ways, and rsum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievalMetrics {
    /// Which split was evaluated.
    pub split: String,
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
    /// Sum of the six recalls.
    pub rsum: f64,
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
    /// Metrics from ranks.
    pub fn from_ranks(split: &str, ranks: &Ranks) -> Self {
        let i2t = RECALL_KS.map(|k| recall(&ranks.image_to_text, k));
        let t2i = RECALL_KS.map(|k| recall(&ranks.text_to_image, k));
        RetrievalMetrics {
            split: split.to_string(),
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

    /// A fixed-width table, one row per direction.
    pub fn table(&self) -> String {
        let mut s = format!(
            "split {}: {} images, {} captions\n",
            self.split, self.images, self.texts
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
