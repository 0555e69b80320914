//! Hubness: how often each image is among the top k of the caption queries. In high-dimensional
//! spaces a few "hub" images sit near everything and are retrieved for unrelated captions; the
//! k-occurrence counts and their skewness (Radovanović et al. 2010) show it.

use serde::Serialize;

use super::nearest::top_k;

/// k-occurrence of every image over all caption queries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hubness {
    /// The k of the top-k lists.
    pub k: usize,
    /// For each image, in how many captions' top k it appears.
    pub occurrences: Vec<u32>,
    /// Skewness of the occurrence counts (0 for a symmetric spread; large and positive when a
    /// few images are hubs).
    pub skewness: f64,
}

impl Hubness {
    /// Image indices by occurrence, most retrieved first (ties: lower index first), at most `n`.
    pub fn hubs(&self, n: usize) -> Vec<(usize, u32)> {
        let mut order: Vec<usize> = (0..self.occurrences.len()).collect();
        order.sort_by(|&a, &b| {
            self.occurrences[b]
                .cmp(&self.occurrences[a])
                .then(a.cmp(&b))
        });
        order
            .into_iter()
            .take(n)
            .map(|i| (i, self.occurrences[i]))
            .collect()
    }
}

/// k-occurrence counts and their skewness.
pub fn hubness(images: &[f32], texts: &[f32], dim: usize, k: usize) -> Hubness {
    let n_images = images.len() / dim.max(1);
    let mut occurrences = vec![0u32; n_images];
    for list in top_k(images, texts, dim, k) {
        for i in list {
            occurrences[i as usize] += 1;
        }
    }
    Hubness {
        k,
        skewness: skewness(&occurrences),
        occurrences,
    }
}

/// Sample skewness `E[(x − μ)³] / σ³` (0 when all counts are equal).
fn skewness(values: &[u32]) -> f64 {
    let n = values.len() as f64;
    if n == 0.0 {
        return 0.0;
    }
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let moment = |p: i32| {
        values
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(p))
            .sum::<f64>()
            / n
    };
    let variance = moment(2);
    if variance == 0.0 {
        0.0
    } else {
        moment(3) / variance.powf(1.5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_hub() {
        // Image 0 = (1, 0) is closest to every caption; images 1, 2 point away.
        let images = [1.0, 0.0, -1.0, 0.0, 0.0, -1.0];
        let texts = [0.9, 0.1, 0.8, 0.3, 0.7, -0.2];
        let h = hubness(&images, &texts, 2, 1);
        assert_eq!(h.occurrences, vec![3, 0, 0]);
        assert_eq!(h.hubs(2), vec![(0, 3), (1, 0)]);
        // Counts 3, 0, 0: mean 1, central moments m2 = 2, m3 = 2 → 2 / 2^1.5.
        assert!((h.skewness - 2.0 / 2f64.powf(1.5)).abs() < 1e-12);
    }
}
