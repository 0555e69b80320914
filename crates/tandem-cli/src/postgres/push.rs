//! `tandem index push`: an index's galleries into PostgreSQL, swapped in whole.
//!
//! Both galleries are copied (binary COPY, the two tables at once on two connections) into
//! staging tables named `NAME_images_push_TAG` and `NAME_captions_push_TAG`, then indexed, and
//! only then, in one transaction, renamed over the old tables with the gallery's record. A push
//! killed at any point leaves the old gallery whole and searchable; the next push drops the
//! staging tables it left. Pushes of one gallery take turns (an advisory lock).

use std::path::Path;
use std::str::FromStr;
use std::time::Instant;

use anyhow::{Context, Result};
use futures_util::pin_mut;
use tandem::index::Index;
use tokio_postgres::Client;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use super::Database;
use super::schema::{self, GalleryRecord, META_TABLE, Names};
use super::vector::VectorRef;

/// HNSW build parameters, as `m=16,ef_construction=64` (pgvector's own names and defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswOptions {
    pub m: usize,
    pub ef_construction: usize,
}

impl Default for HnswOptions {
    fn default() -> Self {
        HnswOptions {
            m: 16,
            ef_construction: 64,
        }
    }
}

impl FromStr for HnswOptions {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut options = HnswOptions::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').ok_or_else(|| {
                format!("`{part}`: write key=value, e.g. m=16,ef_construction=64")
            })?;
            let value: usize = value
                .parse()
                .map_err(|_| format!("`{part}`: {value} is not a whole number"))?;
            match key {
                "m" if (2..=100).contains(&value) => options.m = value,
                "ef_construction" if (4..=1000).contains(&value) => options.ef_construction = value,
                "m" => return Err(format!("m = {value}: pgvector takes 2 to 100")),
                "ef_construction" => {
                    return Err(format!(
                        "ef_construction = {value}: pgvector takes 4 to 1000"
                    ));
                }
                _ => {
                    return Err(format!(
                        "`{key}`: the HNSW options are m and ef_construction"
                    ));
                }
            }
        }
        if options.ef_construction < 2 * options.m {
            return Err(format!(
                "ef_construction ({}) must be at least 2 × m ({})",
                options.ef_construction, options.m
            ));
        }
        Ok(options)
    }
}

/// What a push did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PushReport {
    pub gallery: String,
    pub images: usize,
    pub captions: usize,
    pub dim: usize,
    /// The database already held this index under this name: nothing was written.
    pub unchanged: bool,
    /// Seconds of the two COPYs (run at once).
    pub copy_seconds: f64,
    /// Rows of both galleries per second of COPY.
    pub rows_per_s: f64,
    /// Seconds of the primary keys and HNSW indexes.
    pub index_seconds: f64,
    pub total_seconds: f64,
}

/// Pushes the index in `index_dir` to gallery `table` of `url`, with HNSW indexes unless
/// `hnsw` is `None`; `force` pushes even when the same index is there already.
///
/// # Errors
/// An unreadable index; any database error, in one message naming the URL without its
/// password; a gallery name that is not an identifier.
pub fn push(
    index_dir: &Path,
    url: &str,
    table: &str,
    hnsw: Option<HnswOptions>,
    force: bool,
) -> Result<PushReport> {
    let started = Instant::now();
    let names = Names::new(table)?;
    let index = Index::open(index_dir)?;
    let mut record = GalleryRecord::of(index_dir, index.dim, index.n_images(), index.n_texts())?;
    record.hnsw = hnsw.map(|h| [h.m, h.ef_construction]);
    let db = Database::connect(url, 2)?;
    let shown = db.shown.clone();
    let session = db.session();
    let report = |unchanged, copy_seconds: f64, index_seconds| PushReport {
        gallery: names.gallery.clone(),
        images: index.n_images(),
        captions: index.n_texts(),
        dim: index.dim,
        unchanged,
        copy_seconds,
        rows_per_s: (index.n_images() + index.n_texts()) as f64 / copy_seconds.max(1e-9),
        index_seconds,
        total_seconds: started.elapsed().as_secs_f64(),
    };
    db.run(async {
        schema::ensure_vector(session, &shown).await?;
        schema::ensure_meta_table(session, &shown).await?;
        session
            .execute("SELECT pg_advisory_lock(hashtext($1))", &[&names.gallery])
            .await
            .map_err(|e| db.explain(&e, "waiting for another push of this gallery"))?;
        if !force && already_there(session, &shown, &names, &record).await? {
            return Ok(report(true, 0.0, 0.0));
        }
        drop_staging(session, &db, &names).await?;
        let tag = staging_tag();
        let staging = Names {
            gallery: names.gallery.clone(),
            images: format!("{}_push_{tag}", names.images),
            captions: format!("{}_push_{tag}", names.captions),
        };
        create_tables(session, &db, &staging, index.dim).await?;
        let copy_started = Instant::now();
        copy_galleries(&db, &index, &staging).await?;
        let copy_seconds = copy_started.elapsed().as_secs_f64();
        let index_started = Instant::now();
        build_indexes(
            &db,
            &staging,
            hnsw,
            index.n_images().max(index.n_texts()),
            index.dim,
        )
        .await?;
        let index_seconds = index_started.elapsed().as_secs_f64();
        swap_in(session, &db, &names, &staging, &record).await?;
        Ok(report(false, copy_seconds, index_seconds))
    })
}

