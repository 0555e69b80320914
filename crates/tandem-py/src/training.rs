//! `tandem.train` and `tandem.resume`: the library's trainer with the GIL released, calling
//! back into Python after every step and epoch.

use std::path::{Path, PathBuf};

use pyo3::exceptions::PyFileExistsError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tandem::config::Config;
use tandem::train::{EpochReport, Observer, RunFiles, StepReport, TrainOutcome};

use crate::arrays::to_python;
use crate::dataset::Dataset;
use crate::errors::{IntoPy, to_py};

/// Trains a two-branch model on `dataset`'s training split into the run folder `out` and
/// returns what the run achieved (best epoch, its validation metrics, epochs, steps, seconds).
///
/// `config`: a TOML file, or None for the reference recipe; `sets`: `"key=value"` overrides
/// (`"train.epochs=5"`). `callback(event)` gets a dict after every step (`kind == "step"`) and
/// epoch (`kind == "epoch"`); returning `False` ends the run after the current epoch (resumable).
/// Ctrl-C interrupts within a step; the last epoch's checkpoint stays. `devices` (`"cpu"`,
/// `"cuda:0"`, …): one data-parallel rank on each when more than one, the one alone, or the
/// default device when empty.
#[pyfunction]
#[pyo3(signature = (dataset, out, config=None, sets=Vec::new(), overwrite=false, callback=None, devices=Vec::new()))]
#[allow(clippy::too_many_arguments)]
pub fn train<'py>(
    py: Python<'py>,
    dataset: &Dataset,
    out: PathBuf,
    config: Option<PathBuf>,
    sets: Vec<String>,
    overwrite: bool,
    callback: Option<Py<PyAny>>,
    devices: Vec<String>,
) -> PyResult<Bound<'py, PyAny>> {
    let devices = devices
        .iter()
        .map(|name| tandem::parse_device(name))
        .collect::<tandem::Result<Vec<_>>>()
        .py_err()?;
    let config = new_run_config(config.as_deref(), &sets, &out, overwrite)?;
    let data = dataset.inner.clone();
    let mut observer = PyObserver::new(callback);
    let outcome = py
        .detach(|| tandem::train::train_on_devices(&data, &config, &out, &devices, &mut observer));
    finish(py, outcome, observer, &out)
}

/// Continues the run in `run` from its last checkpoint, exactly as if it had never stopped;
/// `epochs` extends (or shortens) it. Returns what [`train`] returns.
#[pyfunction]
#[pyo3(signature = (dataset, run, epochs=None, callback=None))]
pub fn resume<'py>(
    py: Python<'py>,
    dataset: &Dataset,
    run: PathBuf,
    epochs: Option<usize>,
    callback: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let data = dataset.inner.clone();
    let mut observer = PyObserver::new(callback);
    let outcome = py.detach(|| {
        let device = tandem::default_device()?;
        tandem::train::resume(&data, &run, epochs, &device, &mut observer)
    });
    finish(py, outcome, observer, &run)
}

/// The resolved config as TOML: the reference recipe, a file, then `sets`.
#[pyfunction]
#[pyo3(signature = (config=None, sets=Vec::new()))]
pub fn default_config(config: Option<PathBuf>, sets: Vec<String>) -> PyResult<String> {
    Ok(Config::resolve(config.as_deref(), &sets)
        .py_err()?
        .to_toml())
}

/// The outcome as a dict, or the error: the callback's own exception (or Ctrl-C) first.
fn finish<'py>(
    py: Python<'py>,
    outcome: tandem::Result<TrainOutcome>,
    observer: PyObserver,
    run: &Path,
) -> PyResult<Bound<'py, PyAny>> {
    if let Some(e) = observer.error {
        return Err(e);
    }
    let o = outcome.map_err(to_py)?;
    outcome_dict(py, &o, run)
}

/// What a run achieved, as the dict `train`, `resume` and `Trainer.finish` return.
pub(crate) fn outcome_dict<'py>(
    py: Python<'py>,
    o: &TrainOutcome,
    run: &Path,
) -> PyResult<Bound<'py, PyAny>> {
    let dict = PyDict::new(py);
    dict.set_item("run", run.to_string_lossy().into_owned())?;
    dict.set_item("best_epoch", o.best_epoch)?;
    dict.set_item(
        "best_val",
        o.best_val.as_ref().map(|m| to_python(py, m)).transpose()?,
    )?;
    dict.set_item("epochs_run", o.epochs_run)?;
    dict.set_item("steps", o.steps)?;
    dict.set_item("stopped_early", o.stopped_early)?;
    dict.set_item("paused", o.paused)?;
    dict.set_item("skipped_batches", o.skipped_batches)?;
    dict.set_item("seconds", o.seconds)?;
    Ok(dict.into_any())
}

