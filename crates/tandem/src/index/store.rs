//! The index folder: `index.safetensors` (image and caption embeddings, caption → image ids),
//! `model.safetensors` (the checkpoint, to embed new queries) and `captions.jsonl` when the
//! dataset had caption text. Exact search by inner product on the normalised embeddings.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::data::{PairedDataset, read_captions};
use crate::error::{Error, Result};
use crate::eval::{GALLERY_GROUP, Packed, dot, top_k_in};
use crate::fsio;
use crate::model::{Checkpoint, TwoBranch, load_checkpoint};

use super::ann::{GraphDigest, HnswGraph, HnswParams};

const FORMAT: &str = "tandem-index-1";
/// The file whose presence makes a folder an index.
pub const EMBEDDINGS: &str = "index.safetensors";
const MODEL: &str = "model.safetensors";
const CAPTIONS: &str = "captions.jsonl";
const HNSW: &str = "hnsw.json";
/// In a dataset folder and an index folder: one image file path per line, line i for image i
/// (relative to the dataset folder, or absolute); the index stores them absolute.
pub const IMAGE_FILES: &str = "image_files.txt";
/// Graph names, by gallery: images (text→image queries), captions (image→text).
const GRAPHS: [&str; 2] = ["images", "captions"];
/// Queries sampled to measure a graph's recall against exact search.
const RECALL_QUERIES: usize = 1000;
/// The k of the recall measurement.
const RECALL_K: usize = 10;

/// Which way a query goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// A caption (or text features) against the images.
    TextToImage,
    /// An image against the captions.
    ImageToText,
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    /// 1-based position.
    pub rank: usize,
    /// Inner product with the query (cosine: both are L2-normalised).
    pub score: f32,
    /// Image index (text→image) or caption index (image→text).
    pub id: u32,
    /// For a caption hit, its image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<u32>,
    /// A caption hit's text, or for an image hit its first caption, when the index has text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// Exact (every gallery row scored) or approximate (the HNSW graph, `ef` candidates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchMode {
    /// Tiled inner product over the whole gallery.
    Exact,
    /// The index's HNSW graph with this candidate list (at least `k`).
    Approximate {
        /// Candidate list size.
        ef: usize,
    },
}

/// How well one gallery's graph finds the exact top 10, measured when it was built.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GraphRecall {
    /// Gallery rows.
    pub rows: usize,
    /// Queries sampled (evenly spaced rows of the other modality).
    pub queries: usize,
    /// Mean fraction of the exact top 10 that the graph returned, at `ef`.
    pub recall_at_10: f64,
    /// The `ef` measured.
    pub ef: usize,
    /// Queries/s of the graph, one query at a time on every core.
    pub approximate_queries_per_s: f64,
    /// Queries/s of exact search, one query at a time on every core.
    pub exact_queries_per_s: f64,
    /// Seconds the graph took to build.
    pub build_seconds: f64,
}

/// The approximate half of an index: one graph per gallery and what they measured.
pub struct Approximate {
    /// Build and search parameters.
    pub params: HnswParams,
    /// `[images, captions]`.
    graphs: [HnswGraph; 2],
    /// `[images, captions]`, measured at build.
    pub recall: [GraphRecall; 2],
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HnswRecord {
    params: HnswParams,
    images: GraphRecall,
    captions: GraphRecall,
    image_files: GraphDigest,
    caption_files: GraphDigest,
}

/// Embeddings of a whole dataset under one model, ready to search.
pub struct Index {
    /// `[n_images * dim]`, row-major, L2-normalised.
    pub images: Vec<f32>,
    /// `[n_texts * dim]`, row-major, L2-normalised.
    pub texts: Vec<f32>,
    /// Image of each caption.
    pub text_to_image: Vec<u32>,
    /// Caption text, when the dataset had it.
    pub captions: Option<Vec<String>>,
    /// Embedding width.
    pub dim: usize,
    /// The model, to embed feature queries.
    pub model: TwoBranch,
    /// Each gallery packed for the tiled kernel, on its first search (then shared by every
    /// request of a server instead of repacked per query).
    packed: [OnceLock<Packed<GALLERY_GROUP>>; 2],
    /// HNSW graphs, when the index was built with them.
    pub approximate: Option<Approximate>,
    /// Image file of each image, when the dataset listed them (the files stay where they are).
    pub image_files: Option<Vec<PathBuf>>,
}

impl Index {
    /// Embeds every image and caption of `dataset` with the checkpoint's model.
    ///
    /// # Errors
    /// [`Error::Config`] when the dataset's feature dimensions do not fit the model.
    pub fn build(checkpoint: &Checkpoint, dataset: &PairedDataset) -> Result<Self> {
        let mut model = checkpoint.model.clone();
        let chunk = checkpoint.config.train.eval_batch_size;
        let all = |n: usize| (0..n as u32).collect::<Vec<u32>>();
        let images = model.embed_all(&dataset.images, &all(dataset.images.rows()), true, chunk)?;
        let texts = model.embed_all(&dataset.texts, &all(dataset.texts.rows()), false, chunk)?;
        Ok(Index::from_embeddings(
            images,
            texts,
            dataset.text_to_image.clone(),
            dataset.captions.clone(),
            model,
        ))
    }

