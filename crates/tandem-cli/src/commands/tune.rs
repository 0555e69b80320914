//! `tandem tune`: the search, its progress on stderr, the trial table on stdout and a plot.

use std::path::Path;

use anyhow::{Context, Result};
use tandem::data::PairedDataset;
use tandem::train::Observer;
use tandem::tune::{
    JobStart, Sampler, SearchSpace, TuneFiles, TuneObserver, TuneOptions, TuneReport,
};

use crate::cli::{Format, SamplerArg, TuneArgs};
use crate::output::csv_field;
use crate::plots::{Panel, Series};
use crate::progress::Progress;

pub fn run(args: &TuneArgs) -> Result<()> {
    let sampler = match args.sampler {
        SamplerArg::Random => Sampler::Random,
        SamplerArg::Grid => Sampler::Grid,
    };
    if sampler == Sampler::Random && args.budget.is_none() && args.trials.is_none() {
        anyhow::bail!(
            "a random search never runs out of trials\n  fix: give it --budget (e.g. 30m) or --trials N"
        );
    }
    let base = tandem::config::Config::resolve(args.config.as_deref(), &args.sets)?;
    // The whole space is checked before the dataset is even opened: a typo costs nothing.
    let space = SearchSpace::read(&args.space, &base, sampler)?;
    let journal = args.out.join(TuneFiles::JOURNAL);
    if args.overwrite && journal.exists() {
        let trials = args.out.join(TuneFiles::TRIAL_DIRS);
        if trials.exists() {
            std::fs::remove_dir_all(&trials)
                .with_context(|| format!("{}: cannot remove the old trials", trials.display()))?;
        }
        std::fs::remove_file(&journal)
            .with_context(|| format!("{}: cannot remove the old journal", journal.display()))?;
    } else if journal.exists() {
        tracing::info!(
            "tune: continuing the search in {} (pass --overwrite to start over)",
            args.out.display()
        );
    }
    let dataset = PairedDataset::open(&args.data)?;
    super::train::record_encoders(&args.data, &args.out)?;
    let options = TuneOptions {
        sampler,
        seed: args.seed,
        eta: args.eta as usize,
        min_epochs: args.min_epochs,
        max_trials: args.trials,
        budget: args.budget,
    };
    let device = tandem::default_device()?;
    let mut progress = SearchProgress {
        budget: args.budget.map(|b| b.as_secs_f64()),
    };
    let report = tandem::tune::search(
        &dataset,
        &base,
        &space,
        &options,
        &args.out,
        &device,
        &mut progress,
    )?;
    write_plot(&args.out.join("val_rsum"), &report)?;
    match report.ended.as_deref() {
        Some("budget") => tracing::info!(
            "tune: the budget is spent; run the same command with a larger --budget to continue"
        ),
        _ => tracing::info!("tune: every trial is done"),
    }
    if let Some(best) = report.best {
        tracing::info!(
            "tune: best trial {best}; its config is {} (train it with `tandem train --config`)",
            args.out.join(TuneFiles::BEST).display()
        );
    }
    print!("{}", render(&report, args.format));
    Ok(())
}

/// One log line per job and per result; a training bar per trial on a terminal.
struct SearchProgress {
    budget: Option<f64>,
}

impl SearchProgress {
    fn clock(&self, search_seconds: f64) -> String {
        match self.budget {
            Some(b) => format!("{} of {}", minutes(search_seconds), minutes(b)),
            None => minutes(search_seconds),
        }
    }
}

fn minutes(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    format!("{}:{:02}", s / 60, s % 60)
}

impl TuneObserver for SearchProgress {
    fn on_job(&mut self, job: &JobStart) -> Box<dyn Observer> {
        let values: Vec<String> = job.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        tracing::info!(
            "tune: trial {} rung {}/{} → {} epochs{} · {} · {}",
            job.trial,
            job.rung + 1,
            job.rungs.len(),
            job.epochs,
            if job.resumed { " (resumed)" } else { "" },
            values.join(" "),
            self.clock(job.search_seconds)
        );
        Box::new(Quiet(Progress::new(&format!("trial {}", job.trial))))
    }

    fn on_report(&mut self, report: &TuneReport) {
        if let Some(best) = report.best.map(|b| &report.trials[b]) {
            tracing::info!(
                "tune: {} trials · best val rsum {:.1} (trial {}, {} epochs) · {}",
                report.trials.len(),
                best.val_rsum.unwrap_or(f64::NAN),
                best.trial,
                best.epochs,
                self.clock(report.search_seconds)
            );
        }
    }
}

/// A trial's training bar without its per-epoch log lines (the search logs per job).
struct Quiet(Progress);

