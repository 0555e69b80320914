//! Picks the HNSW crate for tandem's approximate index by measurement: recall@10 against exact
//! search and queries/s on synthetic 512-d unit vectors (latent 32-d structure + noise, as
//! `tandem::data::LatentRows`), both crates given the same distance function.
//!
//! `RUSTFLAGS="-C target-cpu=native" cargo run --release -- N LATENT NOISE [hnsw_rs|instant|both]`
use rand::prelude::*;
use rand_distr::StandardNormal;
use rayon::prelude::*;
use std::time::Instant;

fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    for (x, y) in a.chunks_exact(16).zip(b.chunks_exact(16)) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum()
}

fn data(n: usize, dim: usize, latent: usize, noise: f32, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let basis: Vec<f32> = (0..dim * latent)
        .map(|_| rng.sample::<f32, _>(StandardNormal) / (latent as f32).sqrt())
        .collect();
    (0..n)
        .into_par_iter()
        .map(|i| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed * 1_000_000_007 + i as u64);
            let z: Vec<f32> = (0..latent).map(|_| rng.sample(StandardNormal)).collect();
            let mut x: Vec<f32> = (0..dim)
                .map(|d| {
                    let s: f32 = (0..latent).map(|l| basis[d * latent + l] * z[l]).sum();
                    s + noise * rng.sample::<f32, _>(StandardNormal)
                })
                .collect();
            let norm = x.iter().map(|v| v * v).sum::<f32>().sqrt();
            x.iter_mut().for_each(|v| *v /= norm);
            x
        })
        .collect()
}

#[derive(Clone)]
struct P(Vec<f32>);
impl instant_distance::Point for P {
    fn distance(&self, other: &Self) -> f32 {
        1.0 - dot(&self.0, &other.0)
    }
}
struct D;
impl hnsw_rs::prelude::Distance<f32> for D {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        1.0 - dot(a, b)
    }
}

fn recall(found: &[Vec<usize>], truth: &[Vec<usize>]) -> f64 {
    let hits: usize = found
        .iter()
        .zip(truth)
        .map(|(f, t)| f.iter().filter(|i| t.contains(i)).count())
        .sum();
    hits as f64 / (truth.len() * 10) as f64
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).map_or(100_000, |s| s.parse().unwrap());
    let latent: usize = args.get(2).map_or(32, |s| s.parse().unwrap());
    let noise: f32 = args.get(3).map_or(0.3, |s| s.parse().unwrap());
    let which = args.get(4).cloned().unwrap_or("both".into());
    let dim = 512;
    let gallery = data(n, dim, latent, noise, 1);
    let queries = data(1000, dim, latent, noise, 2);
    let t = Instant::now();
    let truth: Vec<Vec<usize>> = queries
        .par_iter()
        .map(|q| {
            let mut s: Vec<(f32, usize)> = gallery
                .iter()
                .enumerate()
                .map(|(i, g)| (dot(q, g), i))
                .collect();
            s.select_nth_unstable_by(10, |a, b| b.0.total_cmp(&a.0));
            s.truncate(10);
            s.into_iter().map(|x| x.1).collect()
        })
        .collect();
    let exact_s = t.elapsed().as_secs_f64();
    println!(
        "n {n} latent {latent} noise {noise}: exact (naive, 2 threads) {:.0} q/s",
        1000.0 / exact_s
    );
    if which == "both" || which == "hnsw_rs" {
        for (m, efc) in [(16usize, 200usize), (24, 100)] {
            let t = Instant::now();
            let h = hnsw_rs::hnsw::Hnsw::<f32, D>::new(m, n, 16, efc, D);
            let with_ids: Vec<(&Vec<f32>, usize)> = gallery.iter().zip(0..).collect();
            h.parallel_insert(&with_ids);
            let build = t.elapsed().as_secs_f64();
            for ef in [32, 64, 128, 256] {
                let t = Instant::now();
                let found: Vec<Vec<usize>> = queries
                    .iter()
                    .map(|q| h.search(q, 10, ef).into_iter().map(|x| x.d_id).collect())
                    .collect();
                let qps = 1000.0 / t.elapsed().as_secs_f64();
                println!(
                    "hnsw_rs M {m} efC {efc} build {build:.1} s | ef {ef}: recall@10 {:.4}, {qps:.0} q/s (1 thread)",
                    recall(&found, &truth)
                );
            }
        }
    }
    if which == "both" || which == "instant" {
        for efc in [100usize] {
            let t = Instant::now();
            let points: Vec<P> = gallery.iter().cloned().map(P).collect();
            let map = instant_distance::Builder::default()
                .ef_construction(efc)
                .seed(1)
                .build(points, (0..n).collect::<Vec<_>>());
            let build = t.elapsed().as_secs_f64();
            // instant-distance fixes ef_search when the graph is built (Builder::ef_search,
            // default 100): one measurement per graph.
            {
                let t = Instant::now();
                let mut search = instant_distance::Search::default();
                let found: Vec<Vec<usize>> = queries
                    .iter()
                    .map(|q| {
                        map.search(&P(q.clone()), &mut search)
                            .take(10)
                            .map(|x| *x.value)
                            .collect()
                    })
                    .collect();
                let qps = 1000.0 / t.elapsed().as_secs_f64();
                println!(
                    "instant-distance M 32 efC {efc} build {build:.1} s | ef 100 (fixed at build): recall@10 {:.4}, {qps:.0} q/s (1 thread)",
                    recall(&found, &truth)
                );
            }
        }
    }
}
