//! `tandem compare RUN...`: runs side by side, from their run folders alone.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use tandem::config::Config;
use tandem::eval::RetrievalMetrics;
use tandem::train::RunFiles;

use crate::cli::Format;
use crate::output::csv_field;

/// What one run folder says about itself.
#[derive(Debug, Serialize)]
struct RunSummary {
    run: PathBuf,
    loss: String,
    epochs: usize,
    steps: usize,
    best_epoch: Option<usize>,
    best_val: Option<RetrievalMetrics>,
    seconds_per_epoch: f64,
}

fn summarise(run: &Path) -> Result<RunSummary> {
    let config = Config::read(&run.join(RunFiles::CONFIG))
        .with_context(|| format!("{} is not a run folder", run.display()))?;
    let path = run.join(RunFiles::METRICS);
    let log = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: cannot read the metrics log", path.display()))?;
    let mut epochs = 0;
    let mut steps = 0;
    let mut seconds = 0.0;
    let mut best: Option<(usize, Option<RetrievalMetrics>)> = None;
    for (n, line) in log.lines().enumerate() {
        let value: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}: line {} is not JSON", path.display(), n + 1))?;
        if value["kind"] != "epoch" {
            continue;
        }
        epochs += 1;
        steps = value["step"].as_u64().unwrap_or(0) as usize;
        seconds += value["seconds"].as_f64().unwrap_or(0.0);
        if value["improved"] == true {
            let val = serde_json::from_value(value["val"].clone()).ok();
            best = Some((value["epoch"].as_u64().unwrap_or(0) as usize, val));
        }
    }
    Ok(RunSummary {
        run: run.to_path_buf(),
        loss: config.loss.label(),
        epochs,
        steps,
        best_epoch: best.as_ref().map(|b| b.0),
        best_val: best.and_then(|b| b.1),
        seconds_per_epoch: seconds / epochs.max(1) as f64,
    })
}

pub fn run(runs: &[PathBuf], format: Format) -> Result<()> {
    let summaries: Vec<RunSummary> = runs.iter().map(|r| summarise(r)).collect::<Result<_>>()?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&summaries)?),
        Format::Csv => print!("{}", csv(&summaries)),
        Format::Table => print!("{}", table(&summaries)),
    }
    Ok(())
}

/// The six validation recalls and rsum, or dashes when the run has no validation split.
fn recalls(s: &RunSummary) -> [Option<f64>; 7] {
    match &s.best_val {
        Some(m) => {
            let [a, b, c] = m.image_to_text;
            let [d, e, f] = m.text_to_image;
            [a, b, c, d, e, f, m.rsum].map(Some)
        }
        None => [None; 7],
    }
}

fn table(summaries: &[RunSummary]) -> String {
    let name = |s: &RunSummary| s.run.display().to_string();
    let width = summaries
        .iter()
        .map(|s| name(s).chars().count())
        .max()
        .unwrap_or(3)
        .max(3);
    let loss_width = summaries
        .iter()
        .map(|s| s.loss.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!(
        "{:<width$}  {:<loss_width$}  epochs  best  i2t R@1   R@5  R@10  t2i R@1   R@5  R@10   rsum  s/epoch\n",
        "run", "loss"
    );
    for s in summaries {
        let cells: String = recalls(s)
            .iter()
            .enumerate()
            .map(|(k, v)| {
                let w = if k == 0 || k == 3 {
                    9
                } else if k == 6 {
                    7
                } else {
                    6
                };
                match v {
                    Some(v) => format!("{v:>w$.1}"),
                    None => format!("{:>w$}", "-"),
                }
            })
            .collect();
        out.push_str(&format!(
            "{:<width$}  {:<loss_width$}  {:>6}  {:>4}{cells}  {:>7.1}\n",
            name(s),
            s.loss,
            s.epochs,
            s.best_epoch.map_or("-".into(), |e| e.to_string()),
            s.seconds_per_epoch
        ));
    }
    out.push_str("validation metrics of each run's best epoch; R@K is the hit rate\n");
    out
}

fn csv(summaries: &[RunSummary]) -> String {
    let mut out = String::from(
        "run,loss,epochs,steps,best_epoch,i2t_R@1,i2t_R@5,i2t_R@10,t2i_R@1,t2i_R@5,t2i_R@10,rsum,seconds_per_epoch\n",
    );
    for s in summaries {
        let cells: Vec<String> = recalls(s)
            .iter()
            .map(|v| v.map_or(String::new(), |v| format!("{v:.4}")))
            .collect();
        out.push_str(&format!(
            "{},{},{},{},{},{},{:.3}\n",
            csv_field(&s.run.display().to_string()),
            csv_field(&s.loss),
            s.epochs,
            s.steps,
            s.best_epoch.map_or(String::new(), |e| e.to_string()),
            cells.join(","),
            s.seconds_per_epoch
        ));
    }
    out
}