impl Observer for Quiet {
    fn on_start(&mut self, epochs: usize, steps_per_epoch: usize) {
        self.0.on_start(epochs, steps_per_epoch);
    }
    fn on_step(&mut self, report: &tandem::train::StepReport) {
        self.0.on_step(report);
    }
    fn on_warning(&mut self, message: &str) {
        self.0.on_warning(message);
    }
}

/// Trials best first: highest rung, then validation rsum.
fn ranked(report: &TuneReport) -> Vec<&tandem::tune::TrialRow> {
    let mut rows: Vec<_> = report.trials.iter().collect();
    rows.sort_by(|a, b| {
        b.rung
            .cmp(&a.rung)
            .then(
                b.val_rsum
                    .unwrap_or(f64::NEG_INFINITY)
                    .total_cmp(&a.val_rsum.unwrap_or(f64::NEG_INFINITY)),
            )
            .then(a.trial.cmp(&b.trial))
    });
    rows
}

fn keys(report: &TuneReport) -> Vec<String> {
    let mut keys: Vec<String> = report
        .trials
        .iter()
        .flat_map(|t| t.params.keys().cloned())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn value_text(value: Option<&serde_json::Value>) -> String {
    match value {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => String::new(),
    }
}

fn render(report: &TuneReport, format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(report).expect("reports serialise") + "\n",
        Format::Table => table(report),
        Format::Csv => csv(report),
    }
}

fn table(report: &TuneReport) -> String {
    let keys = keys(report);
    let widths: Vec<usize> = keys
        .iter()
        .map(|k| {
            report
                .trials
                .iter()
                .map(|t| value_text(t.params.get(k)).chars().count())
                .chain([k.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = format!(
        "{:>5} {:>7} {:>7} {:>9} {:>6}  {:<8}",
        "trial", "epochs", "best@", "val rsum", "sec", "status"
    );
    for (k, w) in keys.iter().zip(&widths) {
        s.push_str(&format!("  {k:<w$}"));
    }
    s.push('\n');
    for t in ranked(report) {
        let status = t.status.split(':').next().unwrap_or_default();
        s.push_str(&format!(
            "{:>5} {:>7} {:>7} {:>9} {:>6.0}  {:<8}",
            t.trial,
            t.epochs,
            t.best_epoch.map(|e| e.to_string()).unwrap_or_default(),
            t.val_rsum
                .filter(|v| v.is_finite())
                .map(|v| format!("{v:.1}"))
                .unwrap_or_else(|| "-".into()),
            t.seconds,
            status
        ));
        for (k, w) in keys.iter().zip(&widths) {
            s.push_str(&format!("  {:<w$}", value_text(t.params.get(k))));
        }
        s.push('\n');
    }
    s.push_str(&format!(
        "{} trials, rungs of {:?} epochs, {} of training{}\n",
        report.trials.len(),
        report.rungs,
        minutes(report.search_seconds),
        report
            .best
            .map(|b| format!("; best: trial {b}"))
            .unwrap_or_default()
    ));
    s
}

fn csv(report: &TuneReport) -> String {
    let keys = keys(report);
    let mut s = String::from("trial,epochs,best_epoch,val_rsum,seconds,status");
    for k in &keys {
        s.push(',');
        s.push_str(&csv_field(k));
    }
    s.push('\n');
    for t in ranked(report) {
        s.push_str(&format!(
            "{},{},{},{},{:.1},{}",
            t.trial,
            t.epochs,
            t.best_epoch.map(|e| e.to_string()).unwrap_or_default(),
            t.val_rsum
                .filter(|v| v.is_finite())
                .map(|v| format!("{v:.4}"))
                .unwrap_or_default(),
            t.seconds,
            csv_field(&t.status)
        ));
        for k in &keys {
            s.push(',');
            s.push_str(&csv_field(&value_text(t.params.get(k))));
        }
        s.push('\n');
    }
    s
}

/// Validation rsum of every trial at every rung it finished, one colour per rung.
fn write_plot(stem: &Path, report: &TuneReport) -> Result<()> {
    let mut per_rung: Vec<Series> = report
        .rungs
        .iter()
        .map(|e| Series {
            label: format!("after {e} epochs"),
            points: Vec::new(),
        })
        .collect();
    for t in &report.trials {
        for (rung, &score) in t.rung_scores.iter().enumerate() {
            if score.is_finite() {
                per_rung[rung].points.push((t.trial as f64, score));
            }
        }
    }
    per_rung.retain(|s| !s.points.is_empty());
    let panels = [Panel {
        title: "validation rsum of each trial at each rung".into(),
        x: "trial".into(),
        y: "val rsum".into(),
        series: per_rung,
        log_x: false,
        markers: true,
        legend: plotters::prelude::SeriesLabelPosition::LowerRight,
    }];
    crate::plots::write(stem, &panels)
}
