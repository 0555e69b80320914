//! The training loop as a steppable [`Trainer`]: start or resume, step, end of epoch
//! (validation and checkpoints), finish. [`train`] and [`resume`] drive it for an [`Observer`].

use std::borrow::Borrow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::checkpoint_writer::{CheckpointWriter, Held};
use super::read_ahead::{BatchRows, READ_AHEAD, ReadAhead};
use crate::config::Config;
use crate::data::{Batch, Batcher, PairedDataset, SplitView, Splits};
use crate::error::{Error, Result};
use crate::eval::RetrievalMetrics;
use crate::fsio;
use crate::loss::{Embedded, Memory, Objective, Temperature};
use crate::model::snapshot;
use crate::model::{Backward, Checkpoint, CheckpointContents, TwoBranch, load_checkpoint};
use crate::parallel::{BatchShare, Collective, RankedStep};
use crate::train::metrics_log::MetricsLog;
use crate::train::nonfinite::{abbreviate, first_nonfinite_gradient};
use crate::train::on_pool::on_pool;
use crate::train::{
    EarlyStopping, EpochReport, Health, LrSchedule, Observer, Optimizer, RunFiles, StepReport,
    evaluate_split, resolve_splits,
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
    Trainer::start(dataset, config, run_dir, device)?.drive(observer)
}

/// Continues the run in `run_dir` from its `last.safetensors` (see [`Trainer::resume`]), so
/// the result equals a run that was never interrupted.
///
/// # Errors
/// The errors of [`Trainer::resume`] and of [`train`].
pub fn resume(
    dataset: &PairedDataset,
    run_dir: &Path,
    epochs: Option<usize>,
    device: &Device,
    observer: &mut dyn Observer,
) -> Result<TrainOutcome> {
    Trainer::resume(dataset, run_dir, epochs, device)?.drive(observer)
}

/// What one [`Trainer::step`] did.
#[derive(Debug, Clone)]
pub enum StepEvent {
    /// A batch trained; `warning` says when the space began to collapse at this step (once
    /// per run).
    Trained {
        /// The step's loss, learning rate and health.
        report: StepReport,
        /// A warning for the user, logged to `metrics.jsonl` too.
        warning: Option<String>,
    },
    /// A batch whose loss or gradient was not finite was skipped (`train.skip_nonfinite`).
    Skipped {
        /// What was not finite, for the user; logged to `metrics.jsonl` too.
        warning: String,
    },
}

/// The epoch being trained: its batches and running sums.
struct EpochInProgress {
    epoch: usize,
    batches: Vec<Batch>,
    /// The batches' feature rows, read ahead of the step.
    rows: ReadAhead,
    next: usize,
    objective: Objective,
    loss_sum: f64,
    skipped: usize,
    lr: f64,
    started: Instant,
}

/// A training run that its caller drives.
///
/// ```text
/// let mut trainer = Trainer::start(&data, &config, run_dir, &device)?;   // or Trainer::resume
/// while !trainer.is_done() {
///     while let Some(event) = trainer.step()? { /* report it */ }
///     let epoch = trainer.end_epoch()?;       // validation, best and last checkpoints
/// }
/// let outcome = trainer.finish(false)?;
/// ```
///
/// Stopping between epochs is a pause: the run folder's `last.safetensors` holds everything
/// [`Trainer::resume`] needs to continue as if never stopped. Stopping mid-epoch loses that
/// epoch's steps and nothing else.
pub struct Trainer<D: Borrow<PairedDataset>> {
    /// The data: borrowed (`&PairedDataset`) or shared (`Arc<PairedDataset>`).
    dataset: D,
    config: Config,
    splits: Splits,
    run_dir: PathBuf,
    device: Device,
    model: TwoBranch,
    temperature: Temperature,
    memory: Memory,
    /// The trained tensors by name (the names say which gradient went bad).
    named: Vec<(String, Var)>,
    optimizer: Optimizer,
    /// Dropout's generator.
    rng: rand_chacha::ChaCha8Rng,
    batcher: Batcher,
    schedule: LrSchedule,
    steps_per_epoch: usize,
    val_view: SplitView,
    log: MetricsLog,
    step: usize,
    skipped: usize,
    best: Option<(usize, Option<RetrievalMetrics>)>,
    early_stopping: EarlyStopping,
    collapse_reported: bool,
    epochs_done: usize,
    stopped_early: bool,
    current: Option<EpochInProgress>,
    /// Writes `best` and `last` while the next epoch trains.
    writer: CheckpointWriter,
    /// The group when this trainer is one rank of a data-parallel run; rank 0 alone writes
    /// the run folder.
    rank: Option<Arc<dyn Collective>>,
    started: Instant,
}

