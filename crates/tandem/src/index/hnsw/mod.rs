//! tandem's own HNSW graph (Malkov & Yashunin 2018), over inner products of unit rows.
//!
//! The graph holds links and a bfloat16 copy of the rows for its walk (`kernel::WalkRows`);
//! the f32 rows stay in the index, which saves them once and ranks the walk's finds by them.
//! Layer 0 keeps `2M` links per node and the upper layers `M`, neighbours are chosen by the
//! spreading heuristic, and insertion runs on every core (as in faiss's `IndexHNSWFlat` and
//! hnswlib).

mod build;
mod file;
mod kernel;
mod links;
mod search;

pub use file::{read, write};
pub use kernel::Rows;
pub use search::Scored;

use kernel::WalkRows;

use links::Links;

/// The node a search starts from and the top layer it reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    node: u32,
    level: usize,
}

/// A built graph.
pub struct Graph {
    links: Links,
    /// What the walk scores; made from the gallery's rows when the graph is built or read.
    walk: WalkRows,
    /// `None` for a graph of no rows.
    entry: Option<Entry>,
}

impl Graph {
    /// Inserts every row (in parallel batches), calling `progress(inserted)` after each batch.
    /// `seed` draws the nodes' layers.
    pub fn build(
        rows: Rows<'_>,
        connections: usize,
        ef_construction: usize,
        seed: u64,
        progress: impl FnMut(usize),
    ) -> Graph {
        build::build(rows, connections, ef_construction, seed, progress)
    }

    /// Nodes.
    pub fn len(&self) -> usize {
        self.links.len()
    }

    /// The `k` best of the `ef` (at least `k`) nodes the walk finds for `query`, by
    /// [`crate::eval::dot`] with `rows` (the gallery the graph was built on), best first, ties
    /// to the lower id.
    pub fn search(&self, rows: Rows<'_>, query: &[f32], k: usize, ef: usize) -> Vec<Scored> {
        let Some(entry) = self.entry else {
            return Vec::new();
        };
        let walk = &self.walk;
        let mut best = Scored {
            score: kernel::dot(query, walk.row(entry.node)),
            id: entry.node,
        };
        for layer in (1..=entry.level).rev() {
            best = search::greedy(&self.links, walk, query, best, layer);
        }
        let found = search::beam(&self.links, walk, query, &[best], ef.max(k), 0);
        rank_by_rows(rows, query, found, k, walk.error_bound(query))
    }
}

/// The best `k` of the walk's finds (`found`, best first by the walk's bfloat16 scores, each
/// within `bound` of its f32 product) by [`crate::eval::dot`] with `rows`, best first.
///
/// Only the finds that could rank in the top `k` are scored again: one whose walk score is
/// more than `2·bound` below the `k`-th's is below each of the first `k` by the f32 products
/// too, so leaving it out changes nothing.
fn rank_by_rows(
    rows: Rows<'_>,
    query: &[f32],
    mut found: Vec<Scored>,
    k: usize,
    bound: f32,
) -> Vec<Scored> {
    if k == 0 {
        return Vec::new();
    }
    if let Some(kth) = found.get(k - 1) {
        let cut = kth.score - 2.0 * bound;
        let contenders = found.partition_point(|s| s.score >= cut);
        found.truncate(contenders);
    }
    let (fours, rest) = found.as_chunks_mut::<4>();
    for four in fours {
        let scores = crate::eval::dot4(query, four.map(|s| rows.row(s.id)));
        for (s, score) in four.iter_mut().zip(scores) {
            s.score = score;
        }
    }
    for s in rest {
        s.score = crate::eval::dot(query, rows.row(s.id));
    }
    found.sort_unstable_by(|a, b| b.cmp(a));
    found.truncate(k);
    found
}

#[cfg(test)]
mod tests;
