//! Exact top-k at scale: the queries of `DIR/queries.npy` against the gallery of
//! `DIR/gallery.npy` (as `bench/topk_numpy.py` writes them), timed, with the ids written to
//! `DIR/tandem_ids.npy` so the two can be compared:
//!
//! `cargo run --release -p tandem --example topk_scale -- DIR 10`

use std::time::Instant;

use tandem::data::npy;
use tandem::eval::top_k;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, k] = &args[..] else {
        panic!("usage: topk_scale DIR K");
    };
    let dir = std::path::Path::new(dir);
    let k: usize = k.parse().expect("K is a number");
    let gallery = npy::read_features(&dir.join("gallery.npy")).unwrap();
    let queries = npy::read_features(&dir.join("queries.npy")).unwrap();
    let started = Instant::now();
    let lists = top_k(&gallery.data, &queries.data, gallery.cols, k);
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "tandem: top-{k} of {} queries over {} x {}: {seconds:.2} s ({:.0} queries/s)",
        queries.rows,
        gallery.rows,
        gallery.cols,
        queries.rows as f64 / seconds
    );
    let ids: Vec<i64> = lists.iter().flatten().map(|&i| i64::from(i)).collect();
    tandem::fsio::write_atomic(&dir.join("tandem_ids.npy"), &npy::encode_i64(&ids)).unwrap();
}
