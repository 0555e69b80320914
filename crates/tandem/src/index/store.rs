//! The index folder: `index.safetensors` (image and caption embeddings, caption → image ids),
//! `model.safetensors` (the checkpoint, to embed new queries) and `captions.jsonl` when the
//! dataset had caption text. Exact search by inner product on the normalised embeddings.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::data::{PairedDataset, read_captions};
use crate::error::{Error, Result};
use crate::eval::top_k;
use crate::fsio;
use crate::model::{Checkpoint, TwoBranch, load_checkpoint};

const FORMAT: &str = "tandem-index-1";
const EMBEDDINGS: &str = "index.safetensors";
const MODEL: &str = "model.safetensors";
const CAPTIONS: &str = "captions.jsonl";

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
        let images = model.embed_all(&dataset.images, &all(dataset.images.rows), true, chunk)?;
        let texts = model.embed_all(&dataset.texts, &all(dataset.texts.rows), false, chunk)?;
        Ok(Index {
            images,
            texts,
            text_to_image: dataset.text_to_image.clone(),
            captions: dataset.captions.clone(),
            dim: model.config.dim,
            model,
        })
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
        let flat = |t: &Tensor| -> Result<Vec<f32>> {
            Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
        };
        Ok(Index {
            images: flat(images)?,
            texts: flat(texts)?,
            text_to_image: ids,
            captions,
            dim,
            model: checkpoint.model,
        })
    }

    /// The `k` best matches of each query, exactly (inner product, ties to the lower id).
    ///
    /// # Shapes
    /// `queries: [n_queries * dim]`, row-major, L2-normalised.
    ///
    /// # Errors
    /// A tensor error from the product.
    pub fn search(&self, queries: &[f32], direction: Direction, k: usize) -> Result<Vec<Vec<Hit>>> {
        let gallery = match direction {
            Direction::TextToImage => &self.images,
            Direction::ImageToText => &self.texts,
        };
        let lists = top_k(gallery, queries, self.dim, k);
        Ok(lists
            .into_iter()
            .enumerate()
            .map(|(q, ids)| {
                let query = &queries[q * self.dim..(q + 1) * self.dim];
                ids.into_iter()
                    .enumerate()
                    .map(|(position, id)| {
                        let row = &gallery[id as usize * self.dim..(id as usize + 1) * self.dim];
                        let score = row.iter().zip(query).map(|(a, b)| a * b).sum();
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
