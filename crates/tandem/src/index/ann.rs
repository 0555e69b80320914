//! Approximate search for large galleries: a hierarchical navigable small-world graph (HNSW,
//! Malkov & Yashunin 2018), tandem's own (`index::hnsw`), built on every core and saved as one
//! safetensors file of links beside the index's rows.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::hnsw::{self, Graph, Rows};
use crate::error::{Error, Result};
use crate::fsio;

/// How the graph is built and searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HnswParams {
    /// Links per node and layer (`M`); more links, better recall, slower build.
    pub connections: usize,
    /// Candidate list while inserting (`efConstruction`).
    pub ef_construction: usize,
    /// Candidate list while searching (`ef`), the default; raised to `k` when `k` is larger.
    pub ef_search: usize,
}

impl Default for HnswParams {
    /// `M` 24, `efConstruction` 100, `ef` 100: recall@10 0.96–0.99 on 100k × 512 synthetic
    /// embeddings (`bench/hnsw_pick`); hnswlib's own defaults are 16 / 200 / 10.
    fn default() -> Self {
        HnswParams {
            connections: 24,
            ef_construction: 100,
            ef_search: 100,
        }
    }
}

impl HnswParams {
    /// # Errors
    /// [`Error::Config`] naming the parameter out of range.
    pub fn validate(&self) -> Result<()> {
        if !(2..=256).contains(&self.connections) {
            return Err(Error::Config(format!(
                "hnsw connections = {} is invalid: it must be between 2 and 256 (16–48 is usual)",
                self.connections
            )));
        }
        for (name, value) in [
            ("ef_construction", self.ef_construction),
            ("ef_search", self.ef_search),
        ] {
            if value == 0 {
                return Err(Error::Config(format!(
                    "hnsw {name} = 0 is invalid: it must be at least 1 (50–400 is usual)"
                )));
            }
        }
        Ok(())
    }
}

/// Seed of the nodes' layer draw: a gallery always gets the same layers.
const LEVEL_SEED: u64 = 0x48_4e_53_57;

/// SHA-256 of a saved graph's file, checked before it is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphDigest {
    /// Of `NAME.hnsw.safetensors`.
    pub sha256: String,
}

/// An HNSW graph over one gallery's rows.
pub struct HnswGraph {
    graph: Graph,
    dim: usize,
}

impl HnswGraph {
    /// Inserts every row (in parallel batches), calling `progress(inserted)` after each batch.
    ///
    /// # Shapes
    /// `rows: [n * dim]`, row-major, L2-normalised.
    pub fn build(
        rows: &[f32],
        dim: usize,
        params: HnswParams,
        progress: impl FnMut(usize),
    ) -> Self {
        let graph = Graph::build(
            Rows { data: rows, dim },
            params.connections,
            params.ef_construction,
            LEVEL_SEED,
            progress,
        );
        HnswGraph { graph, dim }
    }

    /// Rows in the graph.
    pub fn len(&self) -> usize {
        self.graph.len()
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.graph.len() == 0
    }

    /// The (approximately) `k` nearest rows of `query`, searching `ef` candidates (at least
    /// `k`), best first by [`crate::eval::dot`] with `rows` (the gallery the graph was built
    /// on), ties to the lower id, as the exact search orders them.
    ///
    /// # Shapes
    /// `query: [dim]`, `rows: [len * dim]`.
    pub fn search(&self, rows: &[f32], query: &[f32], k: usize, ef: usize) -> Vec<(f32, u32)> {
        let rows = Rows {
            data: rows,
            dim: self.dim,
        };
        self.graph
            .search(rows, query, k, ef)
            .into_iter()
            .map(|s| (s.score, s.id))
            .collect()
    }

    /// Writes `NAME.hnsw.safetensors` into `dir` atomically.
    ///
    /// Returns the file's digest, for [`HnswGraph::open`].
    ///
    /// # Errors
    /// [`Error::Io`] naming the file.
    pub fn save(&self, dir: &Path, name: &str) -> Result<GraphDigest> {
        let bytes = hnsw::write(&self.graph);
        fsio::write_atomic(&graph_file(dir, name), &bytes)?;
        Ok(GraphDigest {
            sha256: hex_sha256(&bytes),
        })
    }

    /// Reloads a graph written by [`HnswGraph::save`] over the gallery `rows` (row-major, `dim`
    /// wide), after checking its file against `digest`.
    ///
    /// # Shapes
    /// `rows: [n * dim]`.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] naming the file when it is missing, changed since it was saved,
    /// unreadable, or of another size.
    pub fn open(
        dir: &Path,
        name: &str,
        rows: &[f32],
        dim: usize,
        digest: &GraphDigest,
    ) -> Result<Self> {
        let file = graph_file(dir, name);
        let refuse = |problem: String| Error::Checkpoint {
            path: file.clone(),
            problem: format!("{problem}; rebuild the index with `tandem index build ... --hnsw`"),
        };
        if !file.exists() {
            return Err(refuse("the HNSW graph file is missing".into()));
        }
        let bytes = fsio::read(&file)?;
        if hex_sha256(&bytes) != digest.sha256 {
            return Err(refuse(
                "the HNSW graph file changed since the index was built (truncated or overwritten)"
                    .into(),
            ));
        }
        let graph = hnsw::read(&bytes, Rows { data: rows, dim })
            .map_err(|e| refuse(format!("unreadable HNSW graph: {e}")))?;
        Ok(HnswGraph { graph, dim })
    }

    /// Row width.
    pub fn dim(&self) -> usize {
        self.dim
    }
}

/// The digest [`GraphDigest`] records, of a graph file's bytes already in memory.
fn hex_sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// The file of graph `name` in `dir`.
fn graph_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.hnsw.safetensors"))
}
