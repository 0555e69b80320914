//! A searchable index of a trained model's embedding space: every image and caption embedded
//! once, stored with ids, caption text and the model, so that search needs neither the original
//! data nor the run folder.

mod ann;
mod hnsw;
mod store;

pub use ann::{GraphDigest, HnswGraph, HnswParams};
pub use store::{
    Approximate, Direction, EMBEDDINGS, GraphRecall, Hit, IMAGE_FILES, Index, SearchMode,
};
