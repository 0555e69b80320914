//! `tandem bench`: the training step at the paper's size and a small one, the loss alone and
//! the evaluation ranking, each next to this machine's own matrix-multiply rate measured in the
//! same run (the floor a step's matrix products set): a probe product runs between any two
//! timed runs, and each run is placed against the rate of its own moment.

use anyhow::Result;
use serde::Serialize;
use tandem::data::LatentRows;
use tandem::train::CpuPeak;
use tandem::train::bench::{
    FloorRatio, SgemmProbe, StepBench, StepShape, Timing, time_against_floor,
};

use crate::cli::{BenchSize, Format};

/// One timed item.
#[derive(Serialize)]
struct Row {
    what: String,
    #[serde(flatten)]
    timing: Timing,
    /// Matrix-product work, when it is known.
    gflop: Option<f64>,
    /// `gflop / median`.
    gflop_per_s: Option<f64>,
    /// Median over the runs of `seconds / (gflop / sgemm rate)`, each run against the probe
    /// product next to it: 1.0 would be all time in gemm at the probe's rate.
    times_floor: Option<f64>,
    /// The spread of those ratios and the probe rates they used.
    floor: Option<FloorRatio>,
    /// `median / (gflop / peak)`: 1.0 would be every product at the CPU's theoretical peak.
    times_peak: Option<f64>,
}

/// The report: the rows, the host's theoretical peak and each gemm's probe rate.
#[derive(Serialize)]
struct Report<'a> {
    /// In theory, from the reported clock; `None` where the operating system does not say it.
    peak: Option<&'a CpuPeak>,
    /// Multiply-add chains on every usable core at once, GFLOP/s.
    measured_peak_gflops: f64,
    /// The higher of the two, which `times_peak` divides by.
    ceiling_gflops: f64,
    /// GFLOP/s of each gemm of this build on the 2048³ probe at the start.
    probe_by_backend: Vec<(&'static str, f64)>,
    rows: &'a [Row],
}

