//! Ranking at scale: `N_TEXTS` captions × `N_IMAGES` images of random unit vectors, timed, with
//! the process's peak memory. The scale check of evaluation (1M × 200k on 2 cores):
//!
//! `cargo run --release -p tandem --example rank_scale -- 1000000 200000 64`

use std::time::Instant;

use rand::{Rng, SeedableRng};
use tandem::eval::{RetrievalMetrics, ranks_from_embeddings};

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("usage: rank_scale N_TEXTS N_IMAGES DIM"))
        .collect();
    let [n_texts, n_images, dim] = args[..] else {
        panic!("usage: rank_scale N_TEXTS N_IMAGES DIM");
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut unit = |rows: usize| -> Vec<f32> {
        let mut v: Vec<f32> = (0..rows * dim)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        for row in v.chunks_mut(dim) {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            row.iter_mut().for_each(|x| *x /= norm);
        }
        v
    };
    let images = unit(n_images);
    let texts = unit(n_texts);
    let ids: Vec<u32> = (0..n_texts).map(|t| (t % n_images) as u32).collect();
    let before = peak_rss_mib().unwrap_or(f64::NAN);
    let started = Instant::now();
    let ranks = ranks_from_embeddings(&images, &texts, dim, &ids);
    let seconds = started.elapsed().as_secs_f64();
    let m = RetrievalMetrics::from_ranks("scale", &ranks);
    println!(
        "{n_texts} captions x {n_images} images, dim {dim}: {seconds:.1} s, {:.2e} pairs/s; peak RSS {:.0} MiB ({before:.0} MiB before ranking); rsum {:.2}",
        (n_texts as f64 * n_images as f64) / seconds,
        peak_rss_mib().unwrap_or(f64::NAN),
        m.rsum
    );
}
