//! tandem's HNSW graph on synthetic embeddings, for the side-by-side with faiss
//! (`bench/hnsw_vs_faiss.sh`):
//!
//! `cargo run --release -p tandem --example hnsw_bench -- OUT N [M EF_CONSTRUCTION [EF,...]]`
//!
//! Draws `N` 512-d image rows and 1,000 caption queries with [`LatentRows`] (the rows of
//! `synthetic_index`), builds the graph over the images, and for each `ef` prints recall@10
//! against exact search and queries per second (the median of five passes), one query at a
//! time, on one thread and on every core. Writes `images.npy`, `queries.npy` and `exact.npy` (the exact top 10 ids) into
//! `OUT` for the faiss side, and the results as `tandem.json`.

use std::path::Path;
use std::time::Instant;

use tandem::data::LatentRows;
use tandem::data::npy;
use tandem::eval::top_k;
use tandem::index::{GraphDigest, HnswGraph, HnswParams};

const QUERIES: usize = 1000;
const K: usize = 10;
/// Timed passes over the queries; the median is reported (a VM's speed drifts by 10–20%
/// between passes of half a second).
const ROUNDS: usize = 5;

/// Queries per second of the median of [`ROUNDS`] passes of `pass` (each searches every query).
fn median_rate(mut pass: impl FnMut()) -> f64 {
    let mut seconds: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let started = Instant::now();
            pass();
            started.elapsed().as_secs_f64()
        })
        .collect();
    seconds.sort_by(f64::total_cmp);
    QUERIES as f64 / seconds[ROUNDS / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: hnsw_bench OUT N [M EF_CONSTRUCTION [EF,...]]";
    let out = Path::new(args.first().expect(usage));
    let n: usize = args.get(1).expect(usage).parse().expect("N is a number");
    let connections: usize = args
        .get(2)
        .map_or(24, |v| v.parse().expect("M is a number"));
    let ef_construction: usize = args.get(3).map_or(100, |v| v.parse().expect(usage));
    let efs: Vec<usize> = args
        .get(4)
        .map_or("16,32,50,100,200".into(), String::clone)
        .split(',')
        .map(|v| v.parse().expect("EF values are numbers"))
        .collect();
    std::fs::create_dir_all(out).unwrap();
    let rows = LatentRows::default();
    let dim = rows.dim;
    let images = rows.draw(n, 1);
    let queries = rows.draw(QUERIES, 2);
    let exact = top_k(&images, &queries, dim, K);
    let exact_ids: Vec<i64> = exact.iter().flatten().map(|&i| i as i64).collect();
    npy::write_f32(&out.join("images.npy"), n, dim, &images).unwrap();
    npy::write_f32(&out.join("queries.npy"), QUERIES, dim, &queries).unwrap();
    std::fs::write(out.join("exact.npy"), npy::encode_i64(&exact_ids)).unwrap();

    let params = HnswParams {
        connections,
        ef_construction,
        ef_search: 100,
    };
    // REUSE=1 searches the graph a previous run saved in OUT (to compare search code alone).
    let saved = out.join("images.hnsw.safetensors");
    let started = Instant::now();
    let graph = if std::env::var("REUSE").is_ok_and(|v| v == "1") && saved.exists() {
        let sha256 = tandem::fsio::sha256(&saved).unwrap();
        HnswGraph::open(out, "images", &images, dim, &GraphDigest { sha256 }).unwrap()
    } else {
        let graph = HnswGraph::build(&images, dim, params, |_| {});
        graph.save(out, "images").unwrap();
        graph
    };
    let build_s = started.elapsed().as_secs_f64();
    println!(
        "tandem HNSW M {connections} efConstruction {ef_construction}: {n} rows built in {build_s:.1} s"
    );
    let mut results = Vec::new();
    for &ef in &efs {
        let search = |q: &[f32]| -> Vec<u32> {
            graph
                .search(&images, q, K, ef)
                .into_iter()
                .map(|(_, id)| id)
                .collect()
        };
        let found: Vec<Vec<u32>> = queries.chunks_exact(dim).map(search).collect();
        let one_thread = median_rate(|| {
            queries.chunks_exact(dim).for_each(|q| drop(search(q)));
        });
        let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
        let every_core = median_rate(|| {
            std::thread::scope(|scope| {
                for part in queries.chunks(dim * QUERIES.div_ceil(threads)) {
                    scope.spawn(move || part.chunks_exact(dim).for_each(|q| drop(search(q))));
                }
            })
        });
        let hits: usize = exact
            .iter()
            .zip(&found)
            .map(|(e, f)| f.iter().filter(|id| e.contains(id)).count())
            .sum();
        let recall = hits as f64 / (QUERIES * K) as f64;
        println!(
            "  ef {ef:>4}: recall@10 {recall:.4}, {one_thread:.0} q/s on one thread, {every_core:.0} q/s on {threads} threads (one query at a time)"
        );
        results.push(serde_json::json!({
            "ef": ef, "recall_at_10": recall,
            "queries_per_s_one_thread": one_thread, "queries_per_s_all_threads": every_core,
        }));
    }
    let report = serde_json::json!({
        "engine": "tandem", "rows": n, "dim": dim, "m": connections,
        "ef_construction": ef_construction, "build_s": build_s, "threads":
        std::thread::available_parallelism().map_or(1, |t| t.get()), "search": results,
    });
    std::fs::write(
        out.join("tandem.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
}
