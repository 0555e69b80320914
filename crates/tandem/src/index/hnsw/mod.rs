//! tandem's own HNSW graph (Malkov & Yashunin 2018), over inner products of unit rows.
//!
//! The graph holds links only; the rows stay in the index, which saves them once. Layer 0
//! keeps `2M` links per node and the upper layers `M`, neighbours are chosen by the spreading
//! heuristic, and insertion runs on every core (as in faiss's `IndexHNSWFlat` and hnswlib).

mod build;
mod file;
mod kernel;
mod links;
mod search;

pub use file::{read, write};
pub use kernel::Rows;
pub use search::Scored;

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

    /// The best `ef` (at least `k`) nodes the walk finds for `query`, best first, cut to `k`,
    /// scored by the walk's kernel.
    pub fn search(&self, rows: Rows<'_>, query: &[f32], k: usize, ef: usize) -> Vec<Scored> {
        let Some(entry) = self.entry else {
            return Vec::new();
        };
        let mut best = Scored {
            score: kernel::dot(query, rows.row(entry.node)),
            id: entry.node,
        };
        for layer in (1..=entry.level).rev() {
            best = search::greedy(&self.links, rows, query, best, layer);
        }
        let mut found = search::beam(&self.links, rows, query, &[best], ef.max(k), 0);
        found.truncate(k);
        found
    }
}

#[cfg(test)]
mod tests;
