//! `tandem report RUN... --data DIR --out DIR`: plots and a markdown summary of one or more runs.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tandem::data::{PairedDataset, SplitView};
use tandem::eval::{Protocol, RetrievalMetrics, hubness, ranks_from_embeddings};
use tandem::train::{RunFiles, evaluate_protocol, resolve_splits};

use crate::output::comparison_table;
use crate::plots::{self, Panel, Series};
use plotters::prelude::SeriesLabelPosition;

/// Recall@K curves run from K = 1 to this.
const MAX_K: usize = 100;
/// Hubs and worst queries listed per run.
const LISTED: usize = 5;

/// Per-step loss of each term, and validation rsum per epoch, from a run's metrics log.
struct Curves {
    terms: Vec<(String, Vec<(f64, f64)>)>,
    val_rsum: Vec<(f64, f64)>,
}

fn read_curves(run: &Path) -> Result<Curves> {
    let path = run.join(RunFiles::METRICS);
    let log = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: cannot read the metrics log", path.display()))?;
    let mut terms: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    let mut val_rsum = Vec::new();
    for (n, line) in log.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}: line {} is not JSON", path.display(), n + 1))?;
        let step = v["step"].as_f64().unwrap_or(0.0);
        match v["kind"].as_str() {
            Some("step") => {
                for (name, t) in v["terms"].as_object().into_iter().flatten() {
                    let Some(loss) = t["loss"].as_f64() else {
                        continue;
                    };
                    match terms.iter_mut().find(|(n, _)| n == name) {
                        Some((_, points)) => points.push((step, loss)),
                        None => terms.push((name.clone(), vec![(step, loss)])),
                    }
                }
            }
            Some("epoch") => {
                if let Some(r) = v["val"]["rsum"].as_f64() {
                    val_rsum.push((step, r));
                }
            }
            _ => {}
        }
    }
    Ok(Curves { terms, val_rsum })
}

/// Mean over a trailing window, so per-step noise does not hide the trend.
fn smooth(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let mut sum = 0.0;
    points
        .iter()
        .enumerate()
        .map(|(k, &(x, y))| {
            sum += y;
            if k >= window {
                sum -= points[k - window].1;
            }
            (x, sum / (k + 1).min(window) as f64)
        })
        .collect()
}

/// What one run gives the report.
struct Evaluated {
    name: String,
    metrics: RetrievalMetrics,
    /// Image→text R@K against K.
    i2t_curve: Vec<(f64, f64)>,
    /// Text→image R@K against K.
    t2i_curve: Vec<(f64, f64)>,
    curves: Curves,
    hubs: Vec<(usize, u32)>,
    hub_skewness: f64,
    worst: Vec<(usize, usize)>,
}

fn evaluate(
    run: &Path,
    dataset: &PairedDataset,
    split: &str,
    protocol: Protocol,
) -> Result<Evaluated> {
    let (checkpoint, run_dir) = super::open_model(run)?;
    let config = checkpoint.config.clone();
    let splits = resolve_splits(dataset, &config, Some(&run_dir))?;
    let ids = splits.get(split)?;
    if ids.is_empty() {
        anyhow::bail!("split `{split}` is empty in this dataset; choose train, val or test");
    }
    let mut model = checkpoint.model;
    let chunk = config.train.eval_batch_size;
    // Curves, hubs and worst queries over the whole split (and the metrics, under `full`).
    let view = SplitView::new(ids, &dataset.text_to_image, dataset.images.rows());
    let images = model.embed_all(&dataset.images, &view.images, true, chunk)?;
    let texts = model.embed_all(&dataset.texts, &view.texts, false, chunk)?;
    let dim = model.config.dim;
    let ranks = ranks_from_embeddings(&images, &texts, dim, &view.text_image);
    let ks: Vec<usize> = (1..=MAX_K).collect();
    let full = RetrievalMetrics::from_ranks_at(split, &ranks, &ks);
    // The whole split's ranks are the `full` protocol's; other protocols rank their folds.
    let metrics = if protocol == Protocol::Full {
        RetrievalMetrics::from_ranks(split, &ranks)
    } else {
        evaluate_protocol(&mut model, dataset, ids, split, protocol, &[], chunk)?
    };
    let i2t = full
        .recall_at
        .iter()
        .map(|r| (r.k as f64, r.image_to_text))
        .collect();
    let t2i = full
        .recall_at
        .iter()
        .map(|r| (r.k as f64, r.text_to_image))
        .collect();
    let hub = hubness(&images, &texts, dim, 10);
    let hubs = hub
        .hubs(LISTED)
        .into_iter()
        .map(|(local, count)| (view.images[local] as usize, count))
        .collect();
    let mut worst: Vec<(usize, usize)> = ranks
        .text_to_image
        .iter()
        .enumerate()
        .map(|(t, &r)| (view.texts[t] as usize, r))
        .collect();
    worst.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    worst.truncate(LISTED);
    Ok(Evaluated {
        name: run.display().to_string(),
        metrics,
        i2t_curve: i2t,
        t2i_curve: t2i,
        curves: read_curves(&run_dir)?,
        hubs,
        hub_skewness: hub.skewness,
        worst,
    })
}

