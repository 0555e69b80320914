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
        let references = violations.iter().copied().enumerate();
        self.select_where(references, |j| negative[j], margin)
    }

    /// [`Miner::select_row`] over `(reference, violation)` of every reference of a row in
    /// increasing reference order, of which `negative` says which are negatives: one pass,
    /// without the row's dense arrays. The top-k keeps a sorted list of its k best so far and
    /// asks about negativity only for a reference that would enter it, so most references cost
    /// one comparison. Returns the indices selected, in increasing order.
    pub fn select_where(
        self,
        references: impl Iterator<Item = (usize, f64)>,
        negative: impl Fn(usize) -> bool,
        margin: f64,
    ) -> Vec<usize> {
        let k = match self {
            Miner::All => {
                return references
                    .filter(|&(j, _)| negative(j))
                    .map(|(j, _)| j)
                    .collect();
            }
            Miner::SemiHard => {
                return references
                    .filter(|&(j, v)| v > 0.0 && v < margin && negative(j))
                    .map(|(j, _)| j)
                    .collect();
            }
            Miner::TopK(k) => k,
            Miner::Hardest => 1,
        };
        // Best first: larger violation, then lower index. Candidates arrive in increasing
        // index order, so one equal to the worst kept never displaces it.
        let mut best: Vec<(f64, usize)> = Vec::with_capacity(k + 1);
        for (j, v) in references {
            if best.len() == k && best.last().is_none_or(|&(worst, _)| v <= worst) {
                continue;
            }
            if !negative(j) {
                continue;
            }
            let at = best.partition_point(|&(kept, _)| kept >= v);
            best.insert(at, (v, j));
            best.truncate(k);
        }
        let mut chosen: Vec<usize> = best.into_iter().map(|(_, j)| j).collect();
        chosen.sort_unstable();
        chosen
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

    /// The one-pass selection equals sorting every negative by (violation desc, index asc) and
    /// taking the first k, on rows full of ties.
    #[test]
    fn top_k_equals_sorting_every_negative() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for case in 0..500 {
            let len = rng.random_range(0..60);
            // Few distinct values (ties), zeros included as clamped hinges are.
            let v: Vec<f64> = (0..len)
                .map(|_| f64::from(rng.random_range(0..6u8)) * 0.25)
                .collect();
            let neg: Vec<bool> = (0..len).map(|_| rng.random_bool(0.8)).collect();
            let k = rng.random_range(1..12);
            let mut order: Vec<usize> = (0..len).filter(|&j| neg[j]).collect();
            order.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
            let mut want = order[..k.min(order.len())].to_vec();
            want.sort_unstable();
            assert_eq!(
                Miner::TopK(k).select_row(&v, &neg, 1.0),
                want,
                "case {case}"
            );
            let every = || (0..len).map(|j| (j, v[j]));
            let where_negative = Miner::TopK(k).select_where(every(), |j| neg[j], 1.0);
            assert_eq!(where_negative, want, "case {case}, negatives by predicate");
            let hardest = order[..order.len().min(1)].to_vec();
            assert_eq!(
                Miner::Hardest.select_row(&v, &neg, 1.0),
                hardest,
                "case {case}"
            );
        }
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
