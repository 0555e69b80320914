//! Inserting rows into the graph, on every core: each node's lists are guarded by its own
//! lock, and a node that reaches above the current top layer holds the growth lock for its
//! whole insertion, as hnswlib does. Neighbours are chosen by the heuristic of Malkov &
//! Yashunin (algorithm 4; faiss's `shrink_neighbor_list`): a candidate is kept only if it is
//! closer to the new node than to every neighbour kept before it, which spreads the links
//! over directions instead of spending them on one cluster.

use std::sync::Mutex;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::kernel::{self, Rows, WalkRows};
use super::links::{Links, lock};
use super::search::{Scored, beam, greedy};
use super::{Entry, Graph};

/// The highest layer a node may reach; with `M` ≥ 2, fewer than one node in 2¹⁵ gets there.
const TOP_LAYER: usize = 15;

/// Rows inserted between two progress reports.
const INSERT_BATCH: usize = 8192;

/// Each node's top layer, drawn as `⌊−ln U / ln M⌋` (the paper's `mL = 1/ln M`) from a
/// seeded stream, so a graph's shape does not depend on the threads that build it.
fn draw_levels(n: usize, connections: usize, seed: u64) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let scale = 1.0 / (connections as f64).ln();
    (0..n)
        .map(|_| {
            let u: f64 = rng.random();
            let level = (-(1.0 - u).ln() * scale).floor() as usize;
            level.min(TOP_LAYER) as u8
        })
        .collect()
}

struct Builder<'a> {
    links: Links,
    /// The rows being inserted, each the query of its own insertion.
    rows: Rows<'a>,
    /// What the insertions' walks and the neighbour choice score.
    walk: WalkRows,
    ef_construction: usize,
    entry: Mutex<Entry>,
    growth: Mutex<()>,
}

/// Builds the graph over `rows`, `M` = `connections`, calling `progress(inserted)` between
/// batches.
pub fn build(
    rows: Rows<'_>,
    connections: usize,
    ef_construction: usize,
    seed: u64,
    mut progress: impl FnMut(usize),
) -> Graph {
    let n = rows.len();
    let levels = draw_levels(n, connections, seed);
    let walk = WalkRows::new(rows);
    if n == 0 {
        return Graph {
            links: Links::new(connections, levels),
            walk,
            entry: None,
        };
    }
    let first = Entry {
        node: 0,
        level: levels[0] as usize,
    };
    let builder = Builder {
        links: Links::new(connections, levels),
        rows,
        walk,
        ef_construction,
        entry: Mutex::new(first),
        growth: Mutex::new(()),
    };
    // Node 0 is the entry already; every batch, the first included, reports once.
    for start in (0..n).step_by(INSERT_BATCH) {
        let end = (start + INSERT_BATCH).min(n);
        (start.max(1)..end)
            .into_par_iter()
            .for_each(|node| builder.insert(node as u32));
        progress(end);
    }
    let entry = *lock(&builder.entry);
    let mut links = builder.links;
    links.freeze();
    Graph {
        links,
        walk: builder.walk,
        entry: Some(entry),
    }
}

impl Builder<'_> {
    fn insert(&self, node: u32) {
        let level = self.links.level(node as usize);
        let seen = *lock(&self.entry);
        let _growth = (level > seen.level).then(|| lock(&self.growth));
        let entry = *lock(&self.entry);
        let query = self.rows.row(node);
        let mut best = Scored {
            score: kernel::dot(query, self.walk.row(entry.node)),
            id: entry.node,
        };
        for layer in (level + 1..=entry.level).rev() {
            best = greedy(&self.links, &self.walk, query, best, layer);
        }
        let mut entries = vec![best];
        for layer in (0..=level.min(entry.level)).rev() {
            let found = beam(
                &self.links,
                &self.walk,
                query,
                &entries,
                self.ef_construction,
                layer,
            );
            let candidates: Vec<Scored> = found.iter().copied().filter(|s| s.id != node).collect();
            let chosen = select(
                self.rows,
                &self.walk,
                &candidates,
                self.links.capacity(layer),
            );
            let ids: Vec<u32> = chosen.iter().map(|s| s.id).collect();
            let capacity = self.links.capacity(layer);
            self.links.write(node as usize, layer, &ids, |all| {
                shrink(self.rows, &self.walk, node, all, capacity)
            });
            for &neighbour in &ids {
                self.links.add(neighbour as usize, layer, node, |all| {
                    shrink(self.rows, &self.walk, neighbour, all, capacity)
                });
            }
            entries = found;
        }
        if level > entry.level {
            *lock(&self.entry) = Entry { node, level };
        }
    }
}

/// Of `candidates` (best first), the ones the heuristic keeps, at most `keep`: all of them
/// when there are no more than `keep`. Each candidate's f32 row is scored against the kept
/// ones' walk rows.
fn select(rows: Rows<'_>, walk: &WalkRows, candidates: &[Scored], keep: usize) -> Vec<Scored> {
    if candidates.len() <= keep {
        return candidates.to_vec();
    }
    let mut kept: Vec<Scored> = Vec::with_capacity(keep);
    for candidate in candidates {
        let row = rows.row(candidate.id);
        let spread = kept
            .iter()
            .all(|k| kernel::dot(row, walk.row(k.id)) <= candidate.score);
        if spread {
            kept.push(*candidate);
            if kept.len() == keep {
                break;
            }
        }
    }
    kept
}

/// The neighbours `base` keeps when its full list gains one: the heuristic's choice among
/// them, scored against `base`.
fn shrink(
    rows: Rows<'_>,
    walk: &WalkRows,
    base: u32,
    all: &mut [u32],
    capacity: usize,
) -> Vec<u32> {
    let mut scores = Vec::with_capacity(all.len());
    kernel::dots(rows.row(base), walk, all, &mut scores);
    let mut scored: Vec<Scored> = all
        .iter()
        .zip(scores)
        .map(|(&id, score)| Scored { score, id })
        .collect();
    scored.sort_unstable_by(|a, b| b.cmp(a));
    select(rows, walk, &scored, capacity)
        .into_iter()
        .map(|s| s.id)
        .collect()
}
