//! Loading paired image–text features, splitting them by image and batching them.

mod batcher;
mod caption_sources;
mod captions;
mod dataset;
mod features;
mod hdf5;
pub mod mat;
pub mod npy;
pub mod npy_rows;
mod safetensors;
mod shards;
mod split;
mod streamed;
mod synthetic;

pub use self::safetensors::read_dataset as parse_safetensors_dataset;
pub use batcher::{Batch, Batcher};
pub use caption_sources::{CaptionSource, read_caption_source};
pub use captions::{parse_captions, read_caption_texts, read_captions};
pub use dataset::PairedDataset;
pub use features::{Features, Residency};
pub use shards::shard_name;
pub use split::{SplitView, Splits};
pub use streamed::StreamedRows;
pub use synthetic::LatentRows;

/// A dense row-major `f32` matrix of features, one row per item.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// Number of rows (items).
    pub rows: usize,
    /// Number of columns (feature dimension).
    pub cols: usize,
    /// `rows * cols` values, row after row.
    pub data: Vec<f32>,
}

impl Matrix {
    /// The features of row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// The rows `ids`, in that order, as one new row-major buffer.
    pub fn gather(&self, ids: &[u32]) -> Vec<f32> {
        let mut out = Vec::with_capacity(ids.len() * self.cols);
        for &i in ids {
            out.extend_from_slice(self.row(i as usize));
        }
        out
    }
}
