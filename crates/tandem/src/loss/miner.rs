//! Which negatives each anchor uses. Mining looks at values only and carries no gradient.

use serde::{Deserialize, Serialize};

/// A rule that picks, for each tuple row, the negatives whose hinges enter the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Miner {
    /// Every negative.
    All,
    /// The `k` largest violations (all negatives when there are fewer than `k`).
    TopK(usize),
    /// The single largest violation (max-violation, as in VSE++).
    Hardest,
    /// Negatives farther than the positive but inside the margin, `0 < hinge < margin`
    /// (FaceNet's semi-hard negatives).
    SemiHard,
}

impl Miner {
    /// Marks the selected entries of one row.
    ///
    /// `violations[j]` is the hinge value `margin + d(a,p) - d(a,j)` (clamped at 0) against
    /// reference `j`; `negative[j]` says whether `j` is a negative of this row. Ties are broken
    /// by the lower reference index, so selection is deterministic. Returns the indices
    /// selected.
    pub fn select_row(self, violations: &[f64], negative: &[bool], margin: f64) -> Vec<usize> {
        let mut candidates: Vec<usize> = (0..violations.len()).filter(|&j| negative[j]).collect();
        let k = match self {
            Miner::All => return candidates,
            Miner::SemiHard => {
                candidates.retain(|&j| violations[j] > 0.0 && violations[j] < margin);
                return candidates;
            }
            Miner::TopK(k) => k,
            Miner::Hardest => 1,
        };
        if candidates.len() > k {
            let order = |a: &usize, b: &usize| {
                violations[*b]
                    .total_cmp(&violations[*a])
                    .then_with(|| a.cmp(b))
            };
            candidates.select_nth_unstable_by(k - 1, order);
            candidates.truncate(k);
        }
        candidates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_picks_largest_among_negatives_with_index_ties() {
        let v = [0.5, 0.9, 0.1, 0.9, 0.7];
        let neg = [true, true, true, true, false];
        let mut s = Miner::TopK(2).select_row(&v, &neg, 1.0);
        s.sort_unstable();
        assert_eq!(s, vec![1, 3]);
        let mut s = Miner::TopK(3).select_row(&v, &neg, 1.0);
        s.sort_unstable();
        assert_eq!(s, vec![0, 1, 3]);
        assert_eq!(Miner::Hardest.select_row(&v, &neg, 1.0), vec![1]);
        assert_eq!(Miner::All.select_row(&v, &neg, 1.0), vec![0, 1, 2, 3]);
        assert_eq!(Miner::TopK(10).select_row(&v, &neg, 1.0).len(), 4);
    }

    #[test]
    fn semi_hard_keeps_violations_inside_the_margin() {
        // Margin 0.8: 0.9 violates by more than the margin (the negative is closer than the
        // positive: hard), 0.0 not at all (easy); 0.5, 0.1 and 0.7 are semi-hard, 0.7 is no
        // negative.
        let v = [0.5, 0.9, 0.1, 0.0, 0.7];
        let neg = [true, true, true, true, false];
        assert_eq!(Miner::SemiHard.select_row(&v, &neg, 0.8), vec![0, 2]);
    }
}
