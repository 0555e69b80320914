//! A pushed gallery, searched through the database: `ORDER BY emb <#> $1 LIMIT k` on the HNSW
//! index (`hnsw.ef_search` from `--ef`), or every row scored for an exact search.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Result, bail};
use tandem::index::{Direction, Hit};
use tokio_postgres::Statement;
use tokio_postgres::types::ToSql;

use super::schema::{self, GalleryRecord, MODEL_FILE, Names};
use super::vector::VectorRef;
use super::{Database, Filter};

/// pgvector's own default `hnsw.ef_search` is 40; tandem's galleries ask for more by default
/// (recall@10 measured in docs/postgres.md).
pub const DEFAULT_EF_SEARCH: usize = 100;

/// One gallery of one database, ready to answer.
pub struct PgGallery {
    db: Database,
    names: Names,
    /// What the push recorded: model, dims, counts.
    pub record: GalleryRecord,
    /// `hnsw.ef_search` of every connection.
    pub ef_search: usize,
    /// Prepared statements by connection and SQL (a server asks the same few again and again).
    statements: Mutex<HashMap<(usize, String), Statement>>,
}

impl PgGallery {
    /// Opens gallery `table` of `url` over `connections` connections, each searching with
    /// `hnsw.ef_search = ef_search`.
    ///
    /// # Errors
    /// No such gallery (naming the ones there are), tables missing or of another dimension
    /// than recorded, and every connection error.
    pub fn open(url: &str, table: &str, connections: usize, ef_search: usize) -> Result<Self> {
        let names = Names::new(table)?;
        if ef_search == 0 || ef_search > 1000 {
            bail!("--ef {ef_search}: pgvector's hnsw.ef_search takes 1 to 1000");
        }
        let db = Database::connect(url, connections)?;
        let shown = db.shown.clone();
        let record = db.run(async {
            let client = db.session();
            let Some(record) = schema::read_record(client, &shown, &names.gallery).await? else {
                let there = schema::gallery_names(client).await;
                bail!(
                    "{shown}: no tandem gallery `{}` here (galleries: {})\n  fix: push one with `tandem index push --index INDEX --postgres URL --table {}`",
                    names.gallery,
                    if there.is_empty() { "none".to_string() } else { there.join(", ") },
                    names.gallery
                );
            };
            for table in [&names.images, &names.captions] {
                check_dimension(&db, table, record.dim).await?;
            }
            Ok(record)
        })?;
        let gallery = PgGallery {
            db,
            names,
            record,
            ef_search,
            statements: Mutex::new(HashMap::new()),
        };
        gallery.configure_sessions()?;
        Ok(gallery)
    }

    /// The URL without its password.
    pub fn shown(&self) -> &str {
        &self.db.shown
    }

    /// `hnsw.ef_search` on every connection; filtered searches scan the graph further until
    /// they have `k` rows (pgvector 0.8's iterative scans; older servers ignore the setting).
    fn configure_sessions(&self) -> Result<()> {
        self.db.run(async {
            for i in 0..self.db.connections() {
                self.db
                    .nth(i)
                    .batch_execute(&format!(
                        "SET hnsw.ef_search = {}; SET hnsw.iterative_scan = strict_order;",
                        self.ef_search
                    ))
                    .await
                    .map_err(|e| self.db.explain(&e, "setting hnsw.ef_search"))?;
            }
            Ok(())
        })
    }

    /// The index folder whose model embedded this gallery: `given`, or the folder the push
    /// recorded; checked by the model's hash.
    ///
    /// # Errors
    /// A folder whose model is another one, or no model file there.
    pub fn model_folder(&self, given: Option<&Path>) -> Result<PathBuf> {
        let folder = given.map_or_else(|| self.record.source.clone(), Path::to_path_buf);
        let model = folder.join(MODEL_FILE);
        if !model.exists() {
            bail!(
                "{}: no model here to embed queries for gallery `{}` of {}\n  fix: pass --index with the index folder that was pushed",
                model.display(),
                self.names.gallery,
                self.db.shown
            );
        }
        let sha = tandem::fsio::sha256(&model)?;
        if sha != self.record.model_sha256 {
            bail!(
                "{}: another model than the one that embedded gallery `{}` of {} (pushed from {}); its scores would mean nothing\n  fix: pass --index with the index folder that was pushed, or push this index",
                folder.display(),
                self.names.gallery,
                self.db.shown,
                self.record.source.display()
            );
        }
        Ok(folder)
    }

