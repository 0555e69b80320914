//! An index folder over synthetic embeddings, for benchmarks at gallery sizes no bundled
//! dataset has (`bench/serve_load.sh`, the HNSW recall figure in docs/search.md):
//!
//! `cargo run --release -p tandem --example synthetic_index -- OUT N_IMAGES [--hnsw]`
//!
//! `N_IMAGES` 512-d image embeddings and as many caption embeddings (caption i belongs to
//! image i), drawn by [`LatentRows`] (32-d latent, noise 0.3), and a randomly initialised model
//! of the same width (its raw inputs are 16-d) so that `tandem search` and `tandem serve` open
//! the folder like any other index. With `--hnsw` the graphs are built with the default
//! parameters and their recall against exact search is printed.

use std::time::Instant;

use candle_core::Device;
use tandem::config::Config;
use tandem::data::LatentRows;
use tandem::index::{HnswParams, Index};
use tandem::model::{TwoBranch, save_checkpoint};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (out, n, hnsw) = match &args[..] {
        [out, n] => (out, n, false),
        [out, n, flag] if flag == "--hnsw" => (out, n, true),
        _ => panic!("usage: synthetic_index OUT N_IMAGES [--hnsw]"),
    };
    let out = std::path::Path::new(out);
    let n: usize = n.parse().expect("N_IMAGES is a number");
    let rows = LatentRows::default();
    let started = Instant::now();
    let images = rows.draw(n, 1);
    let texts = rows.draw(n, 2);
    println!(
        "drew {n} + {n} rows of width {} in {:.1} s",
        rows.dim,
        started.elapsed().as_secs_f64()
    );
    let mut config = Config::default();
    config.model.hidden = vec![32];
    config.model.dim = rows.dim;
    let model = TwoBranch::new(16, 16, &config.model, 1, &Device::Cpu).unwrap();
    std::fs::create_dir_all(out).unwrap();
    let checkpoint = out.join(".model.safetensors");
    save_checkpoint(&checkpoint, &model, &config, 0, &[], &[]).unwrap();
    let mut index = Index::from_embeddings(images, texts, (0..n as u32).collect(), None, model);
    if hnsw {
        let started = Instant::now();
        index
            .build_approximate(HnswParams::default(), |done, total| {
                if done % (1 << 16) < 8192 {
                    eprintln!("hnsw: {done}/{total} rows");
                }
            })
            .unwrap();
        println!(
            "built both HNSW graphs in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let approximate = index.approximate.as_ref().unwrap();
        for (name, r) in ["images", "captions"].iter().zip(&approximate.recall) {
            println!(
                "{name}: {} rows, recall@10 {:.4} over {} queries at ef {}; hnsw {:.0} queries/s, exact {:.0} queries/s (one query at a time on every core); build {:.1} s",
                r.rows,
                r.recall_at_10,
                r.queries,
                r.ef,
                r.approximate_queries_per_s,
                r.exact_queries_per_s,
                r.build_seconds
            );
        }
    }
    index.save(out, &checkpoint).unwrap();
    std::fs::remove_file(&checkpoint).unwrap();
    println!("wrote {}", out.display());
}
