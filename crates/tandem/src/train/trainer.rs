//! The training loop.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;

use candle_core::{Device, Tensor, Var};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::data::{Batcher, PairedDataset, SplitView, Splits};
use crate::error::{Error, Result};
use crate::eval::{Protocol, RetrievalMetrics, ranks_from_embeddings};
use crate::fsio;
use crate::loss::{Embedded, Memory, Objective, Temperature};
use crate::model::{Backward, Checkpoint, TwoBranch, load_checkpoint, save_checkpoint};
use crate::train::RunFiles;
use crate::train::on_pool::on_pool;
use crate::train::{
    EarlyStopping, EpochReport, Health, LrSchedule, Observer, Optimizer, StepReport,
};

/// What a finished run achieved.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// 1-based epoch of the best checkpoint.
    pub best_epoch: usize,
    /// Its validation metrics, when there is a validation split.
    pub best_val: Option<RetrievalMetrics>,
    /// Epochs run.
    pub epochs_run: usize,
    /// Optimisation steps taken.
    pub steps: usize,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// Whether the observer ended the run before `train.epochs` (a pause: the run resumes).
    pub paused: bool,
    /// Batches skipped for a non-finite loss or gradient (`train.skip_nonfinite`).
    pub skipped_batches: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// The split used.
    pub splits: Splits,
}

/// The splits to use: the dataset's `splits.json`, else the run folder's, else a seeded random
/// split of the sizes in `config.data`.
///
/// # Errors
/// [`Error::BadDataset`] when the split is invalid for this dataset, [`Error::Config`] when the
/// sizes leave no training image.
pub fn resolve_splits(
    dataset: &PairedDataset,
    config: &Config,
    run_dir: Option<&Path>,
) -> Result<Splits> {
    if let Some(s) = &dataset.splits {
        return Ok(s.clone());
    }
    let counts = dataset.captions_per_image();
    if let Some(dir) = run_dir {
        let path = dir.join(RunFiles::SPLITS);
        if path.exists() {
            let s = Splits::read(&path)?;
            s.validate(&path, dataset.images.rows, &counts)?;
            return Ok(s);
        }
    }
    let s = Splits::random(
        dataset.images.rows,
        config.data.val_images,
        config.data.test_images,
        config.seed,
    )?;
    s.validate(&dataset.root, dataset.images.rows, &counts)?;
    Ok(s)
}

/// Embeds one split with `model` in evaluation mode and ranks it both ways.
///
/// # Errors
/// A config error when the feature dimensions do not match the model.
pub fn evaluate_split(
    model: &mut TwoBranch,
    dataset: &PairedDataset,
    view: &SplitView,
    name: &str,
    chunk: usize,
) -> Result<RetrievalMetrics> {
    evaluate_protocol(
        model,
        dataset,
        &view.images,
        name,
        Protocol::Full,
        &[],
        chunk,
    )
}

/// Evaluates one split under `protocol`: each fold of images (with all their captions) is
/// embedded and ranked on its own, and the folds' metrics are averaged.
///
/// # Errors
/// [`Error::Config`] when the split is too small for the protocol or the features do not fit
/// the model.
pub fn evaluate_protocol(
    model: &mut TwoBranch,
    dataset: &PairedDataset,
    split_images: &[u32],
    name: &str,
    protocol: Protocol,
    extra_ks: &[usize],
    chunk: usize,
) -> Result<RetrievalMetrics> {
    let mut folds = Vec::new();
    for images in protocol.folds(split_images)? {
        let view = SplitView::new(&images, &dataset.text_to_image, dataset.images.rows);
        let embedded_images = model.embed_all(&dataset.images, &view.images, true, chunk)?;
        let embedded_texts = model.embed_all(&dataset.texts, &view.texts, false, chunk)?;
        check_finite(&embedded_images, &embedded_texts, name)?;
        let ranks = ranks_from_embeddings(
            &embedded_images,
            &embedded_texts,
            model.config.dim,
            &view.text_image,
        );
        folds.push(RetrievalMetrics::from_ranks_at(name, &ranks, extra_ks));
    }
    Ok(RetrievalMetrics::mean_of_folds(protocol.name(), &folds))
}

