//! The search loop: draws trials, trains them rung by rung in their own run folders, scores
//! them on the validation split, journals every step and keeps the trial table and the best
//! recipe current on disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::Device;
use serde::Serialize;

use crate::config::Config;
use crate::data::PairedDataset;
use crate::error::{Error, Result};
use crate::fsio;
use crate::train::{EpochReport, Observer, RunFiles, StepReport, TrainOutcome};
use crate::tune::asha::{self, Asha, Decision};
use crate::tune::journal::{Event, Journal, Settings};
use crate::tune::space::{Params, Sampler, SearchSpace, apply};

/// How a search runs.
#[derive(Debug, Clone)]
pub struct TuneOptions {
    /// How trials draw their values.
    pub sampler: Sampler,
    /// Seed of the draws (each trial's own training seed is the config's `seed`).
    pub seed: u64,
    /// Halving factor: the top `1/eta` of a rung go on, with `eta` times the epochs.
    pub eta: usize,
    /// Epochs of the first rung (at least).
    pub min_epochs: usize,
    /// Trials to draw at most (a grid also ends when every point was drawn).
    pub max_trials: Option<usize>,
    /// Training time of the whole search, over every invocation that ran it (a resumed search
    /// continues the count).
    pub budget: Option<Duration>,
}

/// The files of a search folder.
pub struct TuneFiles;

impl TuneFiles {
    /// The journal of events.
    pub const JOURNAL: &'static str = "tune.jsonl";
    /// The trial table.
    pub const TRIALS: &'static str = "trials.json";
    /// The best trial's config, as a recipe for `tandem train --config`.
    pub const BEST: &'static str = "best.toml";
    /// One run folder per trial, `trials/0007`.
    pub const TRIAL_DIRS: &'static str = "trials";
}

/// One row of the trial table.
#[derive(Debug, Clone, Serialize)]
pub struct TrialRow {
    /// 0-based trial number (its folder is `trials/{trial:04}`).
    pub trial: usize,
    /// Its values of the searched keys.
    pub params: BTreeMap<String, serde_json::Value>,
    /// Highest rung finished, when any.
    pub rung: Option<usize>,
    /// Epochs trained.
    pub epochs: usize,
    /// Best validation rsum within those epochs.
    pub val_rsum: Option<f64>,
    /// Epoch of that score.
    pub best_epoch: Option<usize>,
    /// Validation rsum at the end of each rung finished.
    pub rung_scores: Vec<f64>,
    /// Training seconds over every rung.
    pub seconds: f64,
    /// `full` (trained the whole budget), `stopped` (not promoted, so far), `running`
    /// (interrupted; continues when the search resumes) or `failed: …`.
    pub status: String,
}

/// The state of a search.
#[derive(Debug, Clone, Serialize)]
pub struct TuneReport {
    /// Epochs of each rung.
    pub rungs: Vec<usize>,
    /// Training seconds the search has used.
    pub search_seconds: f64,
    /// Every trial so far.
    pub trials: Vec<TrialRow>,
    /// The best trial: highest validation rsum among those at the highest rung reached.
    pub best: Option<usize>,
    /// Why the search ended: `done` (nothing left to train) or `budget` (time is up; running
    /// it again with a larger budget continues it).
    pub ended: Option<String>,
}

/// A job about to run, for progress.
#[derive(Debug, Clone)]
pub struct JobStart<'a> {
    /// The trial's number.
    pub trial: usize,
    /// The rung this job trains to.
    pub rung: usize,
    /// Epochs of every rung, ascending.
    pub rungs: &'a [usize],
    /// Epochs the trial will have at the end of this job.
    pub epochs: usize,
    /// The trial's values.
    pub params: &'a Params,
    /// Whether it continues an interrupted job.
    pub resumed: bool,
    /// Seconds the whole search has spent training before this job.
    pub search_seconds: f64,
}

/// Progress of a search.
pub trait TuneObserver {
    /// A job starts; the returned observer sees its training.
    fn on_job(&mut self, job: &JobStart) -> Box<dyn Observer>;
    /// A job ended; the table on disk is current.
    fn on_report(&mut self, report: &TuneReport);
}