impl<D: Borrow<PairedDataset>> Trainer<D> {
    /// A new run in `run_dir`: writes `config.toml` and `splits.json`, starts `metrics.jsonl`.
    ///
    /// # Errors
    /// Config and dataset errors, and I/O errors naming the file.
    pub fn start(dataset: D, config: &Config, run_dir: &Path, device: &Device) -> Result<Self> {
        Self::start_ranked(dataset, config, run_dir, device, None)
    }

    /// [`Trainer::start`] as one rank of a data-parallel group: every rank of `collective`
    /// starts one with the same dataset, config and run folder, and steps it in lockstep (each
    /// collective operation waits for all). Each rank reads and embeds its share of every
    /// batch; the loss sees the whole batch; rank 0 writes the run folder.
    ///
    /// # Errors
    /// As [`Trainer::start`].
    pub fn start_rank(
        dataset: D,
        config: &Config,
        run_dir: &Path,
        device: &Device,
        collective: Arc<dyn Collective>,
    ) -> Result<Self> {
        Self::start_ranked(dataset, config, run_dir, device, Some(collective))
    }

    fn start_ranked(
        dataset: D,
        config: &Config,
        run_dir: &Path,
        device: &Device,
        rank: Option<Arc<dyn Collective>>,
    ) -> Result<Self> {
        config.validate()?;
        let splits = resolve_splits(dataset.borrow(), config, None)?;
        let log = if writes_run_folder(rank.as_ref()) {
            std::fs::create_dir_all(run_dir).map_err(|e| Error::io(run_dir, e))?;
            fsio::write_atomic(
                &run_dir.join(RunFiles::SPLITS),
                serde_json::to_string(&splits)
                    .expect("splits serialise")
                    .as_bytes(),
            )?;
            MetricsLog::create(run_dir.join(RunFiles::METRICS))?
        } else {
            MetricsLog::discard()
        };
        Self::new(dataset, config.clone(), splits, run_dir, device, log, rank)
    }

    /// Continues the run in `run_dir` from its `last.safetensors`: weights, optimiser state,
    /// dropout RNG, cross-batch memory, temperature, epoch and step counters, best score and
    /// early-stopping count. `epochs` extends (or shortens) the planned number of epochs;
    /// nothing else of the config may change.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] when the folder has no resumable checkpoint or it does not match
    /// the dataset; [`Error::Config`] when the run stopped early.
    pub fn resume(
        dataset: D,
        run_dir: &Path,
        epochs: Option<usize>,
        device: &Device,
    ) -> Result<Self> {
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
        let splits = resolve_splits(dataset.borrow(), &config, Some(run_dir))?;
        let state = TrainState::of(&checkpoint, &path, dataset.borrow(), run_dir, &config)?;
        let log = MetricsLog::reopen_at(run_dir.join(RunFiles::METRICS), state.metrics_bytes)?;
        let mut trainer = Self::new(dataset, config, splits, run_dir, device, log, None)?;
        trainer.restore(&checkpoint, state, &path)?;
        Ok(trainer)
    }

