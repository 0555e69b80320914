//! `tandem.Trainer`: the library's steppable trainer, for a training loop written in Python.
//! `tandem.train` runs the same trainer to the end.

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tandem::data::PairedDataset;
use tandem::train::{StepEvent, Trainer};

use crate::arrays::to_python;
use crate::dataset::Dataset;
use crate::errors::IntoPy;
use crate::training::{epoch_event, new_run_config, outcome_dict, step_event, warn};

/// A training run driven step by step: `step()` until it returns None, then `end_epoch()`
/// (validation and checkpoints), while not `done`; then `finish()`. Stopping between epochs
/// is a pause that `Trainer.resume` continues exactly.
#[pyclass(module = "tandem", name = "Trainer")]
pub struct PyTrainer {
    inner: Option<Trainer<Arc<PairedDataset>>>,
    run: PathBuf,
}

impl PyTrainer {
    fn trainer(&mut self) -> PyResult<&mut Trainer<Arc<PairedDataset>>> {
        self.inner.as_mut().ok_or_else(|| {
            PyRuntimeError::new_err(format!(
                "{}: this Trainer has finished\n  fix: Trainer.resume(dataset, run) continues the run",
                self.run.display()
            ))
        })
    }
}

#[pymethods]
impl PyTrainer {
    /// Starts a new run in `out` (config, split and metrics log are written at once).
    #[new]
    #[pyo3(signature = (dataset, out, config=None, sets=Vec::new(), overwrite=false))]
    fn new(
        py: Python<'_>,
        dataset: &Dataset,
        out: PathBuf,
        config: Option<PathBuf>,
        sets: Vec<String>,
        overwrite: bool,
    ) -> PyResult<Self> {
        let config = new_run_config(config.as_deref(), &sets, &out, overwrite)?;
        let data = dataset.inner.clone();
        let trainer = py
            .detach(|| Trainer::start(data, &config, &out, &tandem::default_device()?))
            .py_err()?;
        Ok(PyTrainer {
            inner: Some(trainer),
            run: out,
        })
    }

    /// Continues the run in `run` from its last checkpoint; `epochs` extends (or shortens) it.
    #[staticmethod]
    #[pyo3(signature = (dataset, run, epochs=None))]
    fn resume(
        py: Python<'_>,
        dataset: &Dataset,
        run: PathBuf,
        epochs: Option<usize>,
    ) -> PyResult<Self> {
        let data = dataset.inner.clone();
        let trainer = py
            .detach(|| Trainer::resume(data, &run, epochs, &tandem::default_device()?))
            .py_err()?;
        Ok(PyTrainer {
            inner: Some(trainer),
            run,
        })
    }

    /// The epochs planned (`train.epochs`).
    #[getter]
    fn epochs(&mut self) -> PyResult<usize> {
        Ok(self.trainer()?.epochs())
    }

    /// Epochs completed and checkpointed.
    #[getter]
    fn completed_epochs(&mut self) -> PyResult<usize> {
        Ok(self.trainer()?.completed_epochs())
    }

    /// Optimisation steps in each epoch.
    #[getter]
    fn steps_per_epoch(&mut self) -> PyResult<usize> {
        Ok(self.trainer()?.steps_per_epoch())
    }

    /// Whether every planned epoch is trained, or early stopping ended the run.
    #[getter]
    fn done(&mut self) -> PyResult<bool> {
        Ok(self.trainer()?.is_done())
    }

    /// Trains the next batch (starting the next epoch when none is in progress) and returns
    /// the step's dict, as a `train` callback gets it; None once the epoch's batches are done
    /// (call `end_epoch`). A skipped non-finite batch returns `{"kind": "skipped", ...}`.
    /// Warnings (a collapsing space, a skipped batch) go to `warnings.warn`.
    fn step<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let trainer = self.trainer()?;
        let Some(event) = py.detach(|| trainer.step()).py_err()? else {
            return Ok(None);
        };
        match event {
            StepEvent::Trained { report, warning } => {
                if let Some(message) = warning {
                    warn(py, &message)?;
                }
                Ok(Some(step_event(py, &report)?.into_any()))
            }
            StepEvent::Skipped { warning } => {
                warn(py, &warning)?;
                let d = pyo3::types::PyDict::new(py);
                d.set_item("kind", "skipped")?;
                d.set_item("message", warning)?;
                Ok(Some(d.into_any()))
            }
        }
    }

    /// Ends the epoch whose batches are done: validation, the best checkpoint when it
    /// improved, and the resumable last checkpoint, written every `train.checkpoint_seconds`
    /// and after the last epoch (`checkpoint`, `finish` and deleting the trainer write them).
    /// Returns the epoch's dict.
    fn end_epoch<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let trainer = self.trainer()?;
        let report = py.detach(|| trainer.end_epoch()).py_err()?;
        Ok(epoch_event(py, &report)?.into_any())
    }

    /// The validation metrics of the model as it is now (a dict, as `tandem.evaluate`
    /// returns), or None without a validation split.
    fn validate<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let trainer = self.trainer()?;
        let metrics = py.detach(|| trainer.validate()).py_err()?;
        metrics.map(|m| to_python(py, &m)).transpose()
    }

    /// Writes the resumable last checkpoint (between epochs only) and returns once it and the
    /// checkpoints `end_epoch` took are on disk.
    fn checkpoint(&mut self, py: Python<'_>) -> PyResult<()> {
        let trainer = self.trainer()?;
        py.detach(|| trainer.checkpoint()).py_err()
    }

    /// Ends the run and returns what `tandem.train` returns; `paused`: stopped before
    /// `train.epochs` on purpose.
    #[pyo3(signature = (paused=false))]
    fn finish<'py>(&mut self, py: Python<'py>, paused: bool) -> PyResult<Bound<'py, PyAny>> {
        self.trainer()?;
        let trainer = self.inner.take().expect("checked above");
        let outcome = trainer.finish(paused).py_err()?;
        outcome_dict(py, &outcome, &self.run)
    }
}
