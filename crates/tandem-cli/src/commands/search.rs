//! `tandem index build` and `tandem search`.

use std::path::Path;

use anyhow::{Context, Result};
use tandem::data::{Matrix, PairedDataset, npy};
use tandem::image::{ImageEncoder, ImageEncoderRecord};
use tandem::index::{Direction, GraphRecall, Hit, HnswParams, Index, SearchMode};
use tandem::text::{SentenceEncoder, TextEncoderRecord};

use crate::postgres::{self, Filter, PgGallery};
use crate::server::QueryText;
use tandem::model::{TwoBranch, load_checkpoint};

use crate::cli::{Format, SearchModeArgs};
use crate::output::csv_field;

pub fn build(
    model: &Path,
    data: &Path,
    out: &Path,
    hnsw: Option<HnswParams>,
    format: Format,
) -> Result<()> {
    refuse_other_folder(out)?;
    let (checkpoint, run_dir) = super::open_model(model)?;
    let checkpoint_path = if model.is_dir() {
        run_dir.join(tandem::train::RunFiles::BEST)
    } else {
        model.to_path_buf()
    };
    TextEncoderRecord::check_same(&run_dir, data)?;
    tandem::image::ImageEncoderRecord::check_same(&run_dir, data)?;
    let dataset = PairedDataset::open(data)?;
    let mut index = Index::build(&checkpoint, &dataset)?;
    index.attach_image_files(data)?;
    if let Some(params) = hnsw {
        params.validate()?;
        let total = index.n_images() + index.n_texts();
        let bar = crate::progress::counter_bar("hnsw", total);
        index.build_approximate(params, |done, _| {
            if let Some(bar) = &bar {
                bar.set_position(done as u64);
            }
        })?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
    }
    // Written beside `out` and swapped in whole: a kill at any point leaves the previous
    // index in `out`, complete, and a server reloading it sees one index or the other.
    let staged = tandem::staged_folder::StagedFolder::beside(out)?;
    let folder = staged.path();
    index.save(folder, &checkpoint_path)?;
    // The encoder of the model's text features, so `search --text` can encode queries.
    let record = match TextEncoderRecord::read_from(&run_dir)? {
        Some(r) => Some(r),
        None => TextEncoderRecord::read_from(data)?,
    };
    if let Some(record) = record {
        record.write_to(folder)?;
    }
    let image_record = match tandem::image::ImageEncoderRecord::read_from(&run_dir)? {
        Some(r) => Some(r),
        None => tandem::image::ImageEncoderRecord::read_from(data)?,
    };
    if let Some(record) = image_record {
        record.write_to(folder)?;
    }
    staged.commit()?;
    tracing::info!(
        "indexed {} images and {} captions (dimension {}) in {}",
        index.n_images(),
        index.n_texts(),
        index.dim,
        out.display()
    );
    if let Some(approximate) = &index.approximate {
        print_recall(&approximate.recall, format)?;
    }
    Ok(())
}

/// `index build` replaces `out` whole: refuse a folder that holds something but no index.
fn refuse_other_folder(out: &Path) -> Result<()> {
    let holds_something = std::fs::read_dir(out).is_ok_and(|mut e| e.next().is_some());
    if out.is_file() || (holds_something && !out.join(tandem::index::EMBEDDINGS).exists()) {
        anyhow::bail!(
            "{}: exists and is not an index folder; building would replace it whole\n  fix: choose another --out (a new folder, or an index to replace)",
            out.display()
        );
    }
    Ok(())
}