/// The gallery holds this very index already, with the same HNSW options.
async fn already_there(
    client: &Client,
    shown: &str,
    names: &Names,
    record: &GalleryRecord,
) -> Result<bool> {
    let Some(old) = schema::read_record(client, shown, &names.gallery).await? else {
        return Ok(false);
    };
    let tables = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL",
            &[&names.images, &names.captions],
        )
        .await
        .map_err(|e| super::database::explain(&e, shown, "looking for the gallery's tables"))?;
    Ok(tables.get::<_, bool>(0)
        && old.index_digest == record.index_digest
        && old.hnsw == record.hnsw)
}

/// A suffix no other push of this gallery uses: the time in microseconds, in hex.
fn staging_tag() -> String {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    format!("{micros:x}")
}

/// Drops the staging tables an interrupted push of this gallery left.
async fn drop_staging(client: &Client, db: &Database, names: &Names) -> Result<()> {
    let like = |table: &str| format!("{}\\_push\\_%", table.replace('_', "\\_"));
    let rows = client
        .query(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()
               AND (tablename LIKE $1 OR tablename LIKE $2)",
            &[&like(&names.images), &like(&names.captions)],
        )
        .await
        .map_err(|e| db.explain(&e, "looking for an interrupted push's tables"))?;
    for row in rows {
        let name: String = row.get(0);
        tracing::info!("dropping {name}, left by an interrupted push");
        client
            .batch_execute(&format!("DROP TABLE IF EXISTS \"{name}\""))
            .await
            .map_err(|e| db.explain(&e, &format!("dropping {name}")))?;
    }
    Ok(())
}

/// Widest embedding kept inline in its row: pgvector's `vector` is stored EXTERNAL (out of
/// line, in the TOAST table, once a row passes 2 kB: every 512-d row), which costs COPY a
/// TOAST insert and index entry per row and every search a detoast. Rows up to a page's
/// 8 kB can stay in the heap (PLAIN), a 1,900-d row is 7.6 kB.
const INLINE_DIM_AT_MOST: usize = 1900;

async fn create_tables(client: &Client, db: &Database, staging: &Names, dim: usize) -> Result<()> {
    let mut sql = format!(
        "CREATE TABLE \"{images}\" (id bigint NOT NULL, file text, caption text, emb vector({dim}) NOT NULL);
         CREATE TABLE \"{captions}\" (id bigint NOT NULL, image bigint NOT NULL, text text, emb vector({dim}) NOT NULL);",
        images = staging.images,
        captions = staging.captions
    );
    if dim <= INLINE_DIM_AT_MOST {
        for table in [&staging.images, &staging.captions] {
            sql.push_str(&format!(
                "ALTER TABLE \"{table}\" ALTER COLUMN emb SET STORAGE PLAIN;"
            ));
        }
    }
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| db.explain(&e, "creating the staging tables"))
}

/// Both galleries at once, each on its own connection.
async fn copy_galleries(db: &Database, index: &Index, staging: &Names) -> Result<()> {
    let bar = crate::progress::counter_bar("push", index.n_images() + index.n_texts());
    let first_captions = first_caption_of_each_image(index);
    let image_rows = (0..index.n_images()).map(|i| {
        let file = index
            .image_files
            .as_ref()
            .map(|f| f[i].display().to_string());
        let caption = first_captions[i].map(str::to_string);
        (
            i as i64,
            file,
            caption,
            &index.images[i * index.dim..][..index.dim],
        )
    });
    let caption_rows = (0..index.n_texts()).map(|i| {
        let text = index.captions.as_ref().map(|c| c[i].clone());
        (
            i as i64,
            Some(index.text_to_image[i] as i64),
            text,
            &index.texts[i * index.dim..][..index.dim],
        )
    });
    let (images, captions) = tokio::join!(
        copy_rows(
            db,
            db.session(),
            &staging.images,
            "id, file, caption, emb",
            image_rows,
            bar.as_ref()
        ),
        copy_rows(
            db,
            db.client_other(),
            &staging.captions,
            "id, image, text, emb",
            caption_rows,
            bar.as_ref()
        ),
    );
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    images.and(captions)
}

/// Image i's first caption, when the index has caption text.
fn first_caption_of_each_image(index: &Index) -> Vec<Option<&str>> {
    let mut first = vec![None; index.n_images()];
    if let Some(captions) = &index.captions {
        for (text, &image) in captions.iter().zip(&index.text_to_image) {
            first[image as usize].get_or_insert(text.as_str());
        }
    }
    first
}

