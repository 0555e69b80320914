//! The one error type of the library.
//!
//! Every variant that concerns a file names the file, says what is wrong and what to do, so
//! that the CLI can print it as is.

use std::path::PathBuf;

/// Errors returned by tandem.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        #[source]
        /// What the operating system reported.
        source: std::io::Error,
    },

    /// A file exists but its content is not what tandem expects.
    #[error("{path}: {problem}\n  fix: {fix}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with its content.
        problem: String,
        /// What to do about it.
        fix: String,
    },

    /// The arrays of a dataset disagree with one another (shapes, ids, splits).
    #[error("dataset {path}: {problem}\n  fix: {fix}")]
    BadDataset {
        /// The dataset folder.
        path: PathBuf,
        /// Which arrays disagree, and how.
        problem: String,
        /// What to do about it.
        fix: String,
    },

    /// A configuration value is invalid or unknown.
    #[error("config: {0}")]
    Config(String),

    /// A checkpoint cannot be used with the data it is given.
    #[error("checkpoint {path}: {problem}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// Why it does not fit.
        problem: String,
    },

    /// Training produced a non-finite loss or gradient. The last good checkpoint is untouched.
    #[error(
        "training diverged at step {step}: {what} is {value} (batch captions {captions})\n  fix: lower the learning rate, check those captions' and their images' features for extreme values, or pass --skip-nonfinite to skip such batches"
    )]
    NonFinite {
        /// The optimiser step (counted from 1) whose batch gave the value.
        step: usize,
        /// `"<term> loss"` or `"gradient of <tensor>"`.
        what: String,
        /// The non-finite value (NaN or ±inf).
        value: f64,
        /// Dataset rows of the batch's captions, abbreviated.
        captions: String,
    },

    /// The caller interrupted training mid-epoch; the run folder holds the checkpoint of the
    /// last whole epoch.
    #[error(
        "training interrupted during epoch {epoch}; the run folder keeps the checkpoint of the epoch before, and resume continues from it"
    )]
    Interrupted {
        /// 1-based epoch that was abandoned.
        epoch: usize,
    },

    /// An error from the tensor library.
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

/// `Result` with tandem's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A file whose content is wrong.
    pub fn bad_file(
        path: impl Into<PathBuf>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Error::BadFile {
            path: path.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    /// A dataset whose arrays disagree.
    pub fn bad_dataset(
        path: impl Into<PathBuf>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Error::BadDataset {
            path: path.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}
