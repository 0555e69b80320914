//! A dataset's feature rows, wherever they live: read into memory, or left on disk and read
//! by position batch by batch ([`StreamedRows`]). Both give the same values for the same rows,
//! so training on either is bit for bit the same.

use std::sync::Arc;

use crate::data::{Matrix, StreamedRows};
use crate::error::{Error, Result};

/// Where a dataset's features are kept while it is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Residency {
    /// In memory when the feature files fit in half of the memory available, else streamed.
    #[default]
    Auto,
    /// Read whole into memory.
    Memory,
    /// Left on disk; each batch reads its rows (`.npy` files only).
    Stream,
}

impl Residency {
    /// The choices, for help texts.
    pub const NAMES: [&'static str; 3] = ["auto", "memory", "stream"];

    /// Parses `auto`, `memory` or `stream`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the choices.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "auto" => Ok(Residency::Auto),
            "memory" => Ok(Residency::Memory),
            "stream" => Ok(Residency::Stream),
            other => Err(Error::Config(format!(
                "features `{other}`: choose one of {}",
                Self::NAMES.join(", ")
            ))),
        }
    }

    /// Whether features stored in `bytes` bytes (as `f32`) are streamed.
    pub fn streams(self, bytes: u64) -> bool {
        match self {
            Residency::Memory => false,
            Residency::Stream => true,
            Residency::Auto => available_memory().is_some_and(|free| bytes > free / 2),
        }
    }
}

/// The memory the kernel says new allocations can use (`MemAvailable`), where it says so.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Feature rows, one per item, in memory or on disk. Cheap to clone (the rows are shared), so
/// a read-ahead thread can hold them too.
#[derive(Debug, Clone)]
pub enum Features {
    /// Every row in memory.
    Memory(Arc<Matrix>),
    /// Rows read from `.npy` files when gathered.
    Streamed(Arc<StreamedRows>),
}

impl From<Matrix> for Features {
    fn from(matrix: Matrix) -> Self {
        Features::Memory(Arc::new(matrix))
    }
}

impl Features {
    /// Number of rows (items).
    pub fn rows(&self) -> usize {
        match self {
            Features::Memory(m) => m.rows,
            Features::Streamed(s) => s.rows(),
        }
    }

    /// Features per row.
    pub fn cols(&self) -> usize {
        match self {
            Features::Memory(m) => m.cols,
            Features::Streamed(s) => s.cols(),
        }
    }

    /// Whether the rows stay on disk.
    pub fn is_streamed(&self) -> bool {
        matches!(self, Features::Streamed(_))
    }

    /// The matrix, when the rows are in memory.
    pub fn in_memory(&self) -> Option<&Matrix> {
        match self {
            Features::Memory(m) => Some(m),
            Features::Streamed(_) => None,
        }
    }

    /// The rows `ids`, in that order, as one row-major buffer.
    ///
    /// # Shapes
    /// Returns `[ids.len() * cols]`.
    ///
    /// # Errors
    /// For streamed rows, a failed read or a non-finite value, naming the file.
    pub fn gather(&self, ids: &[u32]) -> Result<Vec<f32>> {
        match self {
            Features::Memory(m) => Ok(m.gather(ids)),
            Features::Streamed(s) => s.gather(ids),
        }
    }

    /// All rows in memory: the matrix itself, or every streamed row read (for callers that
    /// need the whole matrix at once, e.g. an export).
    ///
    /// # Errors
    /// As [`Features::gather`].
    pub fn to_matrix(&self) -> Result<Arc<Matrix>> {
        match self {
            Features::Memory(m) => Ok(m.clone()),
            Features::Streamed(s) => {
                let ids: Vec<u32> = (0..s.rows() as u32).collect();
                Ok(Arc::new(Matrix {
                    rows: s.rows(),
                    cols: s.cols(),
                    data: s.gather(&ids)?,
                }))
            }
        }
    }
}
