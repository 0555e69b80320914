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
//!
//! A snapshot can also be *held* instead of queued ([`CheckpointWriter::hold`]): the trainer
//! takes one every epoch but writes them only every `train.checkpoint_seconds`, because a
//! write is not free even off the step's thread. On two cores the page-cache copy of a
//! paper-size `last.safetensors` (273 MB) shares a core with one of the product's two
//! threads, and the product waits for its slower half: the step that overlaps it took twice
//! as long. Held snapshots are released, best before last, when the trainer says so, when
//! the run finishes and when the writer is dropped (an interrupt), so only a kill loses them.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, channel, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::model::CheckpointContents;

/// One checkpoint to write.
struct Job {
    path: PathBuf,
    contents: CheckpointContents,
}

/// Which held snapshot: the best model is released before the resumable checkpoint, whose
/// training state names the best epoch, so that a kill between the two never leaves a
/// `last` whose best is not on disk.
#[derive(Clone, Copy)]
pub(crate) enum Held {
    Best = 0,
    Last = 1,
}

/// A background thread that writes checkpoints in the order they are queued.
pub(crate) struct CheckpointWriter {
    jobs: Option<SyncSender<Job>>,
    /// Snapshots taken but not yet queued, by [`Held`] slot.
    held: [Option<Job>; 2],
    /// When the writer started or last released its held snapshots.
    released_at: Instant,
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
            held: [None, None],
            released_at: Instant::now(),
            results: Mutex::new(results),
            pending: 0,
            last_path: PathBuf::new(),
            thread: Some(thread),
        })
    }

    /// Hands `job` to the thread.
    fn send(&mut self, job: Job) -> Result<()> {
        let sender = self.jobs.as_ref().expect("the writer runs until dropped");
        self.last_path = job.path.clone();
        if sender.send(job).is_err() {
            return Err(self.writer_lost());
        }
        self.pending += 1;
        Ok(())
    }

    /// Keeps `contents` for `path` until [`CheckpointWriter::release`], replacing an older
    /// snapshot held in the same slot (nothing is written for it).
    pub(crate) fn hold(&mut self, slot: Held, path: PathBuf, contents: CheckpointContents) {
        self.held[slot as usize] = Some(Job { path, contents });
    }

    /// Queues the held snapshots, best before last; waits only while another snapshot is
    /// already waiting.
    ///
    /// # Errors
    /// The error of an earlier write that failed since the last call (the file it names was
    /// not replaced); the snapshots then stay held.
    pub(crate) fn release(&mut self) -> Result<()> {
        self.collect_finished()?;
        self.released_at = Instant::now();
        for slot in 0..self.held.len() {
            if let Some(job) = self.held[slot].take() {
                self.send(job)?;
            }
        }
        Ok(())
    }

    /// Time since the writer started or last released its held snapshots.
    pub(crate) fn since_release(&self) -> Duration {
        self.released_at.elapsed()
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
    /// Writes the held snapshots and finishes the queued writes (an interrupted run keeps its
    /// last epoch's checkpoint).
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            tracing::error!("{e}");
        }
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
    fn released_checkpoints_are_on_disk_after_flush_in_release_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last.safetensors");
        let model = small_model();
        let mut writer = CheckpointWriter::start().unwrap();
        for epoch in 1..=5 {
            writer.hold(Held::Last, path.clone(), contents(&model, epoch));
            writer.release().unwrap();
        }
        writer.flush().unwrap();
        assert_eq!(load_checkpoint(&path, &Device::Cpu).unwrap().epoch, 5);
    }

    /// A held snapshot is replaced by the next one of its slot without being written, and
    /// nothing is written before a release; a release writes best before last, whatever the
    /// order they were held in; dropping the writer writes what it holds.
    #[test]
    fn held_snapshots_wait_for_a_release_best_first() {
        let dir = tempfile::tempdir().unwrap();
        let (best, last) = (dir.path().join("best"), dir.path().join("last"));
        let model = small_model();
        let mut writer = CheckpointWriter::start().unwrap();
        writer.hold(Held::Last, last.clone(), contents(&model, 1));
        writer.hold(Held::Best, best.clone(), contents(&model, 1));
        writer.hold(Held::Last, last.clone(), contents(&model, 2));
        writer.flush().unwrap();
        assert!(!best.exists() && !last.exists(), "written before a release");
        writer.release().unwrap();
        writer.flush().unwrap();
        let modified = |p: &PathBuf| std::fs::metadata(p).unwrap().modified().unwrap();
        assert!(modified(&best) <= modified(&last), "best is written first");
        assert_eq!(load_checkpoint(&best, &Device::Cpu).unwrap().epoch, 1);
        assert_eq!(load_checkpoint(&last, &Device::Cpu).unwrap().epoch, 2);
        writer.hold(Held::Last, last.clone(), contents(&model, 3));
        drop(writer);
        assert_eq!(load_checkpoint(&last, &Device::Cpu).unwrap().epoch, 3);
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
        writer.hold(Held::Best, path.clone(), snapshot);
        drop(writer); // dropping writes what it holds
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
        writer.hold(Held::Last, missing, contents(&model, 1));
        writer.release().unwrap();
        let error = writer.flush().unwrap_err().to_string();
        assert!(error.contains("no-such-folder"), "{error}");
        writer.hold(Held::Last, good.clone(), contents(&model, 2));
        writer.release().unwrap();
        writer.flush().unwrap();
        assert_eq!(load_checkpoint(&good, &Device::Cpu).unwrap().epoch, 2);
    }
}