/// Runs (or continues) the search of `space` over `base` in `out`, until nothing is left to
/// train, the trial count or the budget is reached. Every trial trains on the training split
/// and is scored on the validation split; the test split is never read.
///
/// # Errors
/// Dataset and I/O errors; [`Error::Config`] when the dataset has no validation split;
/// [`Error::BadFile`] when `out` holds a different search. A trial that diverges is recorded
/// as failed and the search goes on.
pub fn search(
    dataset: &PairedDataset,
    base: &Config,
    space: &SearchSpace,
    options: &TuneOptions,
    out: &Path,
    device: &Device,
    observer: &mut dyn TuneObserver,
) -> Result<TuneReport> {
    let mut fixed = apply(base, &space.fixed)?;
    // Stopping bad trials early is the scheduler's job; a trial that stopped itself could not
    // be promoted (there is nothing to resume).
    if fixed.train.patience != 0 {
        tracing::info!(
            "tune: trials run with train.patience = 0 (was {}); successive halving stops the weak ones",
            fixed.train.patience
        );
        fixed.train.patience = 0;
    }
    let splits = crate::train::resolve_splits(dataset, &fixed, None)?;
    if splits.val.is_empty() {
        return Err(Error::Config(
            "tune scores every trial on the validation split, and this dataset has none; give it a splits.json with a val split, or set data.val_images".into(),
        ));
    }
    let rungs = asha::rungs(options.min_epochs, fixed.train.epochs, options.eta);
    let settings = Settings {
        space: space.text.clone(),
        base: base.to_toml(),
        sampler: options.sampler,
        seed: options.seed,
        eta: options.eta,
        rungs: rungs.clone(),
    };
    std::fs::create_dir_all(out.join(TuneFiles::TRIAL_DIRS)).map_err(|e| Error::io(out, e))?;
    let (journal, events) = Journal::open(&out.join(TuneFiles::JOURNAL), &settings)?;
    let mut state = State::replay(&events, rungs, options.eta);
    let mut run = Search {
        dataset,
        fixed: &fixed,
        space,
        options,
        out,
        device,
        journal,
        started: Instant::now(),
    };
    loop {
        if let Some(ended) = run.limit_reached(&state) {
            state.ended = Some(ended.into());
            break;
        }
        let job = match state.pending.take() {
            Some(job) => job,
            None => match state.next_job(space, options) {
                Some(job) => {
                    run.journal.append(&job.event())?;
                    job
                }
                None => {
                    state.ended = Some("done".into());
                    break;
                }
            },
        };
        state.start(&job);
        let finished = run.job(&mut state, &job, observer)?;
        if !finished {
            state.pending = Some(job);
            state.ended = Some("budget".into());
            break;
        }
        run.publish(&state, observer)?;
    }
    run.publish(&state, observer)?;
    Ok(state.report(run.search_seconds(&state)))
}

/// One job: train `trial` until it has `epochs` epochs (rung `rung`).
#[derive(Debug, Clone)]
struct Job {
    trial: usize,
    rung: usize,
    epochs: usize,
    params: Params,
    resumed: bool,
}

impl Job {
    fn event(&self) -> Event {
        Event::Job {
            trial: self.trial,
            rung: self.rung,
            epochs: self.epochs,
            params: (self.rung == 0).then(|| params_json(&self.params)),
        }
    }
}

fn params_json(params: &Params) -> serde_json::Map<String, serde_json::Value> {
    params
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                serde_json::to_value(v).expect("toml values map to JSON"),
            )
        })
        .collect()
}

/// What the journal says so far.
struct State {
    rungs: Vec<usize>,
    asha: Asha,
    rows: Vec<TrialRow>,
    params: Vec<Params>,
    pending: Option<Job>,
    /// Training seconds of the invocations before this one.
    earlier_seconds: f64,
    ended: Option<String>,
}

impl State {
    fn replay(events: &[Event], rungs: Vec<usize>, eta: usize) -> Self {
        let mut state = State {
            asha: Asha::new(rungs.len(), eta),
            rungs,
            rows: Vec::new(),
            params: Vec::new(),
            pending: None,
            earlier_seconds: 0.0,
            ended: None,
        };
        for event in events {
            match event {
                Event::Search(_) => {}
                Event::Job {
                    trial,
                    rung,
                    epochs,
                    params,
                } => {
                    let params: Params = params
                        .iter()
                        .flatten()
                        .map(|(k, v)| {
                            let value = serde_json::from_value(v.clone())
                                .unwrap_or_else(|_| toml::Value::String(v.to_string()));
                            (k.clone(), value)
                        })
                        .collect();
                    let job = Job {
                        trial: *trial,
                        rung: *rung,
                        epochs: *epochs,
                        params: if *rung == 0 {
                            params
                        } else {
                            state.params[*trial].clone()
                        },
                        resumed: true,
                    };
                    state.start(&job);
                    state.pending = Some(job);
                }
                Event::Result {
                    trial,
                    rung,
                    epochs,
                    val_rsum,
                    best_epoch,
                    seconds,
                    search_seconds,
                } => {
                    state.finish(*trial, *rung, *epochs, *val_rsum, *best_epoch, *seconds);
                    state.earlier_seconds = *search_seconds;
                }
                Event::Failed {
                    trial,
                    rung,
                    error,
                    search_seconds,
                } => {
                    state.fail(*trial, *rung, error);
                    state.earlier_seconds = *search_seconds;
                }
            }
        }
        state
    }