fn check_finite(images: &[f32], texts: &[f32], name: &str) -> Result<()> {
    if images.iter().chain(texts).any(|v| !v.is_finite()) {
        return Err(Error::Config(format!(
            "the model maps some {name} features to non-finite embeddings: its weights or BatchNorm statistics are not finite, or the features hold extreme values; retrain with a lower train.lr"
        )));
    }
    Ok(())
}

/// An append-only JSON-lines log. A resumed run first cuts it back to the length it had at
/// the checkpoint, so steps after that checkpoint are not logged twice.
struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    fn create(path: PathBuf) -> Result<Self> {
        let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
        Ok(MetricsLog { path, file })
    }

    fn reopen_at(path: PathBuf, length: u64) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        file.set_len(length).map_err(|e| Error::io(&path, e))?;
        let mut log = MetricsLog { path, file };
        std::io::Seek::seek(&mut log.file, std::io::SeekFrom::End(0))
            .map_err(|e| Error::io(&log.path, e))?;
        Ok(log)
    }

    fn write(&mut self, value: serde_json::Value) -> Result<()> {
        writeln!(self.file, "{value}").map_err(|e| Error::io(&self.path, e))
    }

    /// The log's length once its lines are on disk.
    fn len(&self) -> Result<u64> {
        self.file
            .sync_data()
            .map_err(|e| Error::io(&self.path, e))?;
        Ok(self
            .file
            .metadata()
            .map_err(|e| Error::io(&self.path, e))?
            .len())
    }
}

/// Everything besides the weights that a run needs to continue exactly where it stopped; kept
/// as JSON in the metadata of `last.safetensors`, next to the optimiser and memory tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainState {
    /// Epochs completed.
    epoch: usize,
    /// Steps taken.
    step: usize,
    /// Position of the dropout RNG's stream (u128 as a decimal string: JSON numbers are f64).
    rng_word_pos: String,
    optimizer_step: u64,
    best_epoch: Option<usize>,
    best_val: Option<RetrievalMetrics>,
    early_stopping: EarlyStopping,
    collapse_reported: bool,
    /// Early stopping ended the run.
    stopped_early: bool,
    /// Batches skipped for a non-finite loss or gradient.
    #[serde(default)]
    skipped_batches: usize,
    /// Length of `metrics.jsonl` when the checkpoint was written.
    metrics_bytes: u64,
}

const TRAIN_STATE: &str = "train_state";

/// Trains a two-branch model on the training split of `dataset` and writes the run folder:
/// `config.toml`, `splits.json`, `metrics.jsonl`, `best.safetensors`, `last.safetensors`.
///
/// # Errors
/// Config, dataset and I/O errors, and [`Error::NonFinite`] when the loss diverges (the last
/// good checkpoint is left untouched).
pub fn train(
    dataset: &PairedDataset,
    config: &Config,
    run_dir: &Path,
    device: &Device,
    observer: &mut dyn Observer,
) -> Result<TrainOutcome> {
    config.validate()?;
    std::fs::create_dir_all(run_dir).map_err(|e| Error::io(run_dir, e))?;
    let splits = resolve_splits(dataset, config, None)?;
    fsio::write_atomic(
        &run_dir.join(RunFiles::SPLITS),
        serde_json::to_string(&splits)
            .expect("splits serialise")
            .as_bytes(),
    )?;
    run(dataset, config, splits, run_dir, device, observer, None)
}

