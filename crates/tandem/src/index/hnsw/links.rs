//! The graph's adjacency: for every node and every layer it lives on, a count and up to a fixed
//! number of neighbour ids, in two flat arrays (layer 0 for every node, the upper layers for the
//! few nodes that reach them).
//!
//! The words are atomics so that insertions on several threads can share the graph in safe
//! Rust: a node's lists are written under that node's lock, and read under it while the graph
//! grows. Relaxed loads of an `AtomicU32` are plain loads on x86 and ARM, so searching a built
//! graph (no locks) costs what a `Vec<u32>` would.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// Adjacency lists of every node on every layer it reaches.
pub struct Links {
    /// Links per node on the upper layers (`M`); layer 0 holds twice as many.
    connections: usize,
    /// The top layer of each node.
    levels: Vec<u8>,
    /// `n × (1 + 2M)`: each node's layer-0 count, then its neighbours.
    layer0: Vec<AtomicU32>,
    /// Where each node's upper layers start in `upper`, in words; `n + 1` entries.
    upper_start: Vec<usize>,
    /// For each node, layers 1..=level, each `1 + M` words.
    upper: Vec<AtomicU32>,
    /// One per node while the graph is built; empty once it is frozen.
    locks: Vec<Mutex<()>>,
}

/// A node's lists as stored: `levels`, `layer0` and `upper` (see [`Links`]).
pub struct RawLinks {
    /// Links per node on the upper layers (`M`).
    pub connections: usize,
    /// The top layer of each node.
    pub levels: Vec<u8>,
    /// `n × (1 + 2M)` words.
    pub layer0: Vec<u32>,
    /// The upper layers, node by node.
    pub upper: Vec<u32>,
}

fn atomics(words: impl IntoIterator<Item = u32>) -> Vec<AtomicU32> {
    words.into_iter().map(AtomicU32::new).collect()
}

impl Links {
    /// Empty lists for nodes of the given top layers, with a lock per node for building.
    pub fn new(connections: usize, levels: Vec<u8>) -> Self {
        let n = levels.len();
        let upper_start = upper_starts(connections, &levels);
        let upper_words = upper_start[n];
        Links {
            connections,
            layer0: atomics(std::iter::repeat_n(0, n * (1 + 2 * connections))),
            upper: atomics(std::iter::repeat_n(0, upper_words)),
            upper_start,
            levels,
            locks: (0..n).map(|_| Mutex::new(())).collect(),
        }
    }

    /// Lists read back from a file, frozen (no locks).
    ///
    /// # Errors
    /// A sentence saying which part does not fit the others.
    pub fn from_raw(raw: RawLinks) -> Result<Self, String> {
        let n = raw.levels.len();
        let m = raw.connections;
        if raw.layer0.len() != n * (1 + 2 * m) {
            return Err(format!(
                "layer 0 holds {} words, {n} nodes of {} links need {}",
                raw.layer0.len(),
                2 * m,
                n * (1 + 2 * m)
            ));
        }
        let upper_start = upper_starts(m, &raw.levels);
        if raw.upper.len() != upper_start[n] {
            return Err(format!(
                "the upper layers hold {} words, the node levels need {}",
                raw.upper.len(),
                upper_start[n]
            ));
        }
        let links = Links {
            connections: m,
            levels: raw.levels,
            layer0: atomics(raw.layer0),
            upper_start,
            upper: atomics(raw.upper),
            locks: Vec::new(),
        };
        links.check()?;
        Ok(links)
    }

