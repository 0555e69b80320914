//! Walking the graph: the greedy descent through the upper layers and the beam search of
//! breadth `ef` on a layer (Malkov & Yashunin 2018, algorithms 2 and 5).

use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use super::kernel::{self, WalkRows};
use super::links::Links;

/// A node and its inner product with the query; ordered by the product, ties to the lower id
/// first (so the order is total and every run walks the same way).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    /// Inner product with the query.
    pub score: f32,
    /// Node.
    pub id: u32,
}

impl Eq for Scored {}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(other.id.cmp(&self.id))
    }
}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Nodes seen by the current walk: a mark per node, stamped with the walk's number so that a
/// new walk starts in O(1) instead of clearing the marks (cleared once every 255 walks). A byte
/// per node keeps the marks of 100k nodes in 100 KB of cache, next to the rows being scored.
struct Visited {
    marks: Vec<u8>,
    walk: u8,
}

impl Visited {
    fn start(&mut self, n: usize) {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
        self.walk = self.walk.wrapping_add(1);
        if self.walk == 0 {
            self.marks.fill(0);
            self.walk = 1;
        }
    }

    /// True the first time `node` is seen in this walk.
    fn first_visit(&mut self, node: u32) -> bool {
        let mark = &mut self.marks[node as usize];
        let first = *mark != self.walk;
        *mark = self.walk;
        first
    }
}

/// Scratch space of one thread's walks, kept between searches.
struct Scratch {
    visited: Visited,
    neighbours: Vec<u32>,
    fresh: Vec<u32>,
    scores: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch {
            visited: Visited { marks: Vec::new(), walk: 0 },
            neighbours: Vec::new(),
            fresh: Vec::new(),
            scores: Vec::new(),
        })
    };
}

/// From `start` on `level`, moves to the best-scoring neighbour until none scores higher.
pub fn greedy(
    links: &Links,
    rows: &WalkRows,
    query: &[f32],
    start: Scored,
    level: usize,
) -> Scored {
    SCRATCH.with_borrow_mut(|s| {
        let mut best = start;
        loop {
            links.read(best.id as usize, level, &mut s.neighbours);
            s.scores.clear();
            kernel::dots(query, rows, &s.neighbours, &mut s.scores);
            let moved = s
                .neighbours
                .iter()
                .zip(&s.scores)
                .map(|(&id, &score)| Scored { score, id })
                .fold(best, Scored::max);
            if moved == best {
                return best;
            }
            best = moved;
        }
    })
}

/// The `ef` best nodes found on `level` by a beam search from `entries`, best first.
pub fn beam(
    links: &Links,
    rows: &WalkRows,
    query: &[f32],
    entries: &[Scored],
    ef: usize,
    level: usize,
) -> Vec<Scored> {
    SCRATCH.with_borrow_mut(|s| {
        s.visited.start(links.len());
        // Candidates to expand, best on top; the results so far, worst on top.
        let mut candidates: BinaryHeap<Scored> = BinaryHeap::with_capacity(ef * 4);
        let mut results: BinaryHeap<Reverse<Scored>> = BinaryHeap::with_capacity(ef + 1);
        for &e in entries {
            if s.visited.first_visit(e.id) {
                candidates.push(e);
                results.push(Reverse(e));
            }
        }
        while results.len() > ef {
            results.pop();
        }
        while let Some(candidate) = candidates.pop() {
            let worst = results.peek().map_or(f32::NEG_INFINITY, |r| r.0.score);
            if results.len() >= ef && candidate.score < worst {
                break;
            }
            links.read(candidate.id as usize, level, &mut s.neighbours);
            s.fresh.clear();
            for &m in &s.neighbours {
                if s.visited.first_visit(m) {
                    s.fresh.push(m);
                }
            }
            s.scores.clear();
            kernel::dots(query, rows, &s.fresh, &mut s.scores);
            for (&id, &score) in s.fresh.iter().zip(&s.scores) {
                let found = Scored { score, id };
                let worst = results.peek().map_or(f32::NEG_INFINITY, |r| r.0.score);
                if results.len() < ef || score > worst {
                    candidates.push(found);
                    results.push(Reverse(found));
                    if results.len() > ef {
                        results.pop();
                    }
                }
            }
        }
        // Ascending order of `Reverse` is descending order of the scores: best first.
        results.into_sorted_vec().into_iter().map(|r| r.0).collect()
    })
}