/// The HNSW graphs' recall against exact search, as measured at build.
fn print_recall(recall: &[GraphRecall; 2], format: Format) -> Result<()> {
    let galleries = [("images", &recall[0]), ("captions", &recall[1])];
    match format {
        Format::Json => {
            let json: serde_json::Map<String, serde_json::Value> = galleries
                .iter()
                .map(|(name, r)| Ok((name.to_string(), serde_json::to_value(r)?)))
                .collect::<Result<_>>()?;
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        Format::Csv => {
            println!(
                "gallery,rows,queries,ef,recall_at_10,approximate_queries_per_s,exact_queries_per_s,build_seconds"
            );
            for (name, r) in galleries {
                println!(
                    "{name},{},{},{},{:.4},{:.1},{:.1},{:.2}",
                    r.rows,
                    r.queries,
                    r.ef,
                    r.recall_at_10,
                    r.approximate_queries_per_s,
                    r.exact_queries_per_s,
                    r.build_seconds
                );
            }
        }
        Format::Table => {
            println!("HNSW recall@10 against exact search (queries from the other modality)");
            println!(
                "{:<9} {:>9} {:>8} {:>5} {:>10} {:>10} {:>10} {:>8}",
                "gallery", "rows", "queries", "ef", "recall@10", "hnsw q/s", "exact q/s", "build s"
            );
            for (name, r) in galleries {
                println!(
                    "{name:<9} {:>9} {:>8} {:>5} {:>10.4} {:>10.0} {:>10.0} {:>8.1}",
                    r.rows,
                    r.queries,
                    r.ef,
                    r.recall_at_10,
                    r.approximate_queries_per_s,
                    r.exact_queries_per_s,
                    r.build_seconds
                );
            }
        }
    }
    Ok(())
}

/// The search mode the flags ask of `index`: `--exact`, `--ef N` (needs graphs), or the
/// index's default (approximate when it has graphs).
///
/// # Errors
/// `--ef` on an index without graphs, or `--ef 0`.
pub fn mode_for(index: &Index, args: SearchModeArgs) -> Result<SearchMode> {
    if args.exact {
        return Ok(SearchMode::Exact);
    }
    match args.ef {
        None => Ok(index.default_mode()),
        Some(0) => anyhow::bail!("--ef must be at least 1"),
        Some(_) if index.approximate.is_none() => anyhow::bail!(
            "--ef asks for approximate search, but this index has no HNSW graph\n  fix: drop --ef, or rebuild the index with `tandem index build ... --hnsw`"
        ),
        Some(ef) => Ok(SearchMode::Approximate { ef }),
    }
}

/// What to search with.
pub enum Query<'a> {
    TextId(usize),
    ImageId(usize),
    TextFeatures(&'a Path),
    /// Captions in words, and where the sentence encoder is when it moved.
    Text {
        texts: &'a [String],
        encoder: Option<&'a Path>,
    },
    /// Pictures, and where the image encoder's weights are when they moved.
    Image {
        files: &'a [std::path::PathBuf],
        encoder: Option<&'a Path>,
    },
}

/// The image encoder recorded in the index folder, loaded from `moved_to` when given, else from
/// its recorded path, and checked against the record.
pub fn open_image_encoder(index_dir: &Path, moved_to: Option<&Path>) -> Result<ImageEncoder> {
    let Some(record) = ImageEncoderRecord::read_from(index_dir)? else {
        anyhow::bail!(
            "{}: the index does not record which encoder made its image features, so a picture cannot be encoded as a query\n  fix: encode the pictures with `tandem encode-images`, train on those features and build the index again",
            index_dir.display()
        );
    };
    let weights = moved_to.unwrap_or(&record.path);
    let encoder = ImageEncoder::load(weights)
        .with_context(|| format!("opening the index's image encoder {}", weights.display()))?;
    if !encoder.record().same_encoder(&record) {
        anyhow::bail!(
            "{}: this is {}, but the index's image features were made by {}\n  fix: pass --image-encoder with the weights the features were encoded with",
            weights.display(),
            encoder.record().describe(),
            record.describe()
        );
    }
    Ok(encoder)
}

/// Image features of `files` from the encoder recorded in the index folder.
fn encode_pictures(
    index_dir: &Path,
    files: &[std::path::PathBuf],
    moved_to: Option<&Path>,
) -> Result<Matrix> {
    let encoder = open_image_encoder(index_dir, moved_to)?;
    let pictures = files
        .iter()
        .map(|f| tandem::image::read_rgb8(f))
        .collect::<tandem::Result<Vec<_>>>()?;
    let rows = encoder.encode(&pictures)?;
    Ok(Matrix {
        rows: rows.len(),
        cols: encoder.record().dim,
        data: rows.into_iter().flatten().collect(),
    })
}

/// The encoder recorded in the index folder, loaded (`None` when the index records none);
/// a sentence encoder from `moved_to` when given, else from its recorded folder, and checked
/// against the record.
pub fn open_text_encoder(index_dir: &Path, moved_to: Option<&Path>) -> Result<Option<QueryText>> {
    let Some(record) = TextEncoderRecord::read_from(index_dir)? else {
        return Ok(None);
    };
    Ok(Some(match record {
        TextEncoderRecord::Tfidf(tfidf) => QueryText::Tfidf(tfidf),
        TextEncoderRecord::Sentence { ref path, .. } => {
            let folder = moved_to.unwrap_or(path);
            let encoder =
                SentenceEncoder::open(folder, &tandem::default_device()?).with_context(|| {
                    format!("opening the index's sentence encoder {}", folder.display())
                })?;
            if !encoder.record().same_encoder(&record) {
                anyhow::bail!(
                    "{}: this is {}, but the index's text features were made by {}\n  fix: pass --encoder with the folder the features were encoded with",
                    folder.display(),
                    encoder.record().describe(),
                    record.describe()
                );
            }
            QueryText::Sentence(Box::new(encoder))
        }
    }))
}

/// Text features of `texts` from the encoder recorded in the index folder.
fn encode_queries(index_dir: &Path, texts: &[String], moved_to: Option<&Path>) -> Result<Matrix> {
    let Some(encoder) = open_text_encoder(index_dir, moved_to)? else {
        anyhow::bail!(
            "{}: the index does not record which encoder made its text features, so --text cannot encode a query\n  fix: encode the dataset's captions with `tandem encode-text`, train on those features and build the index again; or pass --text-features",
            index_dir.display()
        );
    };
    let data = encoder.encode_all(texts)?;
    Ok(Matrix {
        rows: texts.len(),
        cols: data.len() / texts.len().max(1),
        data,
    })
}

/// Every row of query `features` through the model's image or text branch.
fn embed_rows(
    model: &mut TwoBranch,
    features: &Matrix,
    image_side: bool,
) -> tandem::Result<Vec<f32>> {
    model.embed_rows(&features.data, features.cols, image_side, 1024)
}

/// The embedded queries of `query` and the direction they search: stored embeddings looked
/// up by `stored`, or features (read, or encoded with the encoders recorded in `folder`)
/// through `model`.
fn embed_query(
    folder: &Path,
    model: &mut TwoBranch,
    query: Query<'_>,
    stored: impl Fn(Direction, usize) -> Result<Vec<f32>>,
) -> Result<(Direction, Vec<f32>)> {
    let (features, path, image_side) = match query {
        Query::TextId(id) => {
            return Ok((Direction::TextToImage, stored(Direction::TextToImage, id)?));
        }
        Query::ImageId(id) => {
            return Ok((Direction::ImageToText, stored(Direction::ImageToText, id)?));
        }
        Query::TextFeatures(path) => (npy::read_features(path)?, path.display().to_string(), false),
        Query::Text { texts, encoder } => (
            encode_queries(folder, texts, encoder)?,
            "--text".to_string(),
            false,
        ),
        Query::Image { files, encoder } => (
            encode_pictures(folder, files, encoder)?,
            "--image".to_string(),
            true,
        ),
    };
    let expected = if image_side {
        model.d_image
    } else {
        model.d_text
    };
    if features.cols != expected {
        let (what, fix) = if image_side {
            (
                "image features per picture",
                "use an index whose model was trained on this encoder's features",
            )
        } else {
            (
                "text features per row",
                "encode the queries with the encoder the model was trained on",
            )
        };
        anyhow::bail!(
            "{path}: {} {what}, the index's model expects {expected}\n  fix: {fix}",
            features.cols
        );
    }
    let embedded =
        embed_rows(model, &features, image_side).with_context(|| format!("embedding {path}"))?;
    let direction = if image_side {
        Direction::ImageToText
    } else {
        Direction::TextToImage
    };
    Ok((direction, embedded))
}

pub fn run(
    index_dir: &Path,
    query: Query<'_>,
    k: usize,
    mode: SearchModeArgs,
    format: Format,
) -> Result<()> {
    if k == 0 {
        anyhow::bail!("--k must be at least 1");
    }
    let index = Index::open(index_dir)?;
    let mode = mode_for(&index, mode)?;
    let mut model = index.model.clone();
    let (direction, queries) = embed_query(index_dir, &mut model, query, |d, id| {
        Ok(index.embedding_of(d, id)?)
    })?;
    let results = index.search(&queries, direction, k, mode)?;
    print_results(direction, &results, format)
}

/// `tandem search --postgres`: the queries embedded with the pushed index's model, answered
/// by the database.
pub fn run_postgres(
    database: &crate::cli::PostgresArgs,
    index_dir: Option<&Path>,
    query: Query<'_>,
    k: usize,
    mode: SearchModeArgs,
    filters: &[Filter],
    format: Format,
) -> Result<()> {
    if k == 0 {
        anyhow::bail!("--k must be at least 1");
    }
    let PushedGallery {
        gallery,
        exact,
        folder,
        mut model,
    } = open_gallery(database, 1, mode, index_dir)?;
    let (direction, queries) = embed_query(&folder, &mut model, query, |d, id| {
        gallery.embedding_of(d, id)
    })?;
    let results = queries
        .chunks(gallery.record.dim)
        .map(|q| gallery.search(q, direction, k, exact, filters))
        .collect::<Result<Vec<_>>>()?;
    print_results(direction, &results, format)
}

/// A pushed gallery opened for searching, with the model that embeds its queries.
pub struct PushedGallery {
    pub gallery: PgGallery,
    /// Every search exact: `--exact`, or a gallery pushed without HNSW indexes.
    pub exact: bool,
    /// The pushed index folder: the model and the encoder records.
    pub folder: std::path::PathBuf,
    pub model: TwoBranch,
}

/// Opens gallery `database` over `connections` connections for the search the flags ask
/// (`--exact`, `--ef N`, default [`postgres::gallery::DEFAULT_EF_SEARCH`]), and the model of
/// the pushed index (`index_dir`, else the folder the push recorded), checked by its hash.
///
/// # Errors
/// `--ef 0`, `--ef` on a gallery without HNSW indexes, another model, and every database
/// error.
pub fn open_gallery(
    database: &crate::cli::PostgresArgs,
    connections: usize,
    mode: SearchModeArgs,
    index_dir: Option<&Path>,
) -> Result<PushedGallery> {
    let ef = match mode.ef {
        Some(0) => anyhow::bail!("--ef must be at least 1"),
        Some(ef) => ef,
        None => postgres::gallery::DEFAULT_EF_SEARCH,
    };
    let table = &database.table;
    let gallery = PgGallery::open(&database.postgres, table, connections, ef)?;
    if gallery.record.hnsw.is_none() && mode.ef.is_some() {
        anyhow::bail!(
            "--ef asks for approximate search, but gallery `{table}` was pushed without HNSW indexes\n  fix: drop --ef, or push again without --no-hnsw"
        );
    }
    let exact = mode.exact || gallery.record.hnsw.is_none();
    let folder = gallery.model_folder(index_dir)?;
    let model = load_checkpoint(
        &folder.join(postgres::MODEL_FILE),
        &tandem::default_device()?,
    )?
    .model;
    Ok(PushedGallery {
        gallery,
        exact,
        folder,
        model,
    })
}

/// `tandem index push`.
pub fn push(
    index_dir: &Path,
    database: &crate::cli::PostgresArgs,
    hnsw: Option<postgres::HnswOptions>,
    force: bool,
    format: Format,
) -> Result<()> {
    let report = postgres::push(index_dir, &database.postgres, &database.table, hnsw, force)?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Csv => {
            println!(
                "gallery,images,captions,dim,unchanged,copy_seconds,rows_per_s,index_seconds,total_seconds"
            );
            println!(
                "{},{},{},{},{},{:.3},{:.0},{:.3},{:.3}",
                report.gallery,
                report.images,
                report.captions,
                report.dim,
                report.unchanged,
                report.copy_seconds,
                report.rows_per_s,
                report.index_seconds,
                report.total_seconds
            );
        }
        Format::Table if report.unchanged => println!(
            "gallery `{}` of {} holds this index already ({} images, {} captions): nothing to do (--force pushes anyway)",
            report.gallery,
            postgres::redact(&database.postgres),
            report.images,
            report.captions
        ),
        Format::Table => {
            println!(
                "pushed {} images and {} captions ({}-d) to gallery `{}` of {}",
                report.images,
                report.captions,
                report.dim,
                report.gallery,
                postgres::redact(&database.postgres)
            );
            println!(
                "copy {:.1} s ({:.0} rows/s), indexes {:.1} s, total {:.1} s",
                report.copy_seconds, report.rows_per_s, report.index_seconds, report.total_seconds
            );
        }
    }
    Ok(())
}