    /// The run's parts, freshly initialised from the seed.
    fn new(
        dataset: D,
        config: Config,
        splits: Splits,
        run_dir: &Path,
        device: &Device,
        log: MetricsLog,
        rank: Option<Arc<dyn Collective>>,
    ) -> Result<Self> {
        if writes_run_folder(rank.as_ref()) {
            fsio::write_atomic(&run_dir.join(RunFiles::CONFIG), config.to_toml().as_bytes())?;
        }
        let data: &PairedDataset = dataset.borrow();
        let n_images = data.images.rows();
        let train_view = SplitView::new(&splits.train, &data.text_to_image, n_images);
        let val_view = SplitView::new(&splits.val, &data.text_to_image, n_images);
        let t = &config.train;
        let batcher = Batcher::new(&train_view, t.batch_size, config.seed)?;
        let model = TwoBranch::new(
            data.images.cols(),
            data.texts.cols(),
            &config.model,
            config.seed,
            device,
        )?;
        let temperature = Temperature::new(&config.loss, device)?;
        let memory = Memory::new(&config.loss.memory, config.model.dim);
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
        let optimizer = Optimizer::new(trained, t)?;
        let steps_per_epoch = batcher.epoch(0).len();
        Ok(Trainer {
            dataset,
            splits,
            run_dir: run_dir.to_path_buf(),
            device: device.clone(),
            model,
            temperature,
            memory,
            named,
            optimizer,
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(config.seed.wrapping_add(1)),
            schedule: LrSchedule::new(t, steps_per_epoch),
            steps_per_epoch,
            batcher,
            val_view,
            log,
            step: 0,
            skipped: 0,
            best: None,
            early_stopping: EarlyStopping::new(t.patience),
            collapse_reported: false,
            epochs_done: 0,
            stopped_early: false,
            current: None,
            writer: CheckpointWriter::start()?,
            rank,
            started: Instant::now(),
            config,
        })
    }

    /// Sets weights, temperature, memory, optimiser, RNG and counters from a checkpoint.
    fn restore(&mut self, checkpoint: &Checkpoint, state: TrainState, path: &Path) -> Result<()> {
        let bad = |problem: String| Error::Checkpoint {
            path: path.to_path_buf(),
            problem,
        };
        for ((name, target, _), (_, source, _)) in
            self.model.named().iter().zip(checkpoint.model.named())
        {
            target
                .set(source.as_tensor())
                .map_err(|e| bad(format!("`{name}`: {e}")))?;
        }
        let extra = &checkpoint.extra;
        for (name, var, _) in self.temperature.named() {
            let value = extra
                .get(&name)
                .ok_or_else(|| bad(format!("tensor `{name}` is missing")))?;
            var.set(&value.to_dtype(var.dtype())?)?;
        }
        self.memory
            .restore(&mut |name| extra.get(name).cloned())
            .map_err(bad)?;
        self.optimizer
            .restore(extra, state.optimizer_step)
            .map_err(bad)?;
        let word_pos: u128 = state
            .rng_word_pos
            .parse()
            .map_err(|_| bad("train_state.rng_word_pos is not a number".into()))?;
        self.rng.set_word_pos(word_pos);
        self.step = state.step;
        self.best = state.best_epoch.map(|e| (e, state.best_val.clone()));
        self.early_stopping = state.early_stopping;
        self.collapse_reported = state.collapse_reported;
        self.epochs_done = state.epoch;
        self.skipped = state.skipped_batches;
        Ok(())
    }

    /// The epochs planned (`train.epochs`).
    pub fn epochs(&self) -> usize {
        self.config.train.epochs
    }

    /// Epochs completed and checkpointed.
    pub fn completed_epochs(&self) -> usize {
        self.epochs_done
    }

    /// Optimisation steps in each epoch.
    pub fn steps_per_epoch(&self) -> usize {
        self.steps_per_epoch
    }

    /// Whether the run has trained every planned epoch, or early stopping ended it.
    pub fn is_done(&self) -> bool {
        self.stopped_early || self.epochs_done >= self.config.train.epochs
    }

    /// The model as trained so far.
    pub fn model(&self) -> &TwoBranch {
        &self.model
    }

    /// The run's resolved config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Trains the next batch of the current epoch (starting the next epoch when none is in
    /// progress); `None` once the epoch's batches are done, when [`Trainer::end_epoch`] is due,
    /// or when the run is done.
    ///
    /// # Errors
    /// [`Error::NonFinite`] when the loss or a gradient is not finite (unless
    /// `train.skip_nonfinite`), tensor and I/O errors.
    pub fn step(&mut self) -> Result<Option<StepEvent>> {
        if self.current.is_none() {
            if self.is_done() {
                return Ok(None);
            }
            self.begin_epoch()?;
        }
        let current = self.current.as_mut().expect("an epoch is in progress");
        let Some(batch) = current.batches.get(current.next).cloned() else {
            return Ok(None);
        };
        let rows = current.rows.next()?;
        current.next += 1;
        self.train_batch(&batch, rows).map(Some)
    }