    /// Every count within its list's capacity and every neighbour a node that reaches the layer.
    fn check(&self) -> Result<(), String> {
        let mut buffer = Vec::new();
        for node in 0..self.len() {
            for level in 0..=self.level(node) {
                let (count, _) = self.list(node, level);
                if count.load(Relaxed) as usize > self.capacity(level) {
                    return Err(format!("node {node} has too many links on layer {level}"));
                }
                self.read(node, level, &mut buffer);
                if let Some(bad) = buffer
                    .iter()
                    .find(|&&m| m as usize >= self.len() || self.level(m as usize) < level)
                {
                    return Err(format!(
                        "node {node} links to {bad} on layer {level}, which is not there"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The lists as plain words, for writing to a file.
    pub fn to_raw(&self) -> RawLinks {
        let words = |v: &[AtomicU32]| v.iter().map(|w| w.load(Relaxed)).collect();
        RawLinks {
            connections: self.connections,
            levels: self.levels.clone(),
            layer0: words(&self.layer0),
            upper: words(&self.upper),
        }
    }

    /// Ends the build: the per-node locks are dropped, reads no longer take them.
    pub fn freeze(&mut self) {
        self.locks = Vec::new();
    }

    /// Nodes.
    pub fn len(&self) -> usize {
        self.levels.len()
    }

    /// The top layer `node` reaches.
    pub fn level(&self, node: usize) -> usize {
        self.levels[node] as usize
    }

    /// The most neighbours a list on `level` holds: `2M` on layer 0, `M` above.
    pub fn capacity(&self, level: usize) -> usize {
        if level == 0 {
            2 * self.connections
        } else {
            self.connections
        }
    }

    /// The count word and the neighbour words of `node` on `level`.
    fn list(&self, node: usize, level: usize) -> (&AtomicU32, &[AtomicU32]) {
        let words = if level == 0 {
            let width = 1 + 2 * self.connections;
            &self.layer0[node * width..(node + 1) * width]
        } else {
            let width = 1 + self.connections;
            let start = self.upper_start[node] + (level - 1) * width;
            &self.upper[start..start + width]
        };
        (&words[0], &words[1..])
    }

    /// Replaces `buffer` with the neighbours of `node` on `level` (under its lock while the
    /// graph is being built).
    pub fn read(&self, node: usize, level: usize, buffer: &mut Vec<u32>) {
        let _guard = self.locks.get(node).map(lock);
        let (count, words) = self.list(node, level);
        buffer.clear();
        let count = (count.load(Relaxed) as usize).min(words.len());
        buffer.extend(words[..count].iter().map(|w| w.load(Relaxed)));
    }

    /// Sets the neighbours of `node` on `level` to `neighbours` (at most its capacity), keeping
    /// any links other insertions gave the node meanwhile: when both do not fit, `shrink` gets
    /// them all and returns the ones to keep. (Overwriting them would take in-links from the
    /// nodes that added them, and a node left with none can no longer be found.)
    pub fn write(
        &self,
        node: usize,
        level: usize,
        neighbours: &[u32],
        shrink: impl FnOnce(&mut Vec<u32>) -> Vec<u32>,
    ) {
        let _guard = self.locks.get(node).map(lock);
        let (count, words) = self.list(node, level);
        let filled = count.load(Relaxed) as usize;
        if filled == 0 {
            self.write_unlocked(node, level, neighbours);
            return;
        }
        let mut all = neighbours.to_vec();
        for word in &words[..filled] {
            let id = word.load(Relaxed);
            if !all.contains(&id) {
                all.push(id);
            }
        }
        let kept = if all.len() <= words.len() {
            all
        } else {
            shrink(&mut all)
        };
        self.write_unlocked(node, level, &kept);
    }

    fn write_unlocked(&self, node: usize, level: usize, neighbours: &[u32]) {
        let (count, words) = self.list(node, level);
        let kept = neighbours.len().min(words.len());
        for (word, &id) in words.iter().zip(&neighbours[..kept]) {
            word.store(id, Relaxed);
        }
        count.store(kept as u32, Relaxed);
    }

    /// Adds `new` to the list of `node` on `level`. When the list is full, `shrink` gets the
    /// current neighbours plus `new` and returns the ones to keep.
    pub fn add(
        &self,
        node: usize,
        level: usize,
        new: u32,
        shrink: impl FnOnce(&mut Vec<u32>) -> Vec<u32>,
    ) {
        let _guard = self.locks.get(node).map(lock);
        let (count, words) = self.list(node, level);
        let filled = count.load(Relaxed) as usize;
        if words[..filled].iter().any(|w| w.load(Relaxed) == new) {
            return;
        }
        if filled < words.len() {
            words[filled].store(new, Relaxed);
            count.store(filled as u32 + 1, Relaxed);
            return;
        }
        let mut all: Vec<u32> = words.iter().map(|w| w.load(Relaxed)).collect();
        all.push(new);
        let kept = shrink(&mut all);
        self.write_unlocked(node, level, &kept);
    }
}

/// A poisoned lock only means another insertion panicked; the words it guards are still valid.
pub fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Prefix sums of each node's upper-layer words.
fn upper_starts(connections: usize, levels: &[u8]) -> Vec<usize> {
    let mut starts = Vec::with_capacity(levels.len() + 1);
    let mut at = 0;
    starts.push(0);
    for &level in levels {
        at += level as usize * (1 + connections);
        starts.push(at);
    }
    starts
}