pub fn run(size: BenchSize, runs: usize, format: Format) -> Result<()> {
    if runs == 0 {
        anyhow::bail!("--runs must be at least 1");
    }
    let device = tandem::default_device()?;
    let probe = SgemmProbe::new(2048, &device)?;
    // The rate at the start, for the report's first line.
    let (first_rate, first_probe) = probe.best_rate(runs.max(3))?;
    let by_backend: Vec<(&'static str, f64)> = probe
        .rate_by_backend(runs.max(3))?
        .into_iter()
        .map(|(b, rate)| (b.name(), rate))
        .collect();
    let peak = CpuPeak::detect();
    let measured_peak = tandem::train::measured_fma_peak(0.5);
    // The ceiling is the higher of the two: a virtual machine may report only its base clock.
    let ceiling = peak
        .as_ref()
        .map_or(measured_peak, |p| p.gflops.max(measured_peak));
    let times_peak = |median: f64, gflop: f64| Some(median * ceiling / gflop);
    tracing::info!("matrix products: {}", tandem::model::gemm::backend());
    let mut rows = Vec::new();
    let plain = |what: String, timing: Timing| Row {
        what,
        timing,
        gflop: None,
        gflop_per_s: None,
        times_floor: None,
        floor: None,
        times_peak: None,
    };
    let placed = |what: String, (timing, floor): (Timing, FloorRatio), gflop: f64| Row {
        what,
        timing,
        gflop: Some(gflop),
        gflop_per_s: Some(gflop / timing.median),
        times_floor: Some(floor.median),
        floor: Some(floor),
        times_peak: times_peak(timing.median, gflop),
    };
    let shapes: &[(&str, StepShape)] = match size {
        BenchSize::Small => &[("small", StepShape::SMALL)],
        BenchSize::Paper => &[("paper", StepShape::PAPER)],
        BenchSize::All => &[("small", StepShape::SMALL), ("paper", StepShape::PAPER)],
    };
    for &(name, shape) in shapes {
        tracing::info!("timing the {name} training step");
        let gflop = shape.matmul_flops() / 1e9;
        let mut bench = StepBench::new(shape, &device)?;
        let step = time_against_floor(runs, &probe, gflop, || bench.step().map(drop))?;
        let step_median = step.0.median;
        rows.push(placed(
            format!(
                "train step, {name}: B = {} + {} captions, {}/{} → {} → {}",
                shape.images,
                shape.captions(),
                shape.d_image,
                shape.d_text,
                shape.hidden,
                shape.dim
            ),
            step,
            gflop,
        ));
        let mut reference = StepBench::new(shape, &device)?.with_autograd();
        let autograd = time_against_floor(runs, &probe, gflop, || reference.step().map(drop))?;
        drop(reference);
        rows.push(placed(
            "  same step, branches by candle's autograd (reference)".into(),
            autograd,
            gflop,
        ));
        let phases = bench.time_phases(runs)?;
        for (phase, timing) in [
            ("forward, both branches", phases.forward),
            ("loss forward", phases.loss),
            ("backward", phases.backward),
            ("optimiser update (Adam)", phases.optimizer),
        ] {
            rows.push(plain(format!("  of which {phase}"), timing));
        }
        let assembly = tandem::train::bench::time_batch_assembly(shape, runs, &device)?;
        rows.push(plain(
            format!(
                "  batch assembly (gather the rows; {:.1}% of the step)",
                100.0 * assembly.median / step_median
            ),
            assembly,
        ));
        let loss_gflop = shape.loss_flops() / 1e9;
        let loss = bench.time_loss_against_floor(runs, &probe, loss_gflop)?;
        rows.push(placed(
            format!("the paper's loss alone (forward + backward), {name} batch"),
            loss,
            loss_gflop,
        ));
    }
    // Evaluation: a COCO 1K fold's ranking both ways at width 512.
    let (images, texts, dim) = (1000, 5000, 512);
    let spec = LatentRows {
        dim,
        ..LatentRows::default()
    };
    let (ie, te) = (spec.draw(images, 1), spec.draw(texts, 2));
    let owner: Vec<u32> = (0..texts as u32).map(|t| t / 5).collect();
    let rank_gflop = 2.0 * (images * texts * dim) as f64 / 1e9;
    let rank = time_against_floor(runs, &probe, rank_gflop, || {
        tandem::eval::ranks_from_embeddings(&ie, &te, dim, &owner);
        Ok(())
    })?;
    rows.push(placed(
        format!("evaluation ranking, {images} images × {texts} captions, dim {dim}"),
        rank,
        rank_gflop,
    ));

    let (last_rate, last_probe) = probe.best_rate(runs.max(3))?;
    let timing = if last_rate > first_rate {
        last_probe
    } else {
        first_probe
    };
    let (slowest, fastest) = rows
        .iter()
        .filter_map(|r| r.floor)
        .fold((f64::INFINITY, 0f64), |(lo, hi), f| {
            (lo.min(f.probe_slowest), hi.max(f.probe_fastest))
        });
    rows.insert(
        0,
        Row {
            what: format!(
                "sgemm probe 2048³: best of before ({first_rate:.0}) and after ({last_rate:.0} GFLOP/s)"
            ),
            timing,
            gflop: Some(probe.gflop()),
            gflop_per_s: Some(first_rate.max(last_rate)),
            times_floor: None,
            floor: None,
            times_peak: times_peak(timing.min, probe.gflop()),
        },
    );
    let report = Report {
        peak: peak.as_ref(),
        measured_peak_gflops: measured_peak,
        ceiling_gflops: ceiling,
        probe_by_backend: by_backend,
        rows: &rows,
    };
    print_report(&report, runs, (slowest, fastest), format)
}

fn print_report(
    report: &Report,
    runs: usize,
    (slowest, fastest): (f64, f64),
    format: Format,
) -> Result<()> {
    let rows = report.rows;

    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(report)?),
        Format::Csv => {
            println!(
                "what,median_s,min_s,max_s,runs,gflop,gflop_per_s,times_floor,\
                 times_floor_min,times_floor_max,probe_slowest,probe_fastest,times_peak"
            );
            let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
            for r in rows {
                println!(
                    "{},{:.4},{:.4},{:.4},{},{},{},{},{},{},{},{},{}",
                    crate::output::csv_field(&r.what),
                    r.timing.median,
                    r.timing.min,
                    r.timing.max,
                    r.timing.runs,
                    opt(r.gflop),
                    opt(r.gflop_per_s),
                    opt(r.times_floor),
                    opt(r.floor.map(|f| f.min)),
                    opt(r.floor.map(|f| f.max)),
                    opt(r.floor.map(|f| f.probe_slowest)),
                    opt(r.floor.map(|f| f.probe_fastest)),
                    opt(r.times_peak),
                );
            }
        }
        Format::Table => {
            println!(
                "{:<66} {:>10} {:>19} {:>7} {:>8} {:>7} {:>11} {:>7}",
                "what", "median", "min–max", "GFLOP", "GFLOP/s", "× floor", "floor range", "× peak"
            );
            let opt =
                |v: Option<f64>, p: usize| v.map_or("–".to_string(), |v| format!("{v:.p$}"));
            for r in rows {
                let range = format!("{:.3}–{:.3} s", r.timing.min, r.timing.max);
                let floor_range = r
                    .floor
                    .map_or("–".to_string(), |f| format!("{:.2}–{:.2}", f.min, f.max));
                println!(
                    "{:<66} {:>8.3} s {:>19} {:>7} {:>8} {:>7} {:>11} {:>7}",
                    r.what,
                    r.timing.median,
                    range,
                    opt(r.gflop, 1),
                    opt(r.gflop_per_s, 1),
                    opt(r.times_floor, 2),
                    floor_range,
                    opt(r.times_peak, 2)
                );
            }
            let probes: Vec<String> = report
                .probe_by_backend
                .iter()
                .map(|(name, rate)| format!("{name} {rate:.0} GFLOP/s"))
                .collect();
            println!(
                "gemms of this build on the probe: {} (the floor is the fastest)",
                probes.join(", ")
            );
            let theory = report.peak.map_or(
                "unknown (the system does not report the clock)".to_string(),
                |p| format!("{} (FMA units assumed)", p.describe()),
            );
            println!(
                "peak: {:.0} GFLOP/s, the higher of the measured one ({:.0} GFLOP/s, multiply-add chains on every core) and the theoretical one: {theory}; × peak: median seconds / (GFLOP / peak)",
                report.ceiling_gflops, report.measured_peak_gflops
            );
            println!(
                "(median of {runs} runs after one warm-up; × floor: the median over the runs of seconds / (GFLOP / sgemm rate), \
                 each run against the faster of the probe products just before and just after it, \
                 which ran at {slowest:.0}–{fastest:.0} GFLOP/s; gemm: {})",
                tandem::model::gemm::backend()
            );
        }
    }
    Ok(())
}
