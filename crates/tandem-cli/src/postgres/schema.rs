//! Table names of a gallery and its row in `tandem_galleries`: which model embedded it.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use super::database::explain;

/// One row per pushed gallery.
pub const META_TABLE: &str = "tandem_galleries";
/// The index folder's model file, whose hash identifies the model.
pub const MODEL_FILE: &str = "model.safetensors";

/// The tables of gallery `name`.
#[derive(Debug, Clone)]
pub struct Names {
    pub gallery: String,
    pub images: String,
    pub captions: String,
}

impl Names {
    /// The tables of `gallery`: lowercase letters, digits and `_`, starting with a letter,
    /// at most 24 characters (PostgreSQL cuts names at 63 bytes, and a push's staging tables
    /// and their indexes add up to 39).
    ///
    /// # Errors
    /// Any other name, saying which characters are allowed.
    pub fn new(gallery: &str) -> Result<Self> {
        let good = gallery.len() <= 24
            && gallery.starts_with(|c: char| c.is_ascii_lowercase())
            && gallery
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !good {
            bail!(
                "--table `{gallery}`: a gallery name is lowercase letters, digits and `_`, starting with a letter, at most 24 characters"
            );
        }
        Ok(Names {
            gallery: gallery.to_string(),
            images: format!("{gallery}_images"),
            captions: format!("{gallery}_captions"),
        })
    }
}

/// What `tandem_galleries` records of a push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GalleryRecord {
    /// SHA-256 of the index folder's model file.
    pub model_sha256: String,
    /// SHA-256 over the index's embeddings, captions and image files, and the model's.
    pub index_digest: String,
    pub dim: usize,
    pub images: usize,
    pub captions: usize,
    /// The index folder pushed (absolute), where searches find the model by default.
    pub source: PathBuf,
    /// The index's text_encoder.json and image_encoder.json, as they were.
    pub text_encoder: Option<serde_json::Value>,
    pub image_encoder: Option<serde_json::Value>,
    /// `m` and `ef_construction` of the HNSW indexes; `None`: exact search only.
    pub hnsw: Option<[usize; 2]>,
    /// Whether the images have files (the index listed them).
    #[serde(default)]
    pub has_image_files: bool,
}

impl GalleryRecord {
    /// The record `index_dir` would get: hashes, counts and encoder records.
    ///
    /// # Errors
    /// An unreadable file of the folder, naming it.
    pub fn of(index_dir: &Path, dim: usize, images: usize, captions: usize) -> Result<Self> {
        let model_sha256 = tandem::fsio::sha256(&index_dir.join(MODEL_FILE))?;
        let mut digest = String::new();
        for file in [
            tandem::index::EMBEDDINGS,
            "captions.jsonl",
            "image_files.txt",
        ] {
            let path = index_dir.join(file);
            if path.exists() {
                digest.push_str(&tandem::fsio::sha256(&path)?);
            }
            digest.push(':');
        }
        digest.push_str(&model_sha256);
        let json = |file: &str| -> Result<Option<serde_json::Value>> {
            let path = index_dir.join(file);
            if !path.exists() {
                return Ok(None);
            }
            Ok(Some(serde_json::from_slice(&tandem::fsio::read(&path)?)?))
        };
        use sha2::Digest;
        Ok(GalleryRecord {
            index_digest: format!("{:x}", sha2::Sha256::digest(digest.as_bytes())),
            model_sha256,
            dim,
            images,
            captions,
            source: std::path::absolute(index_dir)?,
            text_encoder: json(tandem::text::TEXT_ENCODER_FILE)?,
            image_encoder: json(tandem::image::IMAGE_ENCODER_FILE)?,
            hnsw: None,
            has_image_files: index_dir.join(tandem::index::IMAGE_FILES).exists(),
        })
    }
}

/// Creates `tandem_galleries` if it is not there.
pub async fn ensure_meta_table(client: &Client, shown: &str) -> Result<()> {
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {META_TABLE} (
                name text PRIMARY KEY,
                model_sha256 text NOT NULL,
                dim integer NOT NULL,
                images bigint NOT NULL,
                captions bigint NOT NULL,
                record text NOT NULL,
                pushed_at timestamptz NOT NULL DEFAULT now())"
        ))
        .await
        .map_err(|e| explain(&e, shown, &format!("creating {META_TABLE}")))
}

/// The record of gallery `name`, `None` when there is no such gallery (or no table yet).
pub async fn read_record(
    client: &Client,
    shown: &str,
    name: &str,
) -> Result<Option<GalleryRecord>> {
    let rows = match client
        .query(
            &format!("SELECT record FROM {META_TABLE} WHERE name = $1"),
            &[&name],
        )
        .await
    {
        Ok(rows) => rows,
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => return Ok(None),
        Err(e) => return Err(explain(&e, shown, &format!("reading {META_TABLE}"))),
    };
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let text: String = row.get(0);
    Ok(Some(serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{shown}: the {META_TABLE} row of `{name}` is not a tandem record ({e})\n  fix: push the gallery again"
        )
    })?))
}

/// Galleries recorded in the database, by name.
pub async fn gallery_names(client: &Client) -> Vec<String> {
    match client
        .query(&format!("SELECT name FROM {META_TABLE} ORDER BY name"), &[])
        .await
    {
        Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
        Err(_) => Vec::new(),
    }
}

/// Makes sure the database has pgvector, creating the extension when this role may.
///
/// # Errors
/// The extension missing and not creatable, with how to create it.
pub async fn ensure_vector(client: &Client, shown: &str) -> Result<()> {
    let has = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector')",
            &[],
        )
        .await
        .map_err(|e| explain(&e, shown, "looking for the vector extension"))?;
    if has.get::<_, bool>(0) {
        return Ok(());
    }
    match client
        .batch_execute("CREATE EXTENSION IF NOT EXISTS vector")
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => bail!(
            "{shown}: the database has no `vector` extension (pgvector), and this role may not create it\n  fix: as a superuser, run `CREATE EXTENSION vector;` in this database once"
        ),
        Err(e)
            if e.code().is_some_and(|c| {
                *c == SqlState::FEATURE_NOT_SUPPORTED || *c == SqlState::UNDEFINED_FILE
            }) =>
        {
            bail!(
                "{shown}: the server has no pgvector installed ({})\n  fix: install pgvector on the server (packages postgresql-NN-pgvector, or from source), then `CREATE EXTENSION vector;`",
                e.as_db_error()
                    .map_or(String::new(), |d| d.message().to_string())
            )
        }
        Err(e) => Err(explain(&e, shown, "creating the vector extension")),
    }
}