/// The first caption of an image, quoted, when the dataset has caption text.
fn caption_of_image(dataset: &PairedDataset, image: usize) -> String {
    let Some(captions) = &dataset.captions else {
        return String::new();
    };
    dataset
        .text_to_image
        .iter()
        .position(|&i| i as usize == image)
        .map(|t| format!(" “{}”", captions[t]))
        .unwrap_or_default()
}

pub fn run(runs: &[PathBuf], data: &Path, out: &Path, split: &str, protocol: &str) -> Result<()> {
    let protocol = Protocol::parse(protocol)?;
    let dataset = PairedDataset::open(data)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for run in runs {
        let (_, run_dir) = super::open_model(run)?;
        tandem::text::TextEncoderRecord::check_same(&run_dir, data)?;
        tandem::image::ImageEncoderRecord::check_same(&run_dir, data)?;
    }
    let evaluated: Vec<Evaluated> = runs
        .iter()
        .map(|r| evaluate(r, &dataset, split, protocol))
        .collect::<Result<_>>()?;
    let several = evaluated.len() > 1;
    let prefix = |e: &Evaluated, what: &str| {
        if several {
            format!("{}: {what}", e.name)
        } else {
            what.to_string()
        }
    };

    // One loss panel per run (losses of different kinds are not on one scale), then the
    // validation rsum of every run together.
    let mut panels: Vec<Panel> = evaluated
        .iter()
        .map(|e| Panel {
            title: prefix(e, "training loss per term (mean of the last 10 steps)"),
            x: "step".into(),
            y: "loss".into(),
            series: e
                .curves
                .terms
                .iter()
                .map(|(term, points)| Series {
                    label: term.clone(),
                    points: smooth(points, 10),
                })
                .collect(),
            log_x: false,
            markers: false,
            legend: SeriesLabelPosition::UpperRight,
        })
        .collect();
    panels.push(Panel {
        title: "validation rsum after each epoch".into(),
        x: "step".into(),
        y: "rsum".into(),
        series: evaluated
            .iter()
            .map(|e| Series {
                label: if several {
                    e.name.clone()
                } else {
                    "validation rsum".into()
                },
                points: e.curves.val_rsum.clone(),
            })
            .collect(),
        log_x: false,
        markers: false,
        legend: SeriesLabelPosition::LowerRight,
    });
    plots::write(&out.join("training"), &panels)?;
    let curve = |pick: &dyn Fn(&Evaluated) -> Vec<(f64, f64)>| -> Vec<Series> {
        evaluated
            .iter()
            .map(|e| Series {
                label: if several {
                    e.name.clone()
                } else {
                    "tandem".into()
                },
                points: pick(e),
            })
            .collect()
    };
    plots::write(
        &out.join("recall"),
        &[
            Panel {
                title: format!("image→text Recall@K (hit rate), {split} split"),
                x: "K".into(),
                y: "R@K (%)".into(),
                series: curve(&|e| e.i2t_curve.clone()),
                log_x: true,
                markers: false,
                legend: SeriesLabelPosition::LowerRight,
            },
            Panel {
                title: format!("text→image Recall@K, {split} split"),
                x: "K".into(),
                y: "R@K (%)".into(),
                series: curve(&|e| e.t2i_curve.clone()),
                log_x: true,
                markers: false,
                legend: SeriesLabelPosition::LowerRight,
            },
        ],
    )?;

    let rows: Vec<(&str, &RetrievalMetrics)> = evaluated
        .iter()
        .map(|e| (e.name.as_str(), &e.metrics))
        .collect();
    let table = comparison_table(&rows);
    let mut md = format!(
        "# tandem report\n\nSplit `{split}`, protocol `{}`; R@K is the hit rate.\n\n```\n{table}```\n\n",
        protocol.name()
    );
    for e in &evaluated {
        let m = &e.metrics;
        let _ = writeln!(
            md,
            "- `{}`: image→text mAP@R {:.1}, NDCG@10 {:.1}; median rank i→t {}, t→i {}",
            e.name,
            m.image_to_text_map_at_r,
            m.image_to_text_ndcg_at_10,
            m.image_to_text_medr,
            m.text_to_image_medr
        );
    }
    md.push_str("\n![training curves](training.png)\n\n![Recall@K](recall.png)\n\n");
    for e in &evaluated {
        let _ = writeln!(
            md,
            "## Failure analysis: `{}`\n\nHubs, the images most often among a caption's top 10 (k-occurrence skewness {:.2}):\n",
            e.name, e.hub_skewness
        );
        for (image, count) in &e.hubs {
            let _ = writeln!(
                md,
                "- image {image}: in {count} top-10 lists{}",
                caption_of_image(&dataset, *image)
            );
        }
        md.push_str("\nCaptions whose image ranks worst:\n\n");
        for (caption, rank) in &e.worst {
            let text = dataset
                .captions
                .as_ref()
                .map(|c| format!(" “{}”", c[*caption]))
                .unwrap_or_default();
            let _ = writeln!(
                md,
                "- caption {caption}{text}: its image {} ranks {rank}",
                dataset.text_to_image[*caption]
            );
        }
        md.push('\n');
    }
    tandem::fsio::write_atomic(&out.join("summary.md"), md.as_bytes())?;
    print!("{table}");
    tracing::info!(
        "wrote {} (summary.md, training.png/svg, recall.png/svg)",
        out.display()
    );
    Ok(())
}
