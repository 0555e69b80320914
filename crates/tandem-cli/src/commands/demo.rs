//! `tandem demo`: the paper's recipe on the bundled emoji data, next to a linear baseline and
//! chance.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tandem::config::Config;
use tandem::data::{PairedDataset, SplitView};
use tandem::eval::RetrievalMetrics;

use crate::cli::Format;
use crate::output::{comparison_csv, comparison_table};

/// The demo's settings: the reference recipe scaled to a small dataset (see the file's comments).
const DEMO_CONFIG: &str = include_str!("../../../../data/emoji/demo.toml");

fn bundled_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/emoji")
}

pub fn run(
    data: Option<PathBuf>,
    out: &Path,
    sets: &[String],
    baseline: bool,
    format: Format,
) -> Result<()> {
    let data = data.unwrap_or_else(bundled_data);
    let mut config = Config::from_toml(DEMO_CONFIG).context("the bundled demo.toml")?;
    super::apply_sets(&mut config, sets)?;
    let dataset = PairedDataset::open(&data)?;
    let started = std::time::Instant::now();

    let label = config.loss.label();
    for run in ["model", "linear"] {
        super::train::record_encoders(&data, &out.join(run))?;
    }
    let (_, model) =
        super::train::train_and_test(&dataset, &out.join("model"), &config, "test", &label)?;
    let linear = if baseline {
        let mut lin = config.clone();
        lin.model.hidden = vec![];
        let (_, m) = super::train::train_and_test(
            &dataset,
            &out.join("linear"),
            &lin,
            "test",
            "linear baseline",
        )?;
        Some(m)
    } else {
        None
    };
    let splits = tandem::train::resolve_splits(&dataset, &config, None)?;
    let test = SplitView::new(&splits.test, &dataset.text_to_image, dataset.images.rows);
    let chance = RetrievalMetrics::chance("test", &test.captions_per_image());
    tracing::info!(
        "demo finished in {:.1}s; runs in {}",
        started.elapsed().as_secs_f64(),
        out.display()
    );

    match format {
        Format::Table => {
            print!("{}", model.table());
            println!();
            let name = format!("tandem ({label})");
            let mut rows = vec![(name.as_str(), &model)];
            if let Some(l) = &linear {
                rows.push(("linear baseline", l));
            }
            rows.push(("chance", &chance));
            print!("{}", comparison_table(&rows));
            search_example(&data, &dataset, &out.join("model"), &splits.test)?;
        }
        Format::Csv => {
            let name = format!("tandem ({label})");
            let mut rows = vec![(name.as_str(), &model)];
            if let Some(l) = &linear {
                rows.push(("linear baseline", l));
            }
            rows.push(("chance", &chance));
            print!("{}", comparison_csv(&rows));
        }
        Format::Json => {
            let value = serde_json::json!({"loss": config.loss.kind, "model": model, "linear": linear, "chance": chance});
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
    }
    Ok(())
}

/// Text→image search in the trained space: a few test captions and the images they find.
fn search_example(
    data: &Path,
    dataset: &PairedDataset,
    run: &Path,
    test_images: &[u32],
) -> Result<()> {
    use tandem::index::{Direction, Index, SearchMode};
    let (checkpoint, _) = super::open_model(run)?;
    let mut index = Index::build(&checkpoint, dataset)?;
    index.attach_image_files(data)?;
    let in_test: std::collections::HashSet<u32> = test_images.iter().copied().collect();
    let Some(captions) = &dataset.captions else {
        return Ok(()); // a dataset without caption text has nothing to show in words
    };
    // The first caption of three test images spread over the split: not picked for success.
    let firsts: Vec<usize> = (0..captions.len())
        .filter(|&c| {
            in_test.contains(&dataset.text_to_image[c])
                && (c == 0 || dataset.text_to_image[c - 1] != dataset.text_to_image[c])
        })
        .collect();
    let queries: Vec<usize> = (0..3)
        .filter_map(|k| firsts.get(k * firsts.len() / 3).copied())
        .collect();
    println!();
    println!(
        "search in the trained space (text → image, whole gallery of {} images):",
        index.n_images()
    );
    for q in queries {
        let query = index.embedding_of(Direction::TextToImage, q)?;
        let hits = index.search(&query, Direction::TextToImage, 3, SearchMode::Exact)?;
        let truth = dataset.text_to_image[q];
        let found = hits[0].iter().map(|h| {
            let mark = if h.id == truth { " ✓" } else { "" };
            format!("{}{mark}", h.text.as_deref().unwrap_or("?"))
        });
        println!(
            "  \"{}\" → {}",
            captions[q],
            found.collect::<Vec<_>>().join(" | ")
        );
    }
    println!(
        "serve it with pictures: tandem index build --model {} --data {} --out idx && tandem serve --index idx",
        run.display(),
        std::fs::canonicalize(data)
            .unwrap_or(data.to_path_buf())
            .display()
    );
    Ok(())
}