    /// An index over embeddings made elsewhere (e.g. synthetic ones for a benchmark), exact
    /// search only until [`Index::build_approximate`].
    ///
    /// # Shapes
    /// `images: [n_images * dim]`, `texts: [n_texts * dim]` with `dim = model.config.dim`,
    /// `text_to_image: [n_texts]`, `captions: [n_texts]`.
    pub fn from_embeddings(
        images: Vec<f32>,
        texts: Vec<f32>,
        text_to_image: Vec<u32>,
        captions: Option<Vec<String>>,
        model: TwoBranch,
    ) -> Self {
        Index {
            images,
            texts,
            text_to_image,
            captions,
            dim: model.config.dim,
            model,
            packed: Default::default(),
            approximate: None,
            image_files: None,
        }
    }

    /// Reads `DATA/image_files.txt` when the dataset folder has one, so that search results
    /// can show the images.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] naming the file when it is unreadable or its line count is not
    /// the number of images.
    pub fn attach_image_files(&mut self, data_dir: &Path) -> Result<()> {
        let path = data_dir.join(IMAGE_FILES);
        if !path.exists() {
            return Ok(());
        }
        let text = String::from_utf8(fsio::read(&path)?).map_err(|e| Error::Checkpoint {
            path: path.clone(),
            problem: format!("not UTF-8 text ({e})"),
        })?;
        let base = std::path::absolute(data_dir).map_err(|e| Error::io(data_dir, e))?;
        let files: Vec<PathBuf> = text.lines().map(|line| base.join(line.trim())).collect();
        if files.len() != self.n_images() {
            return Err(Error::Checkpoint {
                path,
                problem: format!(
                    "{} lines, but the dataset has {} images; write one image file per line, line i for image i",
                    files.len(),
                    self.n_images()
                ),
            });
        }
        self.image_files = Some(files);
        Ok(())
    }

