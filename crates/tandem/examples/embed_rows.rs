//! Times `TwoBranch::embed_rows` on random text features: the library's own time for what
//! `tandem.Model.embed_texts` does from Python (bench/python_overhead.py runs both).
//!
//! `cargo run --release -p tandem --example embed_rows -- CHECKPOINT [ROWS] [RUNS]`

use rand::{Rng, SeedableRng};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let checkpoint = args
        .next()
        .ok_or("usage: embed_rows CHECKPOINT [ROWS] [RUNS]")?;
    let rows: usize = args.next().map_or(Ok(1_000_000), |s| s.parse())?;
    let runs: usize = args.next().map_or(Ok(3), |s| s.parse())?;
    let device = tandem::default_device()?;
    let mut model =
        tandem::model::load_checkpoint(std::path::Path::new(&checkpoint), &device)?.model;
    let cols = model.d_text;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let features: Vec<f32> = (0..rows * cols)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let mut best = f64::INFINITY;
    for _ in 0..runs {
        let started = std::time::Instant::now();
        let out = model.embed_rows(&features, cols, false, 1024)?;
        best = best.min(started.elapsed().as_secs_f64());
        assert_eq!(out.len(), rows * model.config.dim);
    }
    println!("{{\"rows\": {rows}, \"cols\": {cols}, \"best_s\": {best:.4}}}");
    Ok(())
}
