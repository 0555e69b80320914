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