/// Continues the run in `run_dir` from its `last.safetensors`: weights, optimiser state,
/// dropout RNG, cross-batch memory, temperature, epoch and step counters, best score and
/// early-stopping count, so the result equals a run that was never interrupted. `epochs`
/// extends (or shortens) the planned number of epochs; nothing else of the config may change.
///
/// # Errors
/// [`Error::Checkpoint`] when the folder has no resumable checkpoint or it does not match the
/// dataset, and every error of [`train`].
pub fn resume(
    dataset: &PairedDataset,
    run_dir: &Path,
    epochs: Option<usize>,
    device: &Device,
    observer: &mut dyn Observer,
) -> Result<TrainOutcome> {
    let path = run_dir.join(RunFiles::LAST);
    if !path.exists() {
        return Err(Error::Checkpoint {
            path,
            problem: "no checkpoint to resume from (the run never finished an epoch); start it again with --overwrite".into(),
        });
    }
    let checkpoint = load_checkpoint(&path, device)?;
    let mut config = checkpoint.config.clone();
    if let Some(e) = epochs {
        config.train.epochs = e;
    }
    config.validate()?;
    let splits = resolve_splits(dataset, &config, Some(run_dir))?;
    run(
        dataset,
        &config,
        splits,
        run_dir,
        device,
        observer,
        Some(checkpoint),
    )
}

/// The first trained tensor whose gradient has a non-finite entry, with that entry's largest
/// magnitude.
fn first_nonfinite_gradient(
    grads: &candle_core::backprop::GradStore,
    named: &[(String, Var)],
) -> Result<Option<(String, f64)>> {
    for (name, var) in named {
        if let Some(g) = grads.get(var.as_tensor()) {
            // Every step checks every gradient: on the CPU one parallel scan without
            // temporaries (the tensor version allocated |g| and made two single-threaded passes
            // over 22.7M values per step at the paper's size).
            let host = g.device().is_cpu() && g.dtype() == candle_core::DType::F32;
            let bad = if host {
                let g = g.contiguous()?;
                crate::model::gemm::with_values(&g, |v| {
                    v.par_iter()
                        .find_any(|x| !x.is_finite())
                        .map(|x| f64::from(x.abs()))
                })?
            } else {
                let peak = g
                    .abs()?
                    .max_all()?
                    .to_dtype(candle_core::DType::F64)?
                    .to_scalar::<f64>()?;
                (!peak.is_finite()).then_some(peak)
            };
            if let Some(peak) = bad {
                return Ok(Some((format!("gradient of {name}"), peak)));
            }
        }
    }
    Ok(None)
}

/// `12, 55, 1034, … (500 in all)`: enough ids to find the rows, not a wall of numbers.
fn abbreviate(ids: &[u32]) -> String {
    const SHOWN: usize = 8;
    let head: Vec<String> = ids.iter().take(SHOWN).map(u32::to_string).collect();
    if ids.len() > SHOWN {
        format!("{}, … ({} in all)", head.join(", "), ids.len())
    } else {
        head.join(", ")
    }
}