    /// Promote the best waiting trial, else draw a new one.
    fn next_job(&self, space: &SearchSpace, options: &TuneOptions) -> Option<Job> {
        let index = self.rows.len();
        let draw = options
            .max_trials
            .is_none_or(|m| index < m)
            .then(|| space.trial(options.sampler, options.seed, index))
            .flatten();
        match self.asha.next(draw.is_some())? {
            Decision::Start => Some(Job {
                trial: index,
                rung: 0,
                epochs: self.rungs[0],
                params: draw.expect("a draw when a start is allowed"),
                resumed: false,
            }),
            Decision::Promote { trial, rung } => Some(Job {
                trial,
                rung,
                epochs: self.rungs[rung],
                params: self.params[trial].clone(),
                resumed: false,
            }),
        }
    }

    fn start(&mut self, job: &Job) {
        self.asha.mark_promoted(job.trial, job.rung);
        if job.trial == self.rows.len() {
            self.params.push(job.params.clone());
            self.rows.push(TrialRow {
                trial: job.trial,
                params: params_json(&job.params).into_iter().collect(),
                rung: None,
                epochs: 0,
                val_rsum: None,
                best_epoch: None,
                rung_scores: Vec::new(),
                seconds: 0.0,
                status: String::new(),
            });
        }
        self.rows[job.trial].status = "running".into();
    }

    fn finish(
        &mut self,
        trial: usize,
        rung: usize,
        epochs: usize,
        val_rsum: f64,
        best_epoch: usize,
        seconds: f64,
    ) {
        self.asha.record(trial, rung, val_rsum);
        let top = self.rungs.len() - 1;
        let row = &mut self.rows[trial];
        row.rung = Some(rung);
        row.epochs = epochs;
        row.val_rsum = Some(val_rsum);
        row.best_epoch = Some(best_epoch);
        row.rung_scores.push(val_rsum);
        row.seconds += seconds;
        row.status = if rung == top { "full" } else { "stopped" }.into();
        if self.pending.as_ref().is_some_and(|j| j.trial == trial) {
            self.pending = None;
        }
    }

    fn fail(&mut self, trial: usize, rung: usize, error: &str) {
        self.asha.record(trial, rung, f64::NEG_INFINITY);
        self.rows[trial].status = format!("failed: {error}");
        self.pending = None;
    }

    /// Highest validation rsum among the trials at the highest rung any trial finished.
    fn best(&self) -> Option<usize> {
        let top = self.rows.iter().filter_map(|r| r.rung).max()?;
        self.rows
            .iter()
            .filter(|r| r.rung == Some(top) && r.val_rsum.is_some_and(f64::is_finite))
            .max_by(|a, b| a.val_rsum.unwrap().total_cmp(&b.val_rsum.unwrap()))
            .map(|r| r.trial)
    }

    fn report(&self, search_seconds: f64) -> TuneReport {
        TuneReport {
            rungs: self.rungs.clone(),
            search_seconds,
            trials: self.rows.clone(),
            best: self.best(),
            ended: self.ended.clone(),
        }
    }
}

/// What stays the same through a search.
struct Search<'a> {
    dataset: &'a PairedDataset,
    fixed: &'a Config,
    space: &'a SearchSpace,
    options: &'a TuneOptions,
    out: &'a Path,
    device: &'a Device,
    journal: Journal,
    started: Instant,
}

