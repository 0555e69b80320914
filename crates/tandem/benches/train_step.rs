//! One training step (forward, the paper's loss over the batch, backward, Adam) at the paper's
//! size — B = 500 images and 1000 captions, 4096/6000 → 2048 → 512 — and at a small size, and
//! the paper step with dL/dx through the first layer (as candle's plain matmul computes it),
//! side by side. `tandem bench` times the same steps against the machine's sgemm floor.
//!
//! `cargo bench -p tandem --bench train_step`

use candle_core::Device;
use criterion::{Criterion, criterion_group, criterion_main};
use tandem::train::bench::{StepBench, StepShape};

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10);
    let mut small = StepBench::new(StepShape::SMALL, &Device::Cpu).unwrap();
    group.bench_function("small_b128_432-192_256_128", |b| {
        b.iter(|| small.step().unwrap())
    });
    let mut paper = StepBench::new(StepShape::PAPER, &Device::Cpu).unwrap();
    group.bench_function("paper_b500_4096-6000_2048_512", |b| {
        b.iter(|| paper.step().unwrap())
    });
    drop(paper);
    let mut paper_dx = StepBench::new(StepShape::PAPER, &Device::Cpu)
        .unwrap()
        .with_input_gradient()
        .unwrap();
    group.bench_function("paper_with_input_gradient", |b| {
        b.iter(|| paper_dx.step().unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