/// Forwards the trainer's reports to a Python callable (taking the GIL for each), and checks
/// for Ctrl-C after every step.
struct PyObserver {
    callback: Option<Py<PyAny>>,
    /// The first exception raised by the callback, or KeyboardInterrupt.
    error: Option<PyErr>,
    /// The callback returned False.
    stop: bool,
}

impl PyObserver {
    fn new(callback: Option<Py<PyAny>>) -> Self {
        PyObserver {
            callback,
            error: None,
            stop: false,
        }
    }

    fn deliver(&mut self, event: impl FnOnce(Python<'_>) -> PyResult<Bound<'_, PyDict>>) {
        if self.error.is_some() {
            return;
        }
        let result = Python::attach(|py| -> PyResult<bool> {
            py.check_signals()?;
            let Some(callback) = &self.callback else {
                return Ok(false);
            };
            let answer = callback.call1(py, (event(py)?,))?;
            // Only an explicit False stops: a callback that returns nothing goes on.
            Ok(answer.bind(py).is_instance_of::<pyo3::types::PyBool>()
                && !answer.extract::<bool>(py)?)
        });
        match result {
            Ok(stop) => self.stop |= stop,
            Err(e) => self.error = Some(e),
        }
    }
}

impl Observer for PyObserver {
    fn on_step(&mut self, r: &StepReport) {
        self.deliver(|py| step_event(py, r));
    }

    fn on_epoch(&mut self, r: &EpochReport) {
        self.deliver(|py| epoch_event(py, r));
    }

    fn on_warning(&mut self, message: &str) {
        let _ = Python::attach(|py| warn(py, message));
    }

    fn stop_requested(&mut self, _completed_epochs: usize) -> bool {
        self.stop || self.error.is_some()
    }

    fn interrupt_requested(&mut self) -> bool {
        self.error.is_some()
    }
}

/// A step's report as the dict callbacks and `Trainer.step` return.
pub(crate) fn step_event<'py>(py: Python<'py>, r: &StepReport) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("kind", "step")?;
    d.set_item("epoch", r.epoch + 1)?;
    d.set_item("step", r.step)?;
    d.set_item("step_in_epoch", r.step_in_epoch)?;
    d.set_item("steps_in_epoch", r.steps_in_epoch)?;
    d.set_item("lr", r.lr)?;
    d.set_item("loss", r.loss)?;
    let terms = PyDict::new(py);
    for (name, value, active) in &r.terms {
        terms.set_item(name, (value, active))?;
    }
    d.set_item("terms", terms)?;
    d.set_item("logit_scale", r.logit_scale)?;
    Ok(d)
}

/// An epoch's report as the dict callbacks and `Trainer.end_epoch` return.
pub(crate) fn epoch_event<'py>(py: Python<'py>, r: &EpochReport) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("kind", "epoch")?;
    d.set_item("epoch", r.epoch + 1)?;
    d.set_item("epochs", r.epochs)?;
    d.set_item("train_loss", r.train_loss)?;
    d.set_item("val", r.val.as_ref().map(|m| to_python(py, m)).transpose()?)?;
    d.set_item("improved", r.improved)?;
    d.set_item("checkpointed", r.checkpointed)?;
    d.set_item("seconds", r.seconds)?;
    Ok(d)
}

/// A Python `warnings.warn`, as the trainer's warnings reach Python users.
pub(crate) fn warn(py: Python<'_>, message: &str) -> PyResult<()> {
    py.import("warnings")?
        .call_method1("warn", (message.to_string(),))?;
    Ok(())
}

/// The config of a new run in `out`: resolved, and refused when `out` already holds a run
/// unless `overwrite`.
pub(crate) fn new_run_config(
    file: Option<&Path>,
    sets: &[String],
    out: &Path,
    overwrite: bool,
) -> PyResult<Config> {
    let config = Config::resolve(file, sets).py_err()?;
    if RunFiles::holds_run(out) && !overwrite {
        return Err(PyFileExistsError::new_err(format!(
            "{}: this folder already holds a run\n  fix: choose another out, or pass overwrite=True to replace it",
            out.display()
        )));
    }
    Ok(config)
}