    /// Builds an HNSW graph over each gallery and measures its recall@10 against exact search
    /// on up to 1000 queries from the other modality. `progress(done, total)` counts inserted
    /// rows over both graphs.
    ///
    /// # Errors
    /// [`Error::Config`] for parameters out of range.
    pub fn build_approximate(
        &mut self,
        params: HnswParams,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<()> {
        params.validate()?;
        let total = self.n_images() + self.n_texts();
        let mut graphs = Vec::new();
        let mut recall = Vec::new();
        let mut done = 0;
        for direction in [Direction::TextToImage, Direction::ImageToText] {
            let started = Instant::now();
            let (rows, _) = self.gallery(direction);
            let graph = HnswGraph::build(rows, self.dim, params, |n| progress(done + n, total));
            let build_seconds = started.elapsed().as_secs_f64();
            done += graph.len();
            let mut measured = self.measure_recall(direction, &graph, params.ef_search);
            measured.build_seconds = build_seconds;
            graphs.push(graph);
            recall.push(measured);
        }
        let [images, captions]: [HnswGraph; 2] = graphs.try_into().ok().expect("two graphs");
        self.approximate = Some(Approximate {
            params,
            graphs: [images, captions],
            recall: [recall[0], recall[1]],
        });
        Ok(())
    }

    /// Recall@10 of `graph` (the gallery of `direction`) against exact search, and both
    /// searches' speed one query at a time on every core.
    fn measure_recall(&self, direction: Direction, graph: &HnswGraph, ef: usize) -> GraphRecall {
        let (queries, count) = match direction {
            Direction::TextToImage => (&self.texts, self.n_texts()),
            Direction::ImageToText => (&self.images, self.n_images()),
        };
        let sample: Vec<usize> = if count <= RECALL_QUERIES {
            (0..count).collect()
        } else {
            (0..RECALL_QUERIES)
                .map(|i| i * count / RECALL_QUERIES)
                .collect()
        };
        let dim = self.dim;
        let row = |q: usize| &queries[q * dim..(q + 1) * dim];
        let (_, packed) = self.gallery(direction);
        let (exact, exact_seconds) = one_at_a_time(&sample, |q| {
            crate::eval::top_k_in(packed, row(q), RECALL_K).remove(0)
        });
        let (gallery, _) = self.gallery(direction);
        let (found, approximate_seconds) = one_at_a_time(&sample, |q| {
            graph
                .search(gallery, row(q), RECALL_K, ef)
                .into_iter()
                .map(|(_, id)| id)
                .collect()
        });
        let hits: usize = exact
            .iter()
            .zip(&found)
            .map(|(e, f)| f.iter().filter(|id| e.contains(id)).count())
            .sum();
        let wanted: usize = exact.iter().map(Vec::len).sum();
        let per_s = |seconds: f64| sample.len() as f64 / seconds.max(1e-9);
        GraphRecall {
            rows: graph.len(),
            queries: sample.len(),
            recall_at_10: if wanted == 0 {
                1.0
            } else {
                hits as f64 / wanted as f64
            },
            ef,
            approximate_queries_per_s: per_s(approximate_seconds),
            exact_queries_per_s: per_s(exact_seconds),
            build_seconds: 0.0,
        }
    }

    /// Image count.
    pub fn n_images(&self) -> usize {
        self.images.len() / self.dim
    }

    /// Caption count.
    pub fn n_texts(&self) -> usize {
        self.text_to_image.len()
    }

    /// Writes the index folder (each file atomically) with the checkpoint at `checkpoint_path`.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file.
    pub fn save(&self, dir: &Path, checkpoint_path: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let tensors = [
            (
                "images",
                Tensor::from_slice(&self.images, (self.n_images(), self.dim), &Device::Cpu)?,
            ),
            (
                "texts",
                Tensor::from_slice(&self.texts, (self.n_texts(), self.dim), &Device::Cpu)?,
            ),
            (
                "text_to_image",
                Tensor::from_slice(&self.text_to_image, self.n_texts(), &Device::Cpu)?,
            ),
        ];
        let meta = HashMap::from([("format".to_string(), FORMAT.to_string())]);
        let path = dir.join(EMBEDDINGS);
        let bytes = safetensors::serialize(tensors, Some(meta)).map_err(|e| Error::Checkpoint {
            path: path.clone(),
            problem: e.to_string(),
        })?;
        fsio::write_atomic(&path, &bytes)?;
        fsio::write_atomic(&dir.join(MODEL), &fsio::read(checkpoint_path)?)?;
        if let Some(captions) = &self.captions {
            let lines: String = captions
                .iter()
                .zip(&self.text_to_image)
                .map(|(text, image)| {
                    format!("{}\n", serde_json::json!({"image": image, "text": text}))
                })
                .collect();
            fsio::write_atomic(&dir.join(CAPTIONS), lines.as_bytes())?;
        }
        let files_path = dir.join(IMAGE_FILES);
        match &self.image_files {
            Some(files) => {
                let lines: String = files.iter().map(|f| format!("{}\n", f.display())).collect();
                fsio::write_atomic(&files_path, lines.as_bytes())?;
            }
            None if files_path.exists() => {
                std::fs::remove_file(&files_path).map_err(|e| Error::io(&files_path, e))?;
            }
            None => {}
        }
        let record_path = dir.join(HNSW);
        match &self.approximate {
            Some(approximate) => {
                let image_files = approximate.graphs[0].save(dir, GRAPHS[0])?;
                let caption_files = approximate.graphs[1].save(dir, GRAPHS[1])?;
                // Written last: its presence says both graphs are complete.
                let record = HnswRecord {
                    params: approximate.params,
                    images: approximate.recall[0],
                    captions: approximate.recall[1],
                    image_files,
                    caption_files,
                };
                let json = serde_json::to_string_pretty(&record).expect("plain data");
                fsio::write_atomic(&record_path, json.as_bytes())?;
            }
            None if record_path.exists() => {
                // A graph of an earlier index in this folder must not be searched.
                std::fs::remove_file(&record_path).map_err(|e| Error::io(&record_path, e))?;
            }
            None => {}
        }
        Ok(())
    }

    /// Opens an index folder written by [`Index::save`].
    ///
    /// # Errors
    /// [`Error::Checkpoint`] naming the file for a folder that is not an index or whose parts
    /// disagree.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(EMBEDDINGS);
        let bad = |problem: String| Error::Checkpoint {
            path: path.clone(),
            problem,
        };
        if !path.exists() {
            return Err(bad(
                "no index here; build one with `tandem index build --model RUN --data DIR --out INDEX`"
                    .into(),
            ));
        }
        let bytes = fsio::read(&path)?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
        let format = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("format").cloned());
        if format.as_deref() != Some(FORMAT) {
            return Err(bad("not a tandem index (no index metadata)".into()));
        }
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .map_err(|e| bad(format!("unreadable tensors: {e}")))?;
        let get = |name: &str| {
            tensors
                .get(name)
                .ok_or_else(|| bad(format!("tensor `{name}` is missing")))
        };
        let images = get("images")?;
        let texts = get("texts")?;
        let ids: Vec<u32> = get("text_to_image")?.to_dtype(DType::U32)?.to_vec1()?;
        let (n_images, dim) = images.dims2()?;
        if texts.dims2()? != (ids.len(), dim) || ids.iter().any(|&i| i as usize >= n_images) {
            return Err(bad("embeddings and ids disagree in shape".into()));
        }
        let checkpoint = load_checkpoint(&dir.join(MODEL), &Device::Cpu)?;
        if checkpoint.model.config.dim != dim {
            return Err(bad(format!(
                "the model embeds into {} dimensions, the index holds {dim}",
                checkpoint.model.config.dim
            )));
        }
        let captions_path = dir.join(CAPTIONS);
        let captions = if captions_path.exists() {
            Some(read_captions(&captions_path, &ids)?)
        } else {
            None
        };
        let files_path = dir.join(IMAGE_FILES);
        let image_files = if files_path.exists() {
            let text = String::from_utf8_lossy(&fsio::read(&files_path)?).into_owned();
            let files: Vec<PathBuf> = text.lines().map(PathBuf::from).collect();
            if files.len() != n_images {
                return Err(Error::Checkpoint {
                    path: files_path,
                    problem: format!(
                        "{} lines for {n_images} images; rebuild the index",
                        files.len()
                    ),
                });
            }
            Some(files)
        } else {
            None
        };
        let record_path = dir.join(HNSW);
        let approximate = if record_path.exists() {
            let bytes = fsio::read(&record_path)?;
            let record: HnswRecord =
                serde_json::from_slice(&bytes).map_err(|e| {
                    // The record of graphs saved by hnsw_rs named two files per graph.
                    let hnsw_rs = String::from_utf8_lossy(&bytes).contains("\"graph_sha256\"");
                    Error::Checkpoint {
                        path: record_path.clone(),
                        problem: if hnsw_rs {
                            "its HNSW graphs were written by an earlier tandem (hnsw_rs files), which this one does not read; rebuild the index with `tandem index build ... --hnsw`".into()
                        } else {
                            format!("not an HNSW record ({e}); rebuild the index")
                        },
                    }
                })?;
            Some(record)
        } else {
            None
        };
        let flat = |t: &Tensor| -> Result<Vec<f32>> {
            Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
        };
        let (images, texts) = (flat(images)?, flat(texts)?);
        let approximate = match approximate {
            Some(record) => Some(Approximate {
                params: record.params,
                graphs: [
                    HnswGraph::open(dir, GRAPHS[0], &images, dim, &record.image_files)?,
                    HnswGraph::open(dir, GRAPHS[1], &texts, dim, &record.caption_files)?,
                ],
                recall: [record.images, record.captions],
            }),
            None => None,
        };
        Ok(Index {
            images,
            texts,
            text_to_image: ids,
            captions,
            dim,
            model: checkpoint.model,
            packed: Default::default(),
            approximate,
            image_files,
        })
    }

