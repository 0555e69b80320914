//! The feature rows of an epoch's batches, gathered on a background thread a few batches ahead
//! of the step. For features streamed from disk this hides the reads behind the step's
//! arithmetic; for features in memory it hides the copy. The rows are the same either way, so
//! training is bit for bit what it would be without it.

use std::sync::Mutex;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use crate::data::{Batch, Features};
use crate::error::{Error, Result};

/// Batches gathered ahead of the one being trained: enough to cover one slow read, few
/// enough that memory stays a few batches (about 32 MB each at the paper's size).
pub(crate) const READ_AHEAD: usize = 2;

/// One batch's feature rows, row-major, in the batch's order.
pub(crate) struct BatchRows {
    /// `[image_rows * d_image]`.
    pub images: Vec<f32>,
    /// `[text_rows * d_text]`.
    pub texts: Vec<f32>,
    pub image_rows: usize,
    pub text_rows: usize,
}

/// A thread gathering the rows of a list of batches, in order.
pub(crate) struct ReadAhead {
    /// In a mutex only so that the trainer is `Sync` (Python shares it between threads);
    /// every use has `&mut self`, so it is never contended.
    rows: Option<Mutex<Receiver<Result<BatchRows>>>>,
    thread: Option<JoinHandle<()>>,
}

impl ReadAhead {
    /// Starts gathering `batches` from `images` and `texts`, at most `depth` batches ahead.
    ///
    /// # Errors
    /// [`Error::Io`] when the operating system refuses a new thread.
    pub(crate) fn start(
        images: Features,
        texts: Features,
        batches: Vec<Batch>,
        depth: usize,
    ) -> Result<Self> {
        let (sender, rows) = sync_channel(depth.max(1));
        let thread = std::thread::Builder::new()
            .name("tandem-read-ahead".into())
            .spawn(move || {
                for batch in &batches {
                    let gathered = images.gather(&batch.images).and_then(|images| {
                        Ok(BatchRows {
                            images,
                            texts: texts.gather(&batch.texts)?,
                            image_rows: batch.images.len(),
                            text_rows: batch.texts.len(),
                        })
                    });
                    let failed = gathered.is_err();
                    // A send fails once the trainer has dropped the epoch: stop reading.
                    if sender.send(gathered).is_err() || failed {
                        return;
                    }
                }
            })
            .map_err(|e| Error::io("the read-ahead thread", e))?;
        Ok(ReadAhead {
            rows: Some(Mutex::new(rows)),
            thread: Some(thread),
        })
    }

    /// The rows of the next batch, waiting for them if they are not read yet.
    ///
    /// # Errors
    /// The read's error (a file that cannot be read, a non-finite value), or [`Error::Config`]
    /// when every batch was already taken.
    pub(crate) fn next(&mut self) -> Result<BatchRows> {
        let rows = self.rows.as_mut().expect("receiver lives until drop");
        let received = rows.get_mut().unwrap_or_else(|e| e.into_inner()).recv();
        match received {
            Ok(rows) => rows,
            Err(_) => {
                // The thread ended: every batch was taken, or it panicked (re-raised here).
                if let Some(thread) = self.thread.take()
                    && let Err(panic) = thread.join()
                {
                    std::panic::resume_unwind(panic);
                }
                Err(Error::Config(
                    "the epoch's batches are all read; a new epoch starts a new read-ahead".into(),
                ))
            }
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        // Dropping the receiver first ends a thread blocked on a full queue.
        self.rows.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Matrix, StreamedRows, npy};
    use std::sync::Arc;

    fn batch(images: &[u32], texts: &[u32]) -> Batch {
        Batch {
            images: images.to_vec(),
            texts: texts.to_vec(),
            text_image: (0..texts.len() as u32)
                .map(|t| t % images.len() as u32)
                .collect(),
        }
    }

    #[test]
    fn rows_come_in_batch_order_and_a_bad_read_ends_the_stream_with_its_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("texts.npy");
        let mut values: Vec<f32> = (0..12).map(|v| v as f32).collect();
        values[11] = f32::INFINITY; // row 5
        npy::write_f32(&path, 6, 2, &values).unwrap();
        let texts = Features::Streamed(Arc::new(StreamedRows::open(&[path]).unwrap()));
        let images = Features::from(Matrix {
            rows: 3,
            cols: 1,
            data: vec![10., 11., 12.],
        });
        let batches = vec![
            batch(&[2, 0], &[1, 0, 3, 2]),
            batch(&[1, 2], &[4, 2, 5, 0]),
            batch(&[0, 1], &[0, 1, 2, 3]),
        ];
        let mut ahead = ReadAhead::start(images, texts, batches, 1).unwrap();
        let first = ahead.next().unwrap();
        assert_eq!(first.images, vec![12., 10.]);
        assert_eq!(first.texts, vec![2., 3., 0., 1., 6., 7., 4., 5.]);
        let e = ahead.next().err().unwrap().to_string();
        assert!(e.contains("texts.npy") && e.contains("row 5"), "{e}");
        assert!(ahead.next().is_err(), "nothing is read after a failure");
    }

    #[test]
    fn dropping_it_mid_epoch_stops_the_thread() {
        let images = Features::from(Matrix {
            rows: 2,
            cols: 1,
            data: vec![0., 1.],
        });
        let batches = vec![batch(&[0, 1], &[0, 1]); 100];
        let mut ahead = ReadAhead::start(images.clone(), images, batches, 2).unwrap();
        assert_eq!(ahead.next().unwrap().texts, vec![0., 1.]);
        drop(ahead); // returns: the thread blocked on the full queue sees the receiver gone
    }
}
