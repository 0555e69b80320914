//! Ranking for evaluation: 25,000 captions × 5,000 images (COCO 5K size, 5 captions each),
//! dim 512 — text→image ranks and the ranks of every caption of every image (for mAP@R).
//!
//! `cargo bench -p tandem --bench rank`. With `TANDEM_RANK_DATA=DIR` the arrays are read from
//! `DIR/images.npy`, `DIR/texts.npy`, `DIR/text_to_image.npy` (as `bench/rank_numpy.py` writes
//! them), so tandem and numpy rank the same arrays: `bench/rank_vs_numpy.sh`.

use criterion::{Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use tandem::data::npy;
use tandem::eval::{ranks_from_embeddings, ranks_on_threads};

fn arrays() -> (Vec<f32>, Vec<f32>, Vec<u32>, usize) {
    if let Ok(dir) = std::env::var("TANDEM_RANK_DATA") {
        let dir = std::path::Path::new(&dir);
        let images = npy::read_features(&dir.join("images.npy")).unwrap();
        let texts = npy::read_features(&dir.join("texts.npy")).unwrap();
        let ids = npy::read_ids(&dir.join("text_to_image.npy")).unwrap();
        let ids = ids.into_iter().map(|i| i as u32).collect();
        return (images.data, texts.data, ids, images.cols);
    }
    let (n, dim) = (5000, 512);
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
    let images = unit(n);
    let texts = unit(5 * n);
    let ids = (0..5 * n as u32).map(|t| t / 5).collect();
    (images, texts, ids, dim)
}

fn bench(c: &mut Criterion) {
    let (images, texts, ids, dim) = arrays();
    let name = format!(
        "rank {} captions x {} images",
        ids.len(),
        images.len() / dim
    );
    let mut group = c.benchmark_group("rank");
    group.sample_size(10);
    group.bench_function(&name, |b| {
        b.iter(|| ranks_from_embeddings(&images, &texts, dim, &ids))
    });
    // One thread: how the ranking scales with cores.
    group.bench_function(format!("{name}, 1 thread"), |b| {
        b.iter(|| ranks_on_threads(&images, &texts, dim, &ids, 1))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
