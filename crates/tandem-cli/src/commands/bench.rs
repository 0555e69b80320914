//! `tandem bench`: the training step at the paper's size and a small one, the loss alone and
//! the evaluation ranking, each next to this machine's own matrix-multiply rate measured in the
//! same run (the floor a step's matrix products set).

use anyhow::Result;
use serde::Serialize;
use tandem::data::LatentRows;
use tandem::train::bench::{StepBench, StepShape, Timing, sgemm_gflops, time};

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
    /// `median / (gflop / sgemm rate)`: 1.0 would be all time in gemm at the probe's rate.
    times_floor: Option<f64>,
}

pub fn run(size: BenchSize, runs: usize, format: Format) -> Result<()> {
    if runs == 0 {
        anyhow::bail!("--runs must be at least 1");
    }
    let device = tandem::default_device()?;
    // The probe runs before and after the other items and the faster of the two sets the rate:
    // on a shared machine one probe alone was seen 30% slow for a while, which made the floor
    // too low and a step look faster than its own products.
    let first_probe = sgemm_gflops(2048, runs.max(3), &device)?;
    tracing::info!("matrix products: {}", tandem::model::gemm::backend());
    let mut rows = Vec::new();
    let row = |what: String, timing: Timing, gflop: Option<f64>| Row {
        what,
        timing,
        gflop,
        gflop_per_s: gflop.map(|g| g / timing.median),
        times_floor: None,
    };
    let shapes: &[(&str, StepShape)] = match size {
        BenchSize::Small => &[("small", StepShape::SMALL)],
        BenchSize::Paper => &[("paper", StepShape::PAPER)],
        BenchSize::All => &[("small", StepShape::SMALL), ("paper", StepShape::PAPER)],
    };
    for &(name, shape) in shapes {
        tracing::info!("timing the {name} training step");
        let mut bench = StepBench::new(shape, &device)?;
        let step = time(runs, || bench.step().map(drop))?;
        rows.push(row(
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
            Some(shape.matmul_flops() / 1e9),
        ));
        let mut reference = StepBench::new(shape, &device)?.with_autograd();
        let autograd = time(runs, || reference.step().map(drop))?;
        drop(reference);
        rows.push(row(
            "  same step, branches by candle's autograd (reference)".into(),
            autograd,
            Some(shape.matmul_flops() / 1e9),
        ));
        let phases = bench.time_phases(runs)?;
        for (phase, timing) in [
            ("forward, both branches", phases.forward),
            ("loss forward", phases.loss),
            ("backward", phases.backward),
            ("optimiser update (Adam)", phases.optimizer),
        ] {
            rows.push(row(format!("  of which {phase}"), timing, None));
        }
        let assembly = tandem::train::bench::time_batch_assembly(shape, runs, &device)?;
        rows.push(row(
            format!(
                "  batch assembly (gather the rows; {:.1}% of the step)",
                100.0 * assembly.median / step.median
            ),
            assembly,
            None,
        ));
        let loss = bench.time_loss(runs)?;
        rows.push(row(
            format!("the paper's loss alone (forward + backward), {name} batch"),
            loss,
            Some(shape.loss_flops() / 1e9),
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
    let rank = time(runs, || {
        tandem::eval::ranks_from_embeddings(&ie, &te, dim, &owner);
        Ok(())
    })?;
    rows.push(row(
        format!("evaluation ranking, {images} images × {texts} captions, dim {dim}"),
        rank,
        Some(2.0 * (images * texts * dim) as f64 / 1e9),
    ));

    let last_probe = sgemm_gflops(2048, runs.max(3), &device)?;
    let (rate, probe) = if last_probe.0 > first_probe.0 {
        last_probe
    } else {
        first_probe
    };
    for r in &mut rows {
        r.times_floor = r.gflop.map(|g| r.timing.median / (g / rate));
    }
    rows.insert(
        0,
        Row {
            what: format!(
                "sgemm probe 2048³, best of before ({:.0}) and after ({:.0} GFLOP/s)",
                first_probe.0, last_probe.0
            ),
            timing: probe,
            gflop: Some(2.0 * 2048f64.powi(3) / 1e9),
            gflop_per_s: Some(rate),
            times_floor: None,
        },
    );

    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Format::Csv => {
            println!("what,median_s,min_s,max_s,runs,gflop,gflop_per_s,times_floor");
            let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
            for r in &rows {
                println!(
                    "{},{:.4},{:.4},{:.4},{},{},{},{}",
                    crate::output::csv_field(&r.what),
                    r.timing.median,
                    r.timing.min,
                    r.timing.max,
                    r.timing.runs,
                    opt(r.gflop),
                    opt(r.gflop_per_s),
                    opt(r.times_floor)
                );
            }
        }
        Format::Table => {
            println!(
                "{:<66} {:>10} {:>19} {:>7} {:>8} {:>7}",
                "what", "median", "min–max", "GFLOP", "GFLOP/s", "× floor"
            );
            let opt =
                |v: Option<f64>, p: usize| v.map_or("–".to_string(), |v| format!("{v:.p$}"));
            for r in &rows {
                let range = format!("{:.3}–{:.3} s", r.timing.min, r.timing.max);
                println!(
                    "{:<66} {:>8.3} s {:>19} {:>7} {:>8} {:>7}",
                    r.what,
                    r.timing.median,
                    range,
                    opt(r.gflop, 1),
                    opt(r.gflop_per_s, 1),
                    opt(r.times_floor, 2)
                );
            }
            println!(
                "(median of {runs} runs after one warm-up; floor = GFLOP / {rate:.1} GFLOP/s, this machine's sgemm rate measured above; gemm: {})",
                tandem::model::gemm::backend()
            );
        }
    }
    Ok(())
}