fn print_results(direction: Direction, results: &[Vec<Hit>], format: Format) -> Result<()> {
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"direction": direction, "results": results})
            )?
        ),
        Format::Csv => {
            println!("query,rank,score,id,image,text");
            for (q, hits) in results.iter().enumerate() {
                for h in hits {
                    println!(
                        "{q},{},{:.6},{},{},{}",
                        h.rank,
                        h.score,
                        h.id,
                        h.image.map_or(String::new(), |i| i.to_string()),
                        csv_field(h.text.as_deref().unwrap_or(""))
                    );
                }
            }
        }
        Format::Table => {
            for (q, hits) in results.iter().enumerate() {
                if results.len() > 1 {
                    println!("query {q}");
                }
                print!("{}", table(direction, hits));
            }
        }
    }
    Ok(())
}

fn table(direction: Direction, hits: &[Hit]) -> String {
    let what = match direction {
        Direction::TextToImage => "image",
        Direction::ImageToText => "caption",
    };
    let mut s = format!("rank   score  {what:>7}  text\n");
    for h in hits {
        let image = h.image.map_or(String::new(), |i| format!(" (image {i})"));
        s.push_str(&format!(
            "{:>4}  {:>6.3}  {:>7}  {}{image}\n",
            h.rank,
            h.score,
            h.id,
            h.text.as_deref().unwrap_or("")
        ));
    }
    s
}
