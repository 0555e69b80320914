//! Cross-modal retrieval evaluation: Recall@K both ways, median and mean rank, rsum.

mod recall;
mod report;

pub use recall::{Ranks, ranks_from_embeddings, ranks_from_scores};
pub use report::RetrievalMetrics;
