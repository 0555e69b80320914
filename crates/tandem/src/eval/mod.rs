//! Cross-modal retrieval evaluation: Recall@K both ways, median and mean rank, rsum, mAP@R and
//! NDCG@10, under a named protocol (full, Flickr 1K, COCO 1K in five folds, COCO 5K).

mod hubness;
mod nearest;
mod protocol;
mod recall;
mod report;
mod score;

pub use hubness::{Hubness, hubness};
pub use nearest::{top_k, top_k_in};
pub use protocol::Protocol;
pub use recall::{Ranks, ranks_from_embeddings, ranks_from_scores, ranks_on_threads};
pub use report::{RecallAt, RetrievalMetrics, average_precision_at_r, ndcg_at};
pub use score::{GALLERY_GROUP, Packed, QUERY_GROUP, dot, dot4, tile};
