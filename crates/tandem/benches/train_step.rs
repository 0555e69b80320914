//! One training step (forward, the paper's loss over the batch, backward, Adam) at the paper's
//! size — B = 500 images and 1000 captions, 4096/6000 → 2048 → 512 — and at a small size.
//!
//! `cargo bench -p tandem --bench train_step`

use candle_core::{Device, Tensor, Var};
use criterion::{Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use tandem::config::{Config, ModelConfig};
use tandem::loss::{Embedded, Objective};
use tandem::model::{Mode, TwoBranch};
use tandem::train::Optimizer;

struct Setup {
    model: TwoBranch,
    optimizer: Optimizer,
    objective: Objective,
    images: Tensor,
    texts: Tensor,
    image_ids: Vec<u32>,
    text_ids: Vec<u32>,
    rng: rand_chacha::ChaCha8Rng,
}

/// `input_gradient`: the features as variables, so backward also computes dL/dx through the
/// first layer as candle's plain matmul does (tandem's first layer skips it for data).
fn setup(
    b: usize,
    d_image: usize,
    d_text: usize,
    hidden: usize,
    dim: usize,
    input_gradient: bool,
) -> Setup {
    let device = Device::Cpu;
    let config = Config::default();
    let model_cfg = ModelConfig {
        hidden: vec![hidden],
        dim,
        ..ModelConfig::default()
    };
    let model = TwoBranch::new(d_image, d_text, &model_cfg, 0, &device).unwrap();
    let optimizer = Optimizer::new(model.vars(), &config.train).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut random =
        |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
    let mut images = Tensor::from_vec(random(b * d_image), (b, d_image), &device).unwrap();
    let mut texts = Tensor::from_vec(random(2 * b * d_text), (2 * b, d_text), &device).unwrap();
    if input_gradient {
        images = Var::from_tensor(&images).unwrap().as_tensor().clone();
        texts = Var::from_tensor(&texts).unwrap().as_tensor().clone();
    }
    Setup {
        model,
        optimizer,
        objective: Objective::paper(&config.loss),
        images,
        texts,
        image_ids: (0..b as u32).collect(),
        text_ids: (0..b as u32).chain(0..b as u32).collect(),
        rng: rand_chacha::ChaCha8Rng::seed_from_u64(1),
    }
}

fn step(s: &mut Setup) -> f32 {
    let (ei, et) = s
        .model
        .forward(&s.images, &s.texts, Mode::Train(&mut s.rng))
        .unwrap();
    let out = s
        .objective
        .forward(&Embedded::new(&ei, &et, &s.image_ids, &s.text_ids))
        .unwrap();
    let grads = out.total.backward().unwrap();
    s.optimizer.step(&grads).unwrap();
    out.total.to_scalar().unwrap()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10);
    let mut small = setup(128, 432, 192, 256, 128, false);
    group.bench_function("small_b128_432-192_256_128", |b| {
        b.iter(|| step(&mut small))
    });
    let mut paper = setup(500, 4096, 6000, 2048, 512, false);
    group.bench_function("paper_b500_4096-6000_2048_512", |b| {
        b.iter(|| step(&mut paper))
    });
    drop(paper);
    // The same step with dL/dx computed, as before the first layer skipped it.
    let mut paper_dx = setup(500, 4096, 6000, 2048, 512, true);
    group.bench_function("paper_with_input_gradient", |b| {
        b.iter(|| step(&mut paper_dx))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