    /// The gallery a query in `direction` searches, row-major and packed.
    fn gallery(&self, direction: Direction) -> (&[f32], &Packed<GALLERY_GROUP>) {
        let (rows, slot) = match direction {
            Direction::TextToImage => (&self.images, &self.packed[0]),
            Direction::ImageToText => (&self.texts, &self.packed[1]),
        };
        (rows, slot.get_or_init(|| Packed::pack(rows, self.dim)))
    }

    /// Approximate with the built `ef` when the index has graphs, else exact.
    pub fn default_mode(&self) -> SearchMode {
        match &self.approximate {
            Some(a) => SearchMode::Approximate {
                ef: a.params.ef_search,
            },
            None => SearchMode::Exact,
        }
    }

    /// The `k` best matches of each query by inner product, best first, ties to the lower id:
    /// exactly, or through the HNSW graph.
    ///
    /// # Shapes
    /// `queries: [n_queries * dim]`, row-major, L2-normalised.
    ///
    /// # Errors
    /// [`Error::Config`] when approximate search is asked of an index without graphs.
    pub fn search(
        &self,
        queries: &[f32],
        direction: Direction,
        k: usize,
        mode: SearchMode,
    ) -> Result<Vec<Vec<Hit>>> {
        let (gallery, packed) = self.gallery(direction);
        let lists = match mode {
            SearchMode::Exact => top_k_in(packed, queries, k),
            SearchMode::Approximate { ef } => {
                let Some(approximate) = &self.approximate else {
                    return Err(Error::Config(
                        "this index has no HNSW graph: search it exactly, or rebuild it with `tandem index build ... --hnsw`".into(),
                    ));
                };
                let graph = match direction {
                    Direction::TextToImage => &approximate.graphs[0],
                    Direction::ImageToText => &approximate.graphs[1],
                };
                queries
                    .chunks_exact(self.dim)
                    .map(|q| {
                        graph
                            .search(gallery, q, k, ef)
                            .into_iter()
                            .map(|(_, id)| id)
                            .collect()
                    })
                    .collect()
            }
        };
        Ok(lists
            .into_iter()
            .enumerate()
            .map(|(q, ids)| {
                let query = &queries[q * self.dim..(q + 1) * self.dim];
                ids.into_iter()
                    .enumerate()
                    .map(|(position, id)| {
                        let row = &gallery[id as usize * self.dim..(id as usize + 1) * self.dim];
                        // The kernel's own score, so the listed order is the score order.
                        let score = dot(row, query);
                        let (image, text) = match direction {
                            Direction::TextToImage => (None, self.first_caption(id)),
                            Direction::ImageToText => (
                                Some(self.text_to_image[id as usize]),
                                self.captions.as_ref().map(|c| c[id as usize].clone()),
                            ),
                        };
                        Hit {
                            rank: position + 1,
                            score,
                            id,
                            image,
                            text,
                        }
                    })
                    .collect()
            })
            .collect())
    }

