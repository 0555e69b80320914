//! Approximate search for large galleries: a hierarchical navigable small-world graph (HNSW,
//! Malkov & Yashunin 2018) from the `hnsw_rs` crate, with tandem's own inner-product kernel as
//! its distance. Picked over `instant-distance` by measurement (see `bench/hnsw_pick`): similar
//! recall and speed, but its search breadth `ef` is chosen per query rather than frozen at
//! build time, and it saves and reloads its graph.

use std::path::{Path, PathBuf};

use hnsw_rs::prelude::{AnnT, Distance, Hnsw, HnswIo};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::eval::dot;
use crate::fsio;

/// `1 − a·b`: on unit vectors, ordering by it is ordering by cosine.
#[derive(Debug, Default, Clone, Copy)]
pub struct InnerProductDistance;

impl Distance<f32> for InnerProductDistance {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        1.0 - parallel_dot(a, b)
    }
}

/// `a·b` summed in 16 independent lanes. [`dot`] is one chain of fused multiply-adds so that
/// the exact search is reproducible bit for bit, which makes it latency-bound (~4 cycles a
/// coordinate); the graph walk evaluates millions of distances and only needs them close, so
/// it gets the vectorised sum. The hits it returns are scored again with [`dot`].
#[multiversion::multiversion(targets("x86_64+avx2+fma", "aarch64+neon"))]
fn parallel_dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0f32; LANES];
    let (a_chunks, a_rest) = a.as_chunks::<LANES>();
    let (b_chunks, b_rest) = b.as_chunks::<LANES>();
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for l in 0..LANES {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
    let tail: f32 = a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

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

type Graph<'a> = Hnsw<'a, f32, InnerProductDistance>;

self_cell::self_cell!(
    /// A graph reloaded from disk borrows from its reader.
    struct Reloaded {
        owner: HnswIo,
        #[not_covariant]
        dependent: Graph,
    }
);

enum Built {
    InMemory(Box<Graph<'static>>),
    Reloaded(Reloaded),
}

/// SHA-256 of a saved graph's two files: `hnsw_rs` trusts its files (a truncated one makes it
/// panic), so they are checked before it reads them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphDigest {
    /// Of `NAME.hnsw.graph`.
    pub graph_sha256: String,
    /// Of `NAME.hnsw.data`.
    pub data_sha256: String,
}

/// An HNSW graph over one gallery's rows.
pub struct HnswGraph {
    graph: Built,
    dim: usize,
    rows: usize,
}

/// Rows inserted per batch; between batches the caller hears the progress.
const INSERT_BATCH: usize = 8192;

impl HnswGraph {
    /// Inserts every row (in parallel batches), calling `progress(inserted)` after each batch.
    ///
    /// # Shapes
    /// `rows: [n * dim]`, row-major, L2-normalised.
    pub fn build(
        rows: &[f32],
        dim: usize,
        params: HnswParams,
        mut progress: impl FnMut(usize),
    ) -> Self {
        let n = rows.len() / dim;
        let graph = Graph::new(
            params.connections,
            n,
            // hnsw_rs saves only graphs of its maximum 16 layers (fewer are used when the
            // level draw stops earlier).
            16,
            params.ef_construction,
            InnerProductDistance,
        );
        for start in (0..n).step_by(INSERT_BATCH) {
            let end = (start + INSERT_BATCH).min(n);
            let batch: Vec<(&[f32], usize)> = (start..end)
                .map(|i| (&rows[i * dim..(i + 1) * dim], i))
                .collect();
            graph.parallel_insert_slice(&batch);
            progress(end);
        }
        HnswGraph {
            graph: Built::InMemory(Box::new(graph)),
            dim,
            rows: n,
        }
    }

    /// Rows in the graph.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The (approximately) `k` nearest rows of `query`, searching `ef` candidates (at least
    /// `k`), best first by [`dot`] with `rows` (the gallery the graph was built on), ties to
    /// the lower id, as the exact search orders them.
    ///
    /// # Shapes
    /// `query: [dim]`, `rows: [len * dim]`.
    pub fn search(&self, rows: &[f32], query: &[f32], k: usize, ef: usize) -> Vec<(f32, u32)> {
        let run = |graph: &Graph<'_>| graph.search(query, k, ef.max(k));
        let found = match &self.graph {
            Built::InMemory(graph) => run(graph),
            Built::Reloaded(reloaded) => reloaded.with_dependent(|_, graph| run(graph)),
        };
        let dim = self.dim;
        let mut hits: Vec<(f32, u32)> = found
            .into_iter()
            .map(|n| {
                (
                    dot(&rows[n.d_id * dim..(n.d_id + 1) * dim], query),
                    n.d_id as u32,
                )
            })
            .collect();
        hits.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        hits.truncate(k);
        hits
    }

    /// Writes `NAME.hnsw.graph` and `NAME.hnsw.data` into `dir`, through a scratch folder
    /// inside it and a rename each, so a killed save leaves no half-written graph.
    ///
    /// Returns the files' digests, for [`HnswGraph::open`].
    ///
    /// # Errors
    /// [`Error::Io`] naming the folder or file.
    pub fn save(&self, dir: &Path, name: &str) -> Result<GraphDigest> {
        let scratch = dir.join(format!(".{name}.partial"));
        std::fs::create_dir_all(&scratch).map_err(|e| Error::io(&scratch, e))?;
        let dump = |graph: &Graph<'_>| graph.file_dump(&scratch, name);
        let dumped = match &self.graph {
            Built::InMemory(graph) => dump(graph),
            Built::Reloaded(reloaded) => reloaded.with_dependent(|_, graph| dump(graph)),
        };
        let written = dumped.map_err(|e| Error::Checkpoint {
            path: scratch.clone(),
            problem: format!("writing the HNSW graph failed: {e}"),
        })?;
        if written != name {
            return Err(Error::Checkpoint {
                path: scratch.clone(),
                problem: format!("the HNSW graph was written as `{written}`, not `{name}`"),
            });
        }
        for file in graph_files(dir, name) {
            let from = scratch.join(file.file_name().expect("a file name"));
            std::fs::rename(&from, &file).map_err(|e| Error::io(&file, e))?;
        }
        std::fs::remove_dir(&scratch).map_err(|e| Error::io(&scratch, e))?;
        let [graph_file, data_file] = graph_files(dir, name);
        Ok(GraphDigest {
            graph_sha256: fsio::sha256(&graph_file)?,
            data_sha256: fsio::sha256(&data_file)?,
        })
    }

    /// Reloads a graph written by [`HnswGraph::save`] over rows of width `dim`, after checking
    /// its files against `digest`.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] naming the file when it is missing, changed since it was saved,
    /// unreadable, or of another width or size.
    pub fn open(
        dir: &Path,
        name: &str,
        dim: usize,
        rows: usize,
        digest: &GraphDigest,
    ) -> Result<Self> {
        let [graph_file, data_file] = graph_files(dir, name);
        for (file, expected) in [
            (&graph_file, &digest.graph_sha256),
            (&data_file, &digest.data_sha256),
        ] {
            let problem = if !file.exists() {
                "the HNSW graph file is missing"
            } else if &fsio::sha256(file)? != expected {
                "the HNSW graph file changed since the index was built (truncated or overwritten)"
            } else {
                continue;
            };
            return Err(Error::Checkpoint {
                path: file.clone(),
                problem: format!(
                    "{problem}; rebuild the index with `tandem index build ... --hnsw`"
                ),
            });
        }
        let reader = HnswIo::new(dir, name);
        let reloaded = Reloaded::try_new(reader, |reader| {
            reader.load_hnsw_with_dist(InnerProductDistance)
        })
        .map_err(|e| Error::Checkpoint {
            path: graph_file.clone(),
            problem: format!("unreadable HNSW graph: {e}"),
        })?;
        let (found_rows, found_dim) = reloaded.with_dependent(|_, graph| {
            (
                graph.get_nb_point(),
                graph.get_point_indexation().get_data_dimension(),
            )
        });
        if (found_rows, found_dim) != (rows, dim) {
            return Err(Error::Checkpoint {
                path: graph_file,
                problem: format!(
                    "the HNSW graph holds {found_rows} rows of width {found_dim}, the index {rows} of width {dim}; rebuild the index"
                ),
            });
        }
        Ok(HnswGraph {
            graph: Built::Reloaded(reloaded),
            dim,
            rows,
        })
    }

    /// Row width.
    pub fn dim(&self) -> usize {
        self.dim
    }
}

/// The two files of graph `name` in `dir`.
fn graph_files(dir: &Path, name: &str) -> [PathBuf; 2] {
    [
        dir.join(format!("{name}.hnsw.graph")),
        dir.join(format!("{name}.hnsw.data")),
    ]
}
