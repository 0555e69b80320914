//! Galleries in PostgreSQL with pgvector: `tandem index push` loads an index's two galleries
//! into tables, `tandem search --postgres` and `tandem serve --backend` answer through them.
//!
//! One gallery `NAME` is two tables, `NAME_images (id, file, caption, emb)` and
//! `NAME_captions (id, image, text, emb)`, with `emb vector(dim)` holding tandem's
//! L2-normalised embeddings, an HNSW index on `vector_ip_ops` (inner product, tandem's score),
//! and one row of `tandem_galleries` naming the model that embedded them.

mod database;
mod filter;
pub mod gallery;
mod push;
mod schema;
mod url;
mod vector;

pub use database::Database;
pub use filter::Filter;
pub use gallery::PgGallery;
pub use push::{HnswOptions, push};
pub use schema::MODEL_FILE;
pub use url::redact;
