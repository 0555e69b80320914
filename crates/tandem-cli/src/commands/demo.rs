//! `tandem demo`: the reference recipe and the best recipe found for datasets of this kind, on
//! the bundled emoji data, next to a linear baseline and chance.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tandem::config::Config;
use tandem::data::{PairedDataset, SplitView};
use tandem::eval::RetrievalMetrics;

use crate::cli::Format;
use crate::output::{comparison_csv, comparison_table};

/// The best recipe found for datasets of the demo's kind (see the file's comments).
const BEST_RECIPE: &str = include_str!("../../../../bench/recipes/best.toml");

/// Every demo run uses this seed (the split is the dataset's own).
const SEED: u64 = 42;

fn bundled_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/emoji")
}

/// The demo's runs: folder name, label in the table, config.
fn runs(sets: &[String], baseline: bool) -> Result<Vec<(&'static str, String, Config)>> {
    let mut reference = Config {
        seed: SEED,
        ..Config::default()
    };
    reference.apply(sets)?;
    let mut best = Config::from_toml(BEST_RECIPE).context("the bundled best.toml")?;
    best.seed = SEED;
    best.apply(sets)?;
    let mut runs = vec![
        (
            "reference",
            "tandem, reference recipe".to_string(),
            reference,
        ),
        (
            "best",
            format!("tandem, best recipe ({})", best.loss.label()),
            best.clone(),
        ),
    ];
    if baseline {
        let mut linear = best;
        linear.model.hidden = vec![];
        runs.push(("linear", "linear baseline".to_string(), linear));
    }
    Ok(runs)
}

pub fn run(
    data: Option<PathBuf>,
    out: &Path,
    sets: &[String],
    baseline: bool,
    format: Format,
) -> Result<()> {
    let data = data.unwrap_or_else(bundled_data);
    let runs = runs(sets, baseline)?;
    let dataset = PairedDataset::open(&data)?;
    let started = std::time::Instant::now();
    let mut results = Vec::new();
    for (folder, label, config) in &runs {
        let dir = out.join(folder);
        super::train::record_encoders(&data, &dir)?;
        let (_, metrics) =
            super::train::train_and_test(&dataset, &dir, config, &[], "test", label)?;
        results.push((label.as_str(), metrics));
    }
    let splits = tandem::train::resolve_splits(&dataset, &runs[0].2, None)?;
    let test = SplitView::new(&splits.test, &dataset.text_to_image, dataset.images.rows());
    let chance = RetrievalMetrics::chance("test", &test.captions_per_image());
    tracing::info!(
        "demo finished in {:.1}s; runs in {}",
        started.elapsed().as_secs_f64(),
        out.display()
    );
    let mut rows: Vec<(&str, &RetrievalMetrics)> = results.iter().map(|(l, m)| (*l, m)).collect();
    rows.push(("chance", &chance));
    match format {
        Format::Table => {
            print!("{}", results[1].1.table());
            println!();
            print!("{}", comparison_table(&rows));
            search_example(&data, &dataset, &out.join("best"), &splits.test)?;
        }
        Format::Csv => print!("{}", comparison_csv(&rows)),
        Format::Json => {
            let value: serde_json::Map<String, serde_json::Value> = runs
                .iter()
                .zip(&results)
                .map(|((folder, _, _), (_, m))| Ok((folder.to_string(), serde_json::to_value(m)?)))
                .chain([Ok(("chance".to_string(), serde_json::to_value(&chance)?))])
                .collect::<Result<_>>()?;
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
