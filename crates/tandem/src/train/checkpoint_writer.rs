//! Checkpoints written on a background thread, so the next epoch's steps do not wait for the
//! disk.
//!
//! The trainer takes a [`CheckpointContents`] snapshot (a host copy of the weights) at the end
//! of an epoch and hands it here; serialising, writing and fsync happen on the writer's thread
//! while training goes on. Files are still written atomically and in the order they were
//! queued (`best` before `last`), so a kill at any moment leaves the last checkpoint that was
//! *completed* intact, and resume continues from it exactly as before. At most one snapshot
//! waits behind the one being written: a disk slower than an epoch makes the trainer wait
//! rather than pile up copies of the model in memory.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, channel, sync_channel};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::model::CheckpointContents;

/// One checkpoint to write.
struct Job {
    path: PathBuf,
    contents: CheckpointContents,
}

/// A background thread that writes checkpoints in the order they are queued.
pub(crate) struct CheckpointWriter {
    jobs: Option<SyncSender<Job>>,
    /// In a mutex only so that the trainer is `Sync` (Python shares it between threads);
    /// every use has `&mut self`, so it is never contended.
    results: Mutex<Receiver<Result<()>>>,
    /// Jobs queued whose result has not been collected.
    pending: usize,
    /// The file of the latest job, for the message when the thread is lost.
    last_path: PathBuf,
    thread: Option<JoinHandle<()>>,
}

impl CheckpointWriter {
    /// Starts the writer thread.
    ///
    /// # Errors
    /// [`Error::Io`] when the operating system refuses a new thread.
    pub(crate) fn start() -> Result<Self> {
        let (jobs, queue) = sync_channel::<Job>(1);
        let (report, results) = channel();
        let thread = std::thread::Builder::new()
            .name("tandem-checkpoints".into())
            .spawn(move || {
                for job in queue {
                    if report.send(job.contents.write(&job.path)).is_err() {
                        return; // the trainer is gone; nobody to tell
                    }
                }
            })
            .map_err(|e| Error::io("the checkpoint writer thread", e))?;
        Ok(CheckpointWriter {
            jobs: Some(jobs),
            results: Mutex::new(results),
            pending: 0,
            last_path: PathBuf::new(),
            thread: Some(thread),
        })
    }

    /// Queues `contents` for `path`; waits only while another snapshot is already waiting.
    ///
    /// # Errors
    /// The error of an earlier write that failed since the last call (the file it names was
    /// not replaced).
    pub(crate) fn queue(&mut self, path: PathBuf, contents: CheckpointContents) -> Result<()> {
        self.collect_finished()?;
        let sender = self.jobs.as_ref().expect("the writer runs until dropped");
        self.last_path = path.clone();
        if sender.send(Job { path, contents }).is_err() {
            return Err(self.writer_lost());
        }
        self.pending += 1;
        Ok(())
    }

    /// Waits until every queued checkpoint is on disk.
    ///
    /// # Errors
    /// The first failed write among them.
    pub(crate) fn flush(&mut self) -> Result<()> {
        let mut first_error = None;
        while self.pending > 0 {
            let Ok(result) = self.results().recv() else {
                return Err(self.writer_lost());
            };
            self.pending -= 1;
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Collects the results of the writes that are done, without waiting.
    fn collect_finished(&mut self) -> Result<()> {
        while self.pending > 0 {
            match self.results().try_recv() {
                Ok(result) => {
                    self.pending -= 1;
                    result?;
                }
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) => return Err(self.writer_lost()),
            }
        }
        Ok(())
    }

    fn results(&mut self) -> &Receiver<Result<()>> {
        self.results
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The writer thread ended without reporting (it panicked).
    fn writer_lost(&mut self) -> Error {
        self.pending = 0;
        Error::io(
            self.last_path.clone(),
            std::io::Error::other(
                "the thread stopped unexpectedly; the run folder keeps the last checkpoint it completed",
            ),
        )
    }
}

impl Drop for CheckpointWriter {
    /// Finishes the queued writes (an interrupted run keeps its last epoch's checkpoint).
    fn drop(&mut self) {
        self.jobs = None;
        if let Err(e) = self.flush() {
            tracing::error!("{e}");
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::model::{TwoBranch, load_checkpoint};
    use candle_core::Device;

    fn small_config() -> Config {
        let mut config = Config::default();
        config.model.hidden = vec![8];
        config.model.dim = 4;
        config
    }

    fn contents(model: &TwoBranch, epoch: usize) -> CheckpointContents {
        CheckpointContents::of(model, &small_config(), epoch, &[], &[]).unwrap()
    }

    fn small_model() -> TwoBranch {
        TwoBranch::new(6, 5, &small_config().model, 1, &Device::Cpu).unwrap()
    }

    #[test]
    fn queued_checkpoints_are_on_disk_after_flush_in_queue_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last.safetensors");
        let model = small_model();
        let mut writer = CheckpointWriter::start().unwrap();
        for epoch in 1..=5 {
            writer.queue(path.clone(), contents(&model, epoch)).unwrap();
        }
        writer.flush().unwrap();
        assert_eq!(load_checkpoint(&path, &Device::Cpu).unwrap().epoch, 5);
    }

    #[test]
    fn a_snapshot_does_not_see_later_updates_of_the_weights() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("best.safetensors");
        let model = small_model();
        let (_, var, _) = &model.named()[0];
        let before: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let snapshot = contents(&model, 1);
        var.set(&var.as_tensor().affine(0.0, 7.0).unwrap()).unwrap();
        let mut writer = CheckpointWriter::start().unwrap();
        writer.queue(path.clone(), snapshot).unwrap();
        drop(writer); // dropping finishes the queued write
        let saved = load_checkpoint(&path, &Device::Cpu).unwrap();
        let (_, saved_var, _) = &saved.model.named()[0];
        let after: Vec<f32> = saved_var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(after, before);
        assert!(after.iter().any(|&x| x != 7.0));
    }

    #[test]
    fn a_failed_write_is_reported_naming_the_file_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-folder/last.safetensors");
        let good = dir.path().join("last.safetensors");
        let model = small_model();
        let mut writer = CheckpointWriter::start().unwrap();
        writer.queue(missing, contents(&model, 1)).unwrap();
        let error = writer.flush().unwrap_err().to_string();
        assert!(error.contains("no-such-folder"), "{error}");
        writer.queue(good.clone(), contents(&model, 2)).unwrap();
        writer.flush().unwrap();
        assert_eq!(load_checkpoint(&good, &Device::Cpu).unwrap().epoch, 2);
    }
}
