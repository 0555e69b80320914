//! Step time and peak memory of training on a dataset folder with its features in memory or
//! streamed from disk, for the streaming figures of docs/performance.md:
//!
//! `cargo run --release -p tandem --example train_steps -- DATA memory|stream STEPS [SKIP]`
//!
//! Trains the reference recipe (the default config) for `STEPS` steps of the first epoch and
//! prints one JSON line: the median and mean step time after the first `SKIP` (default 3)
//! steps, which include the first reads and the allocator's warm-up, and the peak RSS of the
//! whole process (opening the dataset included).

use std::time::Instant;

use candle_core::Device;
use tandem::config::Config;
use tandem::data::{PairedDataset, Residency};
use tandem::train::Trainer;

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() -> tandem::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: train_steps DATA memory|stream STEPS [SKIP]";
    let (data, features, steps, skip) = match &args[..] {
        [d, f, s] => (d, f, s, "3"),
        [d, f, s, k] => (d, f, s, k.as_str()),
        _ => panic!("{usage}"),
    };
    let residency = Residency::parse(features)?;
    let steps: usize = steps.parse().expect(usage);
    let skip: usize = skip.parse().expect(usage);
    let opened = Instant::now();
    let dataset = PairedDataset::open_with(std::path::Path::new(data), residency)?;
    let open_s = opened.elapsed().as_secs_f64();
    let run = tempfile::tempdir().expect("a temporary run folder");
    let config = Config::default();
    let mut trainer = Trainer::start(&dataset, &config, run.path(), &Device::Cpu)?;
    let mut times = Vec::with_capacity(steps);
    for _ in 0..steps.min(trainer.steps_per_epoch()) {
        let started = Instant::now();
        trainer.step()?.expect("a batch of the first epoch");
        times.push(started.elapsed().as_secs_f64());
    }
    let mut timed = times[skip.min(times.len())..].to_vec();
    timed.sort_by(f64::total_cmp);
    let median = timed.get(timed.len() / 2).copied().unwrap_or(f64::NAN);
    let mean = timed.iter().sum::<f64>() / timed.len().max(1) as f64;
    println!(
        "{}",
        serde_json::json!({
            "data": data, "features": features, "images": dataset.images.rows(),
            "captions": dataset.texts.rows(), "streamed": dataset.images.is_streamed(),
            "open_s": open_s, "steps": times.len(), "median_step_s": median,
            "mean_step_s": mean, "peak_rss_mib": peak_rss_mib(),
        })
    );
    Ok(())
}