    /// The `k` nearest rows of the gallery `direction` searches, best first: through the HNSW
    /// index, or with `exact` every row scored; only rows passing every filter.
    ///
    /// # Shapes
    /// `query: [dim]`, L2-normalised.
    ///
    /// # Errors
    /// A filter on a column the gallery lacks; a database error.
    pub fn search(
        &self,
        query: &[f32],
        direction: Direction,
        k: usize,
        exact: bool,
        filters: &[Filter],
    ) -> Result<Vec<Hit>> {
        if query.len() != self.record.dim {
            bail!(
                "the query has {} values, gallery `{}` holds {}-dimensional embeddings",
                query.len(),
                self.names.gallery,
                self.record.dim
            );
        }
        let (table, columns) = match direction {
            Direction::TextToImage => (&self.names.images, "id, NULL::bigint, caption"),
            Direction::ImageToText => (&self.names.captions, "id, image, text"),
        };
        let mut conditions = Vec::with_capacity(filters.len());
        for (i, f) in filters.iter().enumerate() {
            conditions.push(f.sql(direction, i + 3).map_err(anyhow::Error::msg)?);
        }
        let filter_sql = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        // `<#>` is the negative inner product, which the HNSW index orders by; the function
        // form is not indexable, so the exact query scores every row (ties by id, as
        // tandem's own exact search).
        let sql = if exact {
            format!(
                "SELECT {columns}, inner_product(emb, $1) AS score FROM \"{table}\" {filter_sql} ORDER BY score DESC, id LIMIT $2"
            )
        } else {
            format!(
                "SELECT {columns}, -(emb <#> $1) AS score FROM \"{table}\" {filter_sql} ORDER BY emb <#> $1 LIMIT $2"
            )
        };
        let vector = VectorRef(query);
        let limit = k as i64;
        let values: Vec<Box<dyn ToSql + Sync + Send>> = filters.iter().map(Filter::param).collect();
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&vector, &limit];
        params.extend(values.iter().map(|v| v.as_ref() as &(dyn ToSql + Sync)));
        let rows = self.query(&sql, &params, "searching")?;
        Ok(rows
            .iter()
            .enumerate()
            .map(|(rank, row)| Hit {
                rank: rank + 1,
                score: row.get::<_, f64>(3) as f32,
                id: row.get::<_, i64>(0) as u32,
                image: row.get::<_, Option<i64>>(1).map(|i| i as u32),
                text: row.get(2),
            })
            .collect())
    }

    /// The stored embedding of caption `id` (text→image) or image `id` (image→text).
    ///
    /// # Errors
    /// No such row, or a database error.
    pub fn embedding_of(&self, direction: Direction, id: usize) -> Result<Vec<f32>> {
        let (table, what, count) = match direction {
            Direction::TextToImage => (&self.names.captions, "caption", self.record.captions),
            Direction::ImageToText => (&self.names.images, "image", self.record.images),
        };
        let sql = format!("SELECT emb FROM \"{table}\" WHERE id = $1");
        let rows = self.query(&sql, &[&(id as i64)], "reading an embedding")?;
        let Some(row) = rows.first() else {
            bail!(
                "{what} {id} is out of range: gallery `{}` has {count} {what}s (0..{})",
                self.names.gallery,
                count.saturating_sub(1)
            );
        };
        Ok(row.get::<_, pgvector::Vector>(0).to_vec())
    }

    /// Image `id`'s file, when the pushed index listed image files.
    ///
    /// # Errors
    /// A database error.
    pub fn image_file(&self, id: usize) -> Result<Option<PathBuf>> {
        let sql = format!("SELECT file FROM \"{}\" WHERE id = $1", self.names.images);
        let rows = self.query(&sql, &[&(id as i64)], "reading an image's file")?;
        Ok(rows
            .first()
            .and_then(|r| r.get::<_, Option<String>>(0))
            .map(PathBuf::from))
    }

    /// Runs `sql` on the next connection with a statement prepared once per connection.
    fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        doing: &str,
    ) -> Result<Vec<tokio_postgres::Row>> {
        let (i, client) = self.db.next_client();
        let key = (i, sql.to_string());
        let cached = self
            .statements
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .cloned();
        self.db.run(async {
            let statement = match cached {
                Some(s) => s,
                None => {
                    let s = client
                        .prepare(sql)
                        .await
                        .map_err(|e| self.db.explain(&e, doing))?;
                    self.statements
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(key, s.clone());
                    s
                }
            };
            client
                .query(&statement, params)
                .await
                .map_err(|e| self.db.explain(&e, doing))
        })
    }
}

/// The `emb` column of `table` must hold vectors of `dim` values.
async fn check_dimension(db: &Database, table: &str, dim: usize) -> Result<()> {
    let row = db
        .session()
        .query_opt(
            "SELECT atttypmod FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = 'emb'",
            &[&table],
        )
        .await
        .map_err(|e| db.explain(&e, &format!("looking at {table}")))?;
    let Some(row) = row else {
        bail!(
            "{}: table {table} is missing or has no emb column, but tandem_galleries records it\n  fix: push the gallery again",
            db.shown
        );
    };
    let found: i32 = row.get(0);
    if found != dim as i32 {
        bail!(
            "{}: {table} holds vectors of {found} values, its record says {dim}\n  fix: push the gallery again",
            db.shown
        );
    }
    Ok(())
}