fn run(
    dataset: &PairedDataset,
    config: &Config,
    splits: Splits,
    run_dir: &Path,
    device: &Device,
    observer: &mut dyn Observer,
    resume_from: Option<Checkpoint>,
) -> Result<TrainOutcome> {
    let started = Instant::now();
    fsio::write_atomic(&run_dir.join(RunFiles::CONFIG), config.to_toml().as_bytes())?;
    let n_images = dataset.images.rows;
    let train_view = SplitView::new(&splits.train, &dataset.text_to_image, n_images);
    let val_view = SplitView::new(&splits.val, &dataset.text_to_image, n_images);
    let t = &config.train;
    let batcher = Batcher::new(&train_view, t.batch_size, config.seed)?;
    let mut model = TwoBranch::new(
        dataset.images.cols,
        dataset.texts.cols,
        &config.model,
        config.seed,
        device,
    )?;
    let temperature = Temperature::new(&config.loss, device)?;
    let mut memory = Memory::new(&config.loss.memory, config.model.dim);
    // The trained tensors by name (the names say which gradient went bad).
    let mut named: Vec<(String, Var)> = model
        .named()
        .into_iter()
        .filter_map(|(n, v, trainable)| trainable.then_some((n, v)))
        .collect();
    if config.loss.kind.uses_temperature() {
        named.extend(
            temperature
                .named()
                .into_iter()
                .filter_map(|(n, v, learnable)| learnable.then_some((n, v))),
        );
    }
    let trained: Vec<Var> = named.iter().map(|(_, v)| v.clone()).collect();
    let mut optimizer = Optimizer::new(trained, t)?;
    let mut skipped = 0usize;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(config.seed.wrapping_add(1));
    let mut step = 0;
    let mut best: Option<(usize, Option<RetrievalMetrics>)> = None;
    let mut early_stopping = EarlyStopping::new(t.patience);
    let mut collapse_reported = false;
    let mut first_epoch_to_run = 0;
    let metrics_path = run_dir.join(RunFiles::METRICS);
    let mut log = match resume_from {
        None => MetricsLog::create(metrics_path)?,
        Some(checkpoint) => {
            let path = run_dir.join(RunFiles::LAST);
            let bad = |problem: String| Error::Checkpoint {
                path: path.clone(),
                problem,
            };
            if (checkpoint.model.d_image, checkpoint.model.d_text)
                != (dataset.images.cols, dataset.texts.cols)
            {
                return Err(bad(format!(
                    "the run was trained on {}-d image and {}-d text features, the data has {} and {}; resume with the run's own dataset",
                    checkpoint.model.d_image,
                    checkpoint.model.d_text,
                    dataset.images.cols,
                    dataset.texts.cols
                )));
            }
            let state: TrainState = checkpoint
                .metadata
                .get(TRAIN_STATE)
                .and_then(|s| serde_json::from_str(s).ok())
                .ok_or_else(|| {
                    bad("no resumable training state (a best.safetensors or an older checkpoint?); resume needs last.safetensors of a run folder".into())
                })?;
            if state.stopped_early {
                return Err(Error::Config(format!(
                    "the run in {} stopped early after epoch {} (train.patience = {}); there is nothing to resume",
                    run_dir.display(),
                    state.epoch,
                    t.patience
                )));
            }
            for ((name, target, _), (_, source, _)) in
                model.named().iter().zip(checkpoint.model.named())
            {
                target
                    .set(source.as_tensor())
                    .map_err(|e| bad(format!("`{name}`: {e}")))?;
            }
            let extra = &checkpoint.extra;
            for (name, var, _) in temperature.named() {
                let value = extra
                    .get(&name)
                    .ok_or_else(|| bad(format!("tensor `{name}` is missing")))?;
                var.set(&value.to_dtype(var.dtype())?)?;
            }
            memory
                .restore(&mut |name| extra.get(name).cloned())
                .map_err(bad)?;
            optimizer
                .restore(extra, state.optimizer_step)
                .map_err(bad)?;
            let word_pos: u128 = state
                .rng_word_pos
                .parse()
                .map_err(|_| bad("train_state.rng_word_pos is not a number".into()))?;
            rng.set_word_pos(word_pos);
            step = state.step;
            best = state.best_epoch.map(|e| (e, state.best_val.clone()));
            early_stopping = state.early_stopping;
            collapse_reported = state.collapse_reported;
            first_epoch_to_run = state.epoch;
            skipped = state.skipped_batches;
            MetricsLog::reopen_at(metrics_path, state.metrics_bytes)?
        }
    };

    let steps_per_epoch = batcher.epoch(first_epoch_to_run).len();
    let schedule = LrSchedule::new(t, steps_per_epoch);
    observer.on_start(t.epochs, steps_per_epoch);
    let mut epochs_run = first_epoch_to_run;
    let mut stopped_early = false;
    let mut paused = false;
    for epoch in first_epoch_to_run..t.epochs {
        if observer.stop_requested(epoch) {
            paused = true;
            break;
        }
        let epoch_start = Instant::now();
        let batches = batcher.epoch(epoch);
        let objective = Objective::for_epoch(&config.loss, epoch);
        let mut loss_sum = 0.0;
        let mut skipped_in_epoch = 0;
        let mut lr = schedule.lr(step, epoch);
        for (k, batch) in batches.iter().enumerate() {
            lr = schedule.lr(step, epoch);
            optimizer.set_learning_rate(lr);
            step += 1;
            let b = batch.images.len();
            let images = Tensor::from_vec(
                dataset.images.gather(&batch.images),
                (b, dataset.images.cols),
                device,
            )?;
            let texts = Tensor::from_vec(
                dataset.texts.gather(&batch.texts),
                (batch.texts.len(), dataset.texts.cols),
                device,
            )?;
            // The forward pass updates BatchNorm's running statistics; a skipped batch must not
            // leave them changed.
            let running_stats: Vec<(Var, Tensor)> = if t.skip_nonfinite {
                model
                    .named()
                    .into_iter()
                    .filter(|(_, _, trainable)| !trainable)
                    .map(|(_, v, _)| {
                        let saved = v.as_tensor().copy()?;
                        Ok((v, saved))
                    })
                    .collect::<Result<_>>()?
            } else {
                Vec::new()
            };
            // Global ids, so the memory can tell images of different batches apart; the
            // sample keys are the dataset rows.
            let image_ids = &batch.images;
            let text_ids: Vec<u32> = batch
                .text_image
                .iter()
                .map(|&l| batch.images[l as usize])
                .collect();
            // Forward, loss and backward on a rayon worker (see `on_pool`).
            let (ei, et, out, health, loss, grads, failure) = on_pool(|| -> Result<_> {
                let forward = model.forward_train(&images, &texts, &mut rng, Backward::Explicit)?;
                let (ei, et) = (forward.images.clone(), forward.texts.clone());
                let out = objective.forward(
                    &Embedded::new(&ei, &et, image_ids, &text_ids)
                        .with_keys(image_ids, &batch.texts)
                        .with_memory(&memory)
                        .with_temperature(&temperature),
                )?;
                let health = Health::measure(&ei, &et, &batch.text_image)?;
                let loss = out
                    .total
                    .to_dtype(candle_core::DType::F64)?
                    .to_scalar::<f64>()?;
                let mut grads = None;
                let failure = if loss.is_finite() {
                    let g = model.backward(forward, &out.total)?;
                    let bad = first_nonfinite_gradient(&g, &named)?;
                    grads = Some(g);
                    bad
                } else {
                    Some(
                        out.terms
                            .iter()
                            .find(|(_, v, _)| !v.is_finite())
                            .map(|(n, v, _)| (format!("{n} loss"), *v))
                            .unwrap_or(("total loss".into(), loss)),
                    )
                };
                Ok((ei, et, out, health, loss, grads, failure))
            })?;
            if let Some((what, value)) = failure {
                if !t.skip_nonfinite {
                    return Err(Error::NonFinite {
                        step,
                        what,
                        value,
                        captions: abbreviate(&batch.texts),
                    });
                }
                for (var, saved) in &running_stats {
                    var.set(saved)?;
                }
                skipped += 1;
                skipped_in_epoch += 1;
                log.write(serde_json::json!({
                    "kind": "skipped", "epoch": epoch + 1, "step": step, "what": what,
                    "value": value.to_string(), "captions": batch.texts,
                }))?;
                observer.on_warning(&format!(
                    "skipped step {step}: {what} is {value} (batch captions {})",
                    abbreviate(&batch.texts)
                ));
                continue;
            }
            let grads = grads.expect("finite loss has gradients");
            on_pool(|| optimizer.step(&grads))?;
            temperature.clamp()?;
            memory.record(&ei, image_ids, image_ids, &et, &text_ids, &batch.texts)?;
            loss_sum += loss;
            let logit_scale = config
                .loss
                .kind
                .uses_temperature()
                .then(|| temperature.scale())
                .transpose()?;
            let report = StepReport {
                epoch,
                step,
                step_in_epoch: k + 1,
                steps_in_epoch: batches.len(),
                lr,
                loss,
                terms: out.terms,
                health,
                logit_scale,
            };
            let terms: serde_json::Map<String, serde_json::Value> = report
                .terms
                .iter()
                .map(|(n, v, a)| (n.clone(), serde_json::json!({"loss": v, "active": a})))
                .collect();
            log.write(serde_json::json!({
                "kind": "step", "epoch": epoch + 1, "step": step, "lr": lr, "loss": loss, "terms": terms,
                "health": health, "logit_scale": logit_scale, "memory_rows": memory.texts.len(),
            }))?;
            observer.on_step(&report);
            if observer.interrupt_requested() {
                return Err(Error::Interrupted { epoch: epoch + 1 });
            }
            if !collapse_reported && let Some(message) = health.collapse_warning(step, epoch) {
                collapse_reported = true;
                log.write(
                    serde_json::json!({"kind": "warning", "step": step, "message": message}),
                )?;
                observer.on_warning(&message);
            }
        }
        epochs_run += 1;
        let val = if val_view.images.is_empty() {
            None
        } else {
            Some(evaluate_split(
                &mut model,
                dataset,
                &val_view,
                "val",
                t.eval_batch_size,
            )?)
        };
        // Without a validation split the latest epoch counts as the best.
        let verdict = early_stopping.update(val.as_ref().map_or(epoch as f64, |m| m.rsum));
        let improved = verdict.improved;
        let train_loss = loss_sum / (batches.len() - skipped_in_epoch).max(1) as f64;
        log.write(serde_json::json!({
            "kind": "epoch", "epoch": epoch + 1, "step": step, "lr": lr, "train_loss": train_loss,
            "val": val, "improved": improved, "seconds": epoch_start.elapsed().as_secs_f64(),
            "skipped_batches": skipped_in_epoch,
        }))?;
        if improved {
            best = Some((epoch + 1, val.clone()));
        }
        let mut extra: Vec<(String, Tensor)> = temperature
            .named()
            .into_iter()
            .map(|(n, v, _)| (n, v.as_tensor().clone()))
            .collect();
        extra.extend(memory.to_tensors()?);
        if improved {
            save_checkpoint(
                &run_dir.join(RunFiles::BEST),
                &model,
                config,
                epoch + 1,
                &extra,
                &[],
            )?;
        }
        let (optimizer_tensors, optimizer_step) = optimizer.state()?;
        extra.extend(optimizer_tensors);
        let state = TrainState {
            epoch: epoch + 1,
            step,
            rng_word_pos: rng.get_word_pos().to_string(),
            optimizer_step,
            best_epoch: best.as_ref().map(|b| b.0),
            best_val: best.as_ref().and_then(|b| b.1.clone()),
            early_stopping: early_stopping.clone(),
            collapse_reported,
            stopped_early: verdict.stop,
            skipped_batches: skipped,
            metrics_bytes: log.len()?,
        };
        save_checkpoint(
            &run_dir.join(RunFiles::LAST),
            &model,
            config,
            epoch + 1,
            &extra,
            &[(
                TRAIN_STATE.to_string(),
                serde_json::to_string(&state).expect("state serialises"),
            )],
        )?;
        observer.on_epoch(&EpochReport {
            epoch,
            epochs: t.epochs,
            train_loss,
            val,
            improved,
            seconds: epoch_start.elapsed().as_secs_f64(),
        });
        if verdict.stop {
            stopped_early = true;
            break;
        }
    }
    let Some((best_epoch, best_val)) = best else {
        if paused {
            return Err(Error::Config(
                "the run was stopped before its first epoch; nothing was trained".into(),
            ));
        }
        return Err(Error::Config(format!(
            "nothing to train: the run already completed {epochs_run} epochs and train.epochs is {}",
            t.epochs
        )));
    };
    Ok(TrainOutcome {
        best_epoch,
        best_val,
        epochs_run,
        steps: step,
        stopped_early,
        paused,
        skipped_batches: skipped,
        seconds: started.elapsed().as_secs_f64(),
        splits,
    })
}