    fn begin_epoch(&mut self) -> Result<()> {
        let epoch = self.epochs_done;
        let batches = self.batcher.epoch(epoch);
        let data: &PairedDataset = self.dataset.borrow();
        // A rank reads only its share of each batch.
        let to_read = match &self.rank {
            None => batches.clone(),
            Some(c) => batches
                .iter()
                .map(|b| BatchShare::split(b, c.ranks())[c.rank()].of(b))
                .collect(),
        };
        let rows = ReadAhead::start(data.images.clone(), data.texts.clone(), to_read, READ_AHEAD)?;
        self.current = Some(EpochInProgress {
            epoch,
            batches,
            rows,
            next: 0,
            objective: Objective::for_epoch(&self.config.loss, epoch),
            loss_sum: 0.0,
            skipped: 0,
            lr: self.schedule.lr(self.step, epoch),
            started: Instant::now(),
        });
        Ok(())
    }

    /// Forward, loss, backward and the optimiser's step on one batch of the current epoch.
    fn train_batch(&mut self, batch: &Batch, rows: BatchRows) -> Result<StepEvent> {
        let current = self.current.as_mut().expect("an epoch is in progress");
        // `step` has moved `next` past this batch: it is the batch's 1-based place.
        let (epoch, step_in_epoch) = (current.epoch, current.next);
        current.lr = self.schedule.lr(self.step, epoch);
        let lr = current.lr;
        self.optimizer.set_learning_rate(lr);
        self.step += 1;
        let step = self.step;
        let ranked = self.rank.as_ref().map(|c| RankedStep::new(c, batch));
        let (images, texts) = self.batch_tensors(rows)?;
        let running_stats = self.saved_running_stats()?;
        // Global ids, so the memory can tell images of different batches apart; the sample
        // keys are the dataset rows.
        let image_ids = &batch.images;
        let text_ids: Vec<u32> = batch
            .text_image
            .iter()
            .map(|&l| batch.images[l as usize])
            .collect();
        let objective = &self.current.as_ref().expect("an epoch").objective;
        let (model, rng, memory, temperature, named) = (
            &mut self.model,
            &mut self.rng,
            &self.memory,
            &self.temperature,
            &self.named,
        );
        // Forward, loss and backward on a rayon worker (see `on_pool`).
        let (ei, et, out, health, loss, grads, failure) = on_pool(|| -> Result<_> {
            let (forward, ei, et) = match &ranked {
                None => {
                    let forward = model.forward_train(&images, &texts, rng, Backward::Explicit)?;
                    let (ei, et) = (forward.images.clone(), forward.texts.clone());
                    (forward, ei, et)
                }
                Some(ranked) => {
                    ranked.forward(model, (&images, &texts), rng, Backward::Explicit)?
                }
            };
            let out = objective.forward(
                &Embedded::new(&ei, &et, image_ids, &text_ids)
                    .with_keys(image_ids, &batch.texts)
                    .with_memory(memory)
                    .with_temperature(temperature),
            )?;
            let health = Health::measure(&ei, &et, &batch.text_image)?;
            let loss = out
                .total
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
            let mut grads = None;
            let failure = if loss.is_finite() {
                let g = match &ranked {
                    None => model.backward(forward, &out.total)?,
                    Some(ranked) => ranked.backward(model, forward, (&ei, &et), &out.total)?,
                };
                let bad = first_nonfinite_gradient(&g, named)?;
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
            return self.skip(batch, epoch, &running_stats, what, value);
        }
        let grads = grads.expect("finite loss has gradients");
        on_pool(|| self.optimizer.step(&grads))?;
        self.temperature.clamp()?;
        self.memory
            .record(&ei, image_ids, image_ids, &et, &text_ids, &batch.texts)?;
        let current = self.current.as_mut().expect("an epoch");
        current.loss_sum += loss;
        let logit_scale = self
            .config
            .loss
            .kind
            .uses_temperature()
            .then(|| self.temperature.scale())
            .transpose()?;
        let report = StepReport {
            epoch,
            step,
            step_in_epoch,
            steps_in_epoch: current.batches.len(),
            lr,
            loss,
            terms: out.terms,
            health,
            logit_scale,
        };
        self.record_step(report)
    }

    /// BatchNorm's running statistics, saved when `train.skip_nonfinite` may have to put them
    /// back: the forward pass updates them, and a skipped batch must not leave them changed.
    fn saved_running_stats(&self) -> Result<Vec<(Var, Tensor)>> {
        if !self.config.train.skip_nonfinite {
            return Ok(Vec::new());
        }
        self.model
            .named()
            .into_iter()
            .filter(|(_, _, trainable)| !trainable)
            .map(|(_, v, _)| Ok((v.clone(), v.as_tensor().copy()?)))
            .collect()
    }

    /// Writes a trained step's line to the metrics log, and the collapse warning once.
    fn record_step(&mut self, report: StepReport) -> Result<StepEvent> {
        let (epoch, step) = (report.epoch, report.step);
        let terms: serde_json::Map<String, serde_json::Value> = report
            .terms
            .iter()
            .map(|(n, v, a)| (n.clone(), serde_json::json!({"loss": v, "active": a})))
            .collect();
        self.log.write(serde_json::json!({
            "kind": "step", "epoch": epoch + 1, "step": step, "lr": report.lr,
            "loss": report.loss, "terms": terms, "health": report.health,
            "logit_scale": report.logit_scale, "memory_rows": self.memory.texts.len(),
        }))?;
        let mut warning = None;
        if !self.collapse_reported
            && let Some(message) = report.health.collapse_warning(step, epoch)
        {
            self.collapse_reported = true;
            self.log
                .write(serde_json::json!({"kind": "warning", "step": step, "message": message}))?;
            warning = Some(message);
        }
        Ok(StepEvent::Trained { report, warning })
    }

    /// The image and caption feature rows read for a batch (a rank's share of it), on the
    /// device.
    fn batch_tensors(&self, rows: BatchRows) -> Result<(Tensor, Tensor)> {
        let data: &PairedDataset = self.dataset.borrow();
        let (d_image, d_text) = (data.images.cols(), data.texts.cols());
        let images = Tensor::from_vec(rows.images, (rows.image_rows, d_image), &self.device)?;
        let texts = Tensor::from_vec(rows.texts, (rows.text_rows, d_text), &self.device)?;
        Ok((images, texts))
    }

    /// A batch whose loss or gradient is `value`: an error, or with `train.skip_nonfinite` a
    /// skipped step with BatchNorm's statistics put back.
    fn skip(
        &mut self,
        batch: &Batch,
        epoch: usize,
        running_stats: &[(Var, Tensor)],
        what: String,
        value: f64,
    ) -> Result<StepEvent> {
        let step = self.step;
        if !self.config.train.skip_nonfinite {
            return Err(Error::NonFinite {
                step,
                what,
                value,
                captions: abbreviate(&batch.texts),
            });
        }
        for (var, saved) in running_stats {
            var.set(saved)?;
        }
        self.skipped += 1;
        self.current.as_mut().expect("an epoch").skipped += 1;
        self.log.write(serde_json::json!({
            "kind": "skipped", "epoch": epoch + 1, "step": step, "what": what,
            "value": value.to_string(), "captions": batch.texts,
        }))?;
        let warning = format!(
            "skipped step {step}: {what} is {value} (batch captions {})",
            abbreviate(&batch.texts)
        );
        Ok(StepEvent::Skipped { warning })
    }

    /// Validation rsum and the other retrieval metrics of the model as it is now, on the
    /// run's validation split; `None` when the split is empty.
    ///
    /// # Errors
    /// [`Error::Config`] when the model maps some features to non-finite embeddings.
    pub fn validate(&mut self) -> Result<Option<RetrievalMetrics>> {
        if self.val_view.images.is_empty() {
            return Ok(None);
        }
        let chunk = self.config.train.eval_batch_size;
        evaluate_split(
            &mut self.model,
            self.dataset.borrow(),
            &self.val_view,
            "val",
            chunk,
        )
        .map(Some)
    }

    /// Ends the current epoch once its batches are done: validation, the metrics line, and
    /// snapshots of the best checkpoint when validation improved and of the resumable
    /// `last.safetensors`, written every `train.checkpoint_seconds` and after the last epoch
    /// (held until then; [`Trainer::checkpoint`], [`Trainer::finish`] and dropping the
    /// trainer write them).
    ///
    /// # Errors
    /// [`Error::Config`] when no epoch is in progress or batches of it are left; I/O errors
    /// naming the checkpoint.
    pub fn end_epoch(&mut self) -> Result<EpochReport> {
        let Some(current) = self.current.take() else {
            return Err(Error::Config(
                "end_epoch without an epoch in progress: step first".into(),
            ));
        };
        if current.next < current.batches.len() {
            let left = current.batches.len() - current.next;
            self.current = Some(current);
            return Err(Error::Config(format!(
                "end_epoch with {left} batches of the epoch left: step until it returns None"
            )));
        }
        let epoch = current.epoch;
        self.epochs_done += 1;
        let val = self.validate()?;
        // Without a validation split the latest epoch counts as the best.
        let verdict = self
            .early_stopping
            .update(val.as_ref().map_or(epoch as f64, |m| m.rsum));
        let trained = (current.batches.len() - current.skipped).max(1);
        let train_loss = current.loss_sum / trained as f64;
        self.log.write(serde_json::json!({
            "kind": "epoch", "epoch": epoch + 1, "step": self.step, "lr": current.lr,
            "train_loss": train_loss, "val": val, "improved": verdict.improved,
            "seconds": current.started.elapsed().as_secs_f64(), "skipped_batches": current.skipped,
        }))?;
        if verdict.improved {
            self.best = Some((epoch + 1, val.clone()));
            self.save(Held::Best, None)?;
        }
        self.stopped_early = verdict.stop;
        self.hold_checkpoint()?;
        let checkpointed = self.checkpoint_due();
        if checkpointed {
            self.writer.release()?;
        }
        Ok(EpochReport {
            epoch,
            epochs: self.config.train.epochs,
            train_loss,
            val,
            improved: verdict.improved,
            checkpointed,
            seconds: current.started.elapsed().as_secs_f64(),
        })
    }

    /// Whether any rank of the group says `yes` (this trainer's own answer without a group):
    /// the ranks of a data-parallel run pause together.
    fn agreed(&self, yes: bool) -> Result<bool> {
        let Some(group) = &self.rank else {
            return Ok(yes);
        };
        let mut votes = [f32::from(u8::from(yes))];
        group.all_reduce_sum(&mut votes)?;
        Ok(votes[0] > 0.0)
    }

    /// Writes `last.safetensors`: the weights and everything a resume needs, as of the last
    /// whole epoch, and waits until it and every checkpoint before it are on disk
    /// ([`Trainer::end_epoch`] hands its checkpoints to the writer thread only every
    /// `train.checkpoint_seconds` and goes on; this writes a held `best` too, and waits).
    ///
    /// # Errors
    /// [`Error::Config`] mid-epoch (a checkpoint holds whole epochs only); I/O errors naming
    /// the file.
    pub fn checkpoint(&mut self) -> Result<()> {
        self.hold_checkpoint()?;
        self.writer.release()?;
        self.writer.flush()
    }

    /// Whether the epoch just ended writes its checkpoints: every `train.checkpoint_seconds`,
    /// and always at the end of the run.
    fn checkpoint_due(&self) -> bool {
        let every = self.config.train.checkpoint_seconds;
        every == 0.0 || self.writer.since_release().as_secs_f64() >= every || self.is_done()
    }

    /// Holds `last.safetensors` with the writer thread (see [`Trainer::checkpoint_due`]).
    fn hold_checkpoint(&mut self) -> Result<()> {
        if self.current.is_some() {
            return Err(Error::Config(
                "checkpoint mid-epoch: a checkpoint holds whole epochs; call end_epoch first"
                    .into(),
            ));
        }
        if !writes_run_folder(self.rank.as_ref()) {
            return Ok(()); // rank 0 writes the run's checkpoints (see `save`)
        }
        let (optimizer_tensors, optimizer_step) = self.optimizer.state()?;
        let state = TrainState {
            epoch: self.epochs_done,
            step: self.step,
            rng_word_pos: self.rng.get_word_pos().to_string(),
            optimizer_step,
            best_epoch: self.best.as_ref().map(|b| b.0),
            best_val: self.best.as_ref().and_then(|b| b.1.clone()),
            early_stopping: self.early_stopping.clone(),
            collapse_reported: self.collapse_reported,
            stopped_early: self.stopped_early,
            skipped_batches: self.skipped,
            metrics_bytes: self.log.len()?,
        };
        let state = serde_json::to_string(&state).expect("state serialises");
        self.save(Held::Last, Some((optimizer_tensors, state)))
    }

    /// Holds the model, temperature and memory as `slot`'s file (`best.safetensors` or
    /// `last.safetensors`); with the optimiser's tensors and the training state for a
    /// resumable checkpoint. The snapshot is taken now; the writer thread writes it, once
    /// released, while training goes on.
    fn save(
        &mut self,
        slot: Held,
        resumable: Option<(Vec<(String, Tensor)>, String)>,
    ) -> Result<()> {
        if !writes_run_folder(self.rank.as_ref()) {
            return Ok(()); // rank 0 writes the run's checkpoints
        }
        // Temperatures are `Var`s updated in place: copy them like the weights.
        let mut extra: Vec<(String, Tensor)> = self
            .temperature
            .named()
            .into_iter()
            .map(|(n, v, _)| Ok((n, snapshot(v.as_tensor())?)))
            .collect::<Result<_>>()?;
        extra.extend(self.memory.to_tensors()?);
        let mut metadata = Vec::new();
        if let Some((optimizer_tensors, state)) = resumable {
            extra.extend(optimizer_tensors);
            metadata.push((TRAIN_STATE.to_string(), state));
        }
        let contents = CheckpointContents::of(
            &self.model,
            &self.config,
            self.epochs_done,
            &extra,
            &metadata,
        )?;
        let name = match slot {
            Held::Best => RunFiles::BEST,
            Held::Last => RunFiles::LAST,
        };
        self.writer.hold(slot, self.run_dir.join(name), contents);
        Ok(())
    }

    /// What the run achieved. `paused`: the caller stopped it before `train.epochs`.
    ///
    /// # Errors
    /// [`Error::Config`] when no epoch was ever completed.
    pub fn finish(mut self, paused: bool) -> Result<TrainOutcome> {
        self.writer.release()?;
        self.writer.flush()?;
        let Some((best_epoch, best_val)) = self.best else {
            if paused {
                return Err(Error::Config(
                    "the run was stopped before its first epoch; nothing was trained".into(),
                ));
            }
            return Err(Error::Config(format!(
                "nothing to train: the run already completed {} epochs and train.epochs is {}",
                self.epochs_done, self.config.train.epochs
            )));
        };
        Ok(TrainOutcome {
            best_epoch,
            best_val,
            epochs_run: self.epochs_done,
            steps: self.step,
            stopped_early: self.stopped_early,
            paused,
            skipped_batches: self.skipped,
            seconds: self.started.elapsed().as_secs_f64(),
            splits: self.splits,
        })
    }

    /// Runs to the end, reporting to `observer`, which may pause between epochs and
    /// interrupt after any step.
    pub(crate) fn drive(mut self, observer: &mut dyn Observer) -> Result<TrainOutcome> {
        observer.on_start(self.epochs(), self.steps_per_epoch);
        let mut paused = false;
        while !self.is_done() {
            let stop = observer.stop_requested(self.epochs_done);
            if self.agreed(stop)? {
                paused = true;
                break;
            }
            while let Some(event) = self.step()? {
                match event {
                    StepEvent::Trained { report, warning } => {
                        observer.on_step(&report);
                        if observer.interrupt_requested() {
                            return Err(Error::Interrupted {
                                epoch: report.epoch + 1,
                            });
                        }
                        if let Some(message) = warning {
                            observer.on_warning(&message);
                        }
                    }
                    StepEvent::Skipped { warning } => observer.on_warning(&warning),
                }
            }
            let report = self.end_epoch()?;
            observer.on_epoch(&report);
        }
        self.finish(paused)
    }
}

/// Whether a trainer writes the run folder: alone, or as rank 0 of a data-parallel group.
fn writes_run_folder(rank: Option<&Arc<dyn Collective>>) -> bool {
    rank.is_none_or(|c| c.rank() == 0)
}

impl TrainState {
    /// The training state in a resumable checkpoint, checked against the data.
    fn of(
        checkpoint: &Checkpoint,
        path: &Path,
        dataset: &PairedDataset,
        run_dir: &Path,
        config: &Config,
    ) -> Result<Self> {
        let bad = |problem: String| Error::Checkpoint {
            path: path.to_path_buf(),
            problem,
        };
        if (checkpoint.model.d_image, checkpoint.model.d_text)
            != (dataset.images.cols(), dataset.texts.cols())
        {
            return Err(bad(format!(
                "the run was trained on {}-d image and {}-d text features, the data has {} and {}; resume with the run's own dataset",
                checkpoint.model.d_image,
                checkpoint.model.d_text,
                dataset.images.cols(),
                dataset.texts.cols()
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
                config.train.patience
            )));
        }
        Ok(state)
    }
}