/// One binary COPY of `rows` into `table`.
async fn copy_rows<'a, T: ToSql + Sync, U: ToSql + Sync>(
    db: &Database,
    client: &Client,
    table: &str,
    columns: &str,
    rows: impl Iterator<Item = (i64, T, U, &'a [f32])>,
    bar: Option<&indicatif::ProgressBar>,
) -> Result<()> {
    let doing = format!("copying rows into {table}");
    let explain = |e: tokio_postgres::Error| db.explain(&e, &doing);
    let probe = client
        .prepare(&format!("SELECT {columns} FROM \"{table}\""))
        .await
        .map_err(explain)?;
    let types: Vec<Type> = probe.columns().iter().map(|c| c.type_().clone()).collect();
    let sink = client
        .copy_in(&format!("COPY \"{table}\" ({columns}) FROM STDIN BINARY"))
        .await
        .map_err(explain)?;
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    for (n, (id, a, b, emb)) in rows.enumerate() {
        writer
            .as_mut()
            .write(&[&id, &a, &b, &VectorRef(emb)])
            .await
            .map_err(explain)?;
        if n % 4096 == 4095
            && let Some(bar) = bar
        {
            bar.inc(4096);
        }
    }
    writer.finish().await.map_err(explain)?;
    Ok(())
}

/// Primary keys, then (with `hnsw`) an HNSW index per gallery on inner product, both galleries
/// at once.
async fn build_indexes(
    db: &Database,
    staging: &Names,
    hnsw: Option<HnswOptions>,
    rows: usize,
    dim: usize,
) -> Result<()> {
    // pgvector builds fast only while the graph fits in maintenance_work_mem; past it, it
    // warns and slows down many times. Ask for the graph's size (vectors plus links), up to
    // 4 GB per build, unless the server's setting is larger already.
    let graph_mb = (rows * (dim * 4 + 16 * 2 * 8 + 64)) / (1 << 20) + 64;
    let work_mem_mb = graph_mb.min(4096);
    let (images, captions) = tokio::join!(
        index_table(db, db.session(), &staging.images, hnsw, work_mem_mb),
        index_table(db, db.client_other(), &staging.captions, hnsw, work_mem_mb),
    );
    images.and(captions)
}

/// The primary key and HNSW index of one staging table, then its statistics.
async fn index_table(
    db: &Database,
    client: &Client,
    table: &str,
    hnsw: Option<HnswOptions>,
    work_mem_mb: usize,
) -> Result<()> {
    let explain = |e: tokio_postgres::Error| db.explain(&e, &format!("indexing {table}"));
    let current_mb = client
        .query_one(
            "SELECT setting::bigint / 1024 FROM pg_settings WHERE name = 'maintenance_work_mem'",
            &[],
        )
        .await
        .map_err(explain)?
        .get::<_, i64>(0)
        .max(0) as usize;
    let mut sql = format!(
        "SET maintenance_work_mem = '{}MB';
         ALTER TABLE \"{table}\" ADD CONSTRAINT \"{table}_pkey\" PRIMARY KEY (id);",
        work_mem_mb.max(current_mb)
    );
    if let Some(h) = hnsw {
        sql.push_str(&format!(
            "CREATE INDEX \"{table}_emb\" ON \"{table}\" USING hnsw (emb vector_ip_ops) WITH (m = {}, ef_construction = {});",
            h.m, h.ef_construction
        ));
    }
    sql.push_str(&format!("ANALYZE \"{table}\";"));
    client.batch_execute(&sql).await.map_err(explain)
}

/// In one transaction: the old tables dropped, the staging ones renamed over them, the record
/// written.
async fn swap_in(
    client: &Client,
    db: &Database,
    names: &Names,
    staging: &Names,
    record: &GalleryRecord,
) -> Result<()> {
    let json = serde_json::to_string(record).context("writing the gallery record")?;
    let swap = format!(
        "BEGIN;
         DROP TABLE IF EXISTS \"{images}\";
         DROP TABLE IF EXISTS \"{captions}\";
         ALTER TABLE \"{staged_images}\" RENAME TO \"{images}\";
         ALTER TABLE \"{staged_captions}\" RENAME TO \"{captions}\";",
        images = names.images,
        captions = names.captions,
        staged_images = staging.images,
        staged_captions = staging.captions
    );
    let explain = |e: tokio_postgres::Error| db.explain(&e, "swapping the new gallery in");
    client.batch_execute(&swap).await.map_err(explain)?;
    client
        .execute(
            &format!(
                "INSERT INTO {META_TABLE} (name, model_sha256, dim, images, captions, record)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (name) DO UPDATE SET model_sha256 = $2, dim = $3, images = $4,
                   captions = $5, record = $6, pushed_at = now()"
            ),
            &[
                &names.gallery,
                &record.model_sha256,
                &(record.dim as i32),
                &(record.images as i64),
                &(record.captions as i64),
                &json,
            ],
        )
        .await
        .map_err(explain)?;
    client.batch_execute("COMMIT").await.map_err(explain)
}
