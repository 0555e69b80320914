//! `metrics.jsonl`: one JSON object per step, epoch, warning and skipped batch.

use std::io::Write;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// An append-only JSON-lines log. A resumed run first cuts it back to the length it had at
/// the checkpoint, so steps after that checkpoint are not logged twice.
pub(crate) struct MetricsLog {
    path: PathBuf,
    /// `None` for a log that keeps nothing (a data-parallel rank other than 0).
    file: Option<std::fs::File>,
}

impl MetricsLog {
    pub(crate) fn create(path: PathBuf) -> Result<Self> {
        let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
        Ok(MetricsLog {
            path,
            file: Some(file),
        })
    }

    /// A log that writes nothing.
    pub(crate) fn discard() -> Self {
        MetricsLog {
            path: PathBuf::new(),
            file: None,
        }
    }

    pub(crate) fn reopen_at(path: PathBuf, length: u64) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        file.set_len(length).map_err(|e| Error::io(&path, e))?;
        let mut file = file;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0))
            .map_err(|e| Error::io(&path, e))?;
        Ok(MetricsLog {
            path,
            file: Some(file),
        })
    }

    pub(crate) fn write(&mut self, value: serde_json::Value) -> Result<()> {
        match &mut self.file {
            Some(file) => writeln!(file, "{value}").map_err(|e| Error::io(&self.path, e)),
            None => Ok(()),
        }
    }

    /// The log's length once its lines are on disk (0 for a discarding log).
    pub(crate) fn len(&self) -> Result<u64> {
        let Some(file) = &self.file else {
            return Ok(0);
        };
        file.sync_data().map_err(|e| Error::io(&self.path, e))?;
        Ok(file.metadata().map_err(|e| Error::io(&self.path, e))?.len())
    }
}