impl Search<'_> {
    fn search_seconds(&self, state: &State) -> f64 {
        state.earlier_seconds + self.started.elapsed().as_secs_f64()
    }

    fn limit_reached(&self, state: &State) -> Option<&'static str> {
        let budget = self.options.budget?;
        (self.search_seconds(state) >= budget.as_secs_f64()).then_some("budget")
    }

    fn trial_dir(&self, trial: usize) -> PathBuf {
        self.out
            .join(TuneFiles::TRIAL_DIRS)
            .join(format!("{trial:04}"))
    }

    /// Trains one job and journals its result; `false` when the budget ran out first (the
    /// trial's last checkpoint stays, and the job continues when the search resumes).
    fn job(
        &mut self,
        state: &mut State,
        job: &Job,
        observer: &mut dyn TuneObserver,
    ) -> Result<bool> {
        let dir = self.trial_dir(job.trial);
        let mut training = observer.on_job(&JobStart {
            trial: job.trial,
            rung: job.rung,
            rungs: &state.rungs,
            epochs: job.epochs,
            params: &job.params,
            resumed: job.resumed,
            search_seconds: self.search_seconds(state),
        });
        let deadline = self.options.budget.map(|b| {
            let left = b.as_secs_f64() - self.search_seconds(state);
            Instant::now() + Duration::from_secs_f64(left.max(0.0))
        });
        let mut stop = RungStop {
            inner: training.as_mut(),
            target: job.epochs,
            deadline,
            first: None,
        };
        let started = Instant::now();
        let outcome = if dir.join(RunFiles::LAST).exists() {
            crate::train::resume(self.dataset, &dir, None, self.device, &mut stop)
        } else {
            let config = apply(self.fixed, &job.params)?;
            crate::train::train(self.dataset, &config, &dir, self.device, &mut stop)
        };
        drop(training);
        let seconds = started.elapsed().as_secs_f64();
        match outcome {
            Ok(outcome) if reached(&outcome, job.epochs) => {
                let val = outcome
                    .best_val
                    .as_ref()
                    .map_or(f64::NEG_INFINITY, |m| m.rsum);
                let event = Event::Result {
                    trial: job.trial,
                    rung: job.rung,
                    epochs: outcome.epochs_run,
                    val_rsum: val,
                    best_epoch: outcome.best_epoch,
                    seconds,
                    search_seconds: self.search_seconds(state),
                };
                self.journal.append(&event)?;
                state.finish(
                    job.trial,
                    job.rung,
                    outcome.epochs_run,
                    val,
                    outcome.best_epoch,
                    seconds,
                );
                if job.rung + 1 == state.rungs.len() {
                    // Trained to the full budget: it will never continue, so only its best
                    // checkpoint is kept (the last one holds the optimiser: 3× the weights).
                    let last = dir.join(RunFiles::LAST);
                    std::fs::remove_file(&last).map_err(|e| Error::io(&last, e))?;
                }
                Ok(true)
            }
            Ok(_) => Ok(false),
            Err(e @ Error::NonFinite { .. }) => {
                let error = e.to_string().lines().next().unwrap_or_default().to_string();
                self.journal.append(&Event::Failed {
                    trial: job.trial,
                    rung: job.rung,
                    error: error.clone(),
                    search_seconds: self.search_seconds(state),
                })?;
                state.fail(job.trial, job.rung, &error);
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    /// Writes the trial table and the best recipe, and tells the observer.
    fn publish(&self, state: &State, observer: &mut dyn TuneObserver) -> Result<()> {
        let report = state.report(self.search_seconds(state));
        fsio::write_atomic(
            &self.out.join(TuneFiles::TRIALS),
            serde_json::to_string_pretty(&report)
                .expect("reports serialise")
                .as_bytes(),
        )?;
        if let Some(best) = report.best {
            let row = &report.trials[best];
            let config = apply(self.fixed, &state.params[best])?;
            let recipe = format!(
                "# Found by `tandem tune` over {} ({} trials, {:.0} s of training): trial {best},\n# validation rsum {:.1} at epoch {} of {}. Train with `tandem train --config` this file.\n{}",
                self.space.path.display(),
                report.trials.len(),
                report.search_seconds,
                row.val_rsum.unwrap_or(f64::NAN),
                row.best_epoch.unwrap_or(0),
                row.epochs,
                config.to_toml()
            );
            fsio::write_atomic(&self.out.join(TuneFiles::BEST), recipe.as_bytes())?;
        }
        observer.on_report(&report);
        Ok(())
    }
}

/// Whether a run got to `epochs`.
fn reached(outcome: &TrainOutcome, epochs: usize) -> bool {
    outcome.epochs_run >= epochs
}

/// Passes training progress on and pauses the run at the rung's epochs, or when the budget is
/// spent (after at least one epoch of this job, so every job makes progress).
struct RungStop<'a> {
    inner: &'a mut dyn Observer,
    target: usize,
    deadline: Option<Instant>,
    first: Option<usize>,
}

impl Observer for RungStop<'_> {
    fn on_start(&mut self, epochs: usize, steps_per_epoch: usize) {
        self.inner.on_start(epochs, steps_per_epoch);
    }
    fn on_step(&mut self, report: &StepReport) {
        self.inner.on_step(report);
    }
    fn on_epoch(&mut self, report: &EpochReport) {
        self.inner.on_epoch(report);
    }
    fn on_warning(&mut self, message: &str) {
        self.inner.on_warning(message);
    }
    fn stop_requested(&mut self, completed_epochs: usize) -> bool {
        let first = *self.first.get_or_insert(completed_epochs);
        let late = self.deadline.is_some_and(|d| Instant::now() >= d);
        completed_epochs >= self.target || (late && completed_epochs > first)
    }
}
