//! `tandem index build` and `tandem search`.

use std::path::Path;

use anyhow::{Context, Result};
use tandem::data::{PairedDataset, npy};
use tandem::index::{Direction, Hit, Index};

use crate::cli::Format;
use crate::output::csv_field;

pub fn build(model: &Path, data: &Path, out: &Path) -> Result<()> {
    let (checkpoint, run_dir) = super::open_model(model)?;
    let checkpoint_path = if model.is_dir() {
        run_dir.join(tandem::train::RunFiles::BEST)
    } else {
        model.to_path_buf()
    };
    let dataset = PairedDataset::open(data)?;
    let index = Index::build(&checkpoint, &dataset)?;
    index.save(out, &checkpoint_path)?;
    tracing::info!(
        "indexed {} images and {} captions (dimension {}) in {}",
        index.n_images(),
        index.n_texts(),
        index.dim,
        out.display()
    );
    Ok(())
}

/// What to search with.
pub enum Query<'a> {
    TextId(usize),
    ImageId(usize),
    TextFeatures(&'a Path),
}

pub fn run(index_dir: &Path, query: Query<'_>, k: usize, format: Format) -> Result<()> {
    if k == 0 {
        anyhow::bail!("--k must be at least 1");
    }
    let mut index = Index::open(index_dir)?;
    let (direction, queries) = match query {
        Query::TextId(id) => (
            Direction::TextToImage,
            index.embedding_of(Direction::TextToImage, id)?,
        ),
        Query::ImageId(id) => (
            Direction::ImageToText,
            index.embedding_of(Direction::ImageToText, id)?,
        ),
        Query::TextFeatures(path) => {
            let features = npy::read_features(path)?;
            if features.cols != index.model.d_text {
                anyhow::bail!(
                    "{}: {} text features per row, the index's model expects {}\n  fix: encode the queries with the encoder the model was trained on",
                    path.display(),
                    features.cols,
                    index.model.d_text
                );
            }
            let rows: Vec<u32> = (0..features.rows as u32).collect();
            let embedded = index
                .model
                .embed_all(&features, &rows, false, 1024)
                .with_context(|| format!("embedding {}", path.display()))?;
            (Direction::TextToImage, embedded)
        }
    };
    let results = index.search(&queries, direction, k)?;
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