    fn first_caption(&self, image: u32) -> Option<String> {
        let captions = self.captions.as_ref()?;
        let t = self.text_to_image.iter().position(|&i| i == image)?;
        Some(captions[t].clone())
    }

    /// The stored embedding of caption or image `id` as a query.
    ///
    /// # Errors
    /// [`Error::Config`] when `id` is out of range.
    pub fn embedding_of(&self, direction: Direction, id: usize) -> Result<Vec<f32>> {
        let (rows, count, what) = match direction {
            Direction::TextToImage => (&self.texts, self.n_texts(), "caption"),
            Direction::ImageToText => (&self.images, self.n_images(), "image"),
        };
        if id >= count {
            return Err(Error::Config(format!(
                "{what} {id} is out of range: the index has {count} {what}s (0..{})",
                count.saturating_sub(1)
            )));
        }
        Ok(rows[id * self.dim..(id + 1) * self.dim].to_vec())
    }
}

/// `search(q)` for every query, on every core (queries split in contiguous runs), with the
/// wall time: a server answers one request at a time per core, so this is its throughput.
fn one_at_a_time(
    queries: &[usize],
    search: impl Fn(usize) -> Vec<u32> + Sync,
) -> (Vec<Vec<u32>>, f64) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let run = queries.len().div_ceil(threads).max(1);
    let started = Instant::now();
    let search = &search;
    let lists = std::thread::scope(|scope| {
        let handles: Vec<_> = queries
            .chunks(run)
            .map(|part| scope.spawn(move || part.iter().map(|&q| search(q)).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a search thread panicked"))
            .collect()
    });
    (lists, started.elapsed().as_secs_f64())
}
