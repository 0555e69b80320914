//! What `tandem bench` times: one training step (forward, the paper's loss, backward, Adam) on
//! random features of a given shape, the loss alone, and the machine's own matrix-multiply
//! rate, so that a step's time can be stated against the floor its matrix products set on the
//! same machine in the same run.

use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::config::{Config, ModelConfig};
use crate::data::Matrix;
use crate::error::Result;
use crate::loss::{Embedded, Objective};
use crate::model::{Backward, Mode, TwoBranch};

use super::Optimizer;

/// The sizes of one training step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StepShape {
    /// Images in the batch.
    pub images: usize,
    /// Captions per image (all in the batch).
    pub captions_per_image: usize,
    /// Image feature width.
    pub d_image: usize,
    /// Text feature width.
    pub d_text: usize,
    /// The one hidden layer's width.
    pub hidden: usize,
    /// Embedding width.
    pub dim: usize,
}

impl StepShape {
    /// The paper's: 500 images and 1000 captions, 4096 (VGG) / 6000 (Fisher vector) → 2048 → 512.
    pub const PAPER: StepShape = StepShape {
        images: 500,
        captions_per_image: 2,
        d_image: 4096,
        d_text: 6000,
        hidden: 2048,
        dim: 512,
    };
    /// A small step: 128 images and 256 captions, 432 / 192 → 256 → 128 (the demo's widths).
    pub const SMALL: StepShape = StepShape {
        images: 128,
        captions_per_image: 2,
        d_image: 432,
        d_text: 192,
        hidden: 256,
        dim: 128,
    };

    /// Captions in the batch.
    pub fn captions(&self) -> usize {
        self.images * self.captions_per_image
    }

    /// Floating-point operations of the step's matrix products (2 per multiply-add): the two
    /// layers of each branch forward, their weight gradients, the hidden layers' input
    /// gradients (none for the raw features), and the loss's products: the `images ×
    /// captions` similarity (both ranking directions read it) and the `captions × captions`
    /// one of the structure term. Their gradients are not products: the hinge terms
    /// differentiate only their selected entries, pair by pair (a few MFLOP). Element-wise
    /// work is not counted: this is the floor a gemm sets.
    pub fn matmul_flops(&self) -> f64 {
        let (b, t) = (self.images, self.captions());
        self.branch_flops() + 2.0 * (b * self.dim * t) as f64 + 2.0 * (t * self.dim * t) as f64
    }

    /// The loss's share of [`StepShape::matmul_flops`].
    pub fn loss_flops(&self) -> f64 {
        self.matmul_flops() - self.branch_flops()
    }

    fn branch_flops(&self) -> f64 {
        let mac = |m: usize, k: usize, n: usize| 2.0 * (m * k * n) as f64;
        let branch = |n: usize, d_in: usize| {
            let forward = mac(n, d_in, self.hidden) + mac(n, self.hidden, self.dim);
            let weights = forward;
            let hidden_input = mac(n, self.dim, self.hidden);
            forward + weights + hidden_input
        };
        branch(self.images, self.d_image) + branch(self.captions(), self.d_text)
    }
}

/// A model, optimiser, the paper's loss and one fixed random batch of `shape`.
pub struct StepBench {
    model: TwoBranch,
    optimizer: Optimizer,
    objective: Objective,
    images: Tensor,
    texts: Tensor,
    image_ids: Vec<u32>,
    text_ids: Vec<u32>,
    rng: ChaCha8Rng,
    shape: StepShape,
    backward: Backward,
}

impl StepBench {
    /// # Errors
    /// A tensor error from allocation on `device`.
    pub fn new(shape: StepShape, device: &Device) -> Result<Self> {
        let config = Config::default();
        let model_cfg = ModelConfig {
            hidden: vec![shape.hidden],
            dim: shape.dim,
            ..ModelConfig::default()
        };
        let model = TwoBranch::new(shape.d_image, shape.d_text, &model_cfg, 0, device)?;
        let optimizer = Optimizer::new(model.vars(), &config.train)?;
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut random =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
        let (b, t) = (shape.images, shape.captions());
        let images = Tensor::from_vec(random(b * shape.d_image), (b, shape.d_image), device)?;
        let texts = Tensor::from_vec(random(t * shape.d_text), (t, shape.d_text), device)?;
        Ok(StepBench {
            model,
            optimizer,
            objective: Objective::paper(&config.loss),
            images,
            texts,
            image_ids: (0..b as u32).collect(),
            text_ids: (0..t as u32).map(|i| i % b as u32).collect(),
            rng: ChaCha8Rng::seed_from_u64(1),
            shape,
            backward: Backward::Explicit,
        })
    }

    /// The features as variables, so that backward also computes dL/dx through the first
    /// layer, as candle's plain matmul does (for comparing against the first layer that
    /// skips it).
    ///
    /// # Errors
    /// A tensor error.
    pub fn with_input_gradient(mut self) -> Result<Self> {
        self.images = Var::from_tensor(&self.images)?.as_tensor().clone();
        self.texts = Var::from_tensor(&self.texts)?.as_tensor().clone();
        Ok(self.with_autograd())
    }

    /// Gradients through the branches by candle's autograd instead of the explicit backward
    /// (for comparing the two).
    pub fn with_autograd(mut self) -> Self {
        self.backward = Backward::Autograd;
        self
    }

    /// The shape this bench runs.
    pub fn shape(&self) -> StepShape {
        self.shape
    }

    /// One training step; returns the loss.
    ///
    /// # Errors
    /// A tensor error.
    pub fn step(&mut self) -> Result<f32> {
        Ok(self.timed_step()?.0)
    }

    /// One training step; returns the loss and the seconds since its start at the end of
    /// each phase (forward, loss, backward, optimiser).
    fn timed_step(&mut self) -> Result<(f32, [f64; 4])> {
        super::on_pool::on_pool(|| self.timed_step_here())
    }

    /// [`StepBench::timed_step`] on the calling thread.
    fn timed_step_here(&mut self) -> Result<(f32, [f64; 4])> {
        let started = Instant::now();
        let mut marks = [0.0; 4];
        let forward =
            self.model
                .forward_train(&self.images, &self.texts, &mut self.rng, self.backward)?;
        marks[0] = started.elapsed().as_secs_f64();
        let out = self.objective.forward(&Embedded::new(
            &forward.images,
            &forward.texts,
            &self.image_ids,
            &self.text_ids,
        ))?;
        marks[1] = started.elapsed().as_secs_f64();
        let grads = self.model.backward(forward, &out.total)?;
        marks[2] = started.elapsed().as_secs_f64();
        self.optimizer.step(&grads)?;
        marks[3] = started.elapsed().as_secs_f64();
        Ok((out.total.to_scalar()?, marks))
    }

    /// Times the step's phases separately, `runs` steps after one warm-up: the forward of
    /// both branches, the loss forward, the backward, and the optimiser update.
    ///
    /// # Errors
    /// A tensor error.
    pub fn time_phases(&mut self, runs: usize) -> Result<StepPhases> {
        let mut seconds: [Vec<f64>; 4] = Default::default();
        for run in 0..=runs.max(1) {
            let (_, marks) = self.timed_step()?;
            if run > 0 {
                let mut previous = 0.0;
                for (phase, mark) in seconds.iter_mut().zip(marks) {
                    phase.push(mark - previous);
                    previous = mark;
                }
            }
        }
        let [forward, loss, backward, optimizer] = seconds.map(Timing::of);
        Ok(StepPhases {
            forward,
            loss,
            backward,
            optimizer,
        })
    }

    /// Times the loss forward and backward alone, `runs` times, on the batch's embeddings
    /// (evaluation mode, made variables so that the backward runs), each run placed against
    /// the floor (see [`time_against_floor`]); `gflop` is the loss's matrix-product work.
    ///
    /// # Errors
    /// A tensor error.
    pub fn time_loss_against_floor(
        &mut self,
        runs: usize,
        probe: &SgemmProbe,
        gflop: f64,
    ) -> Result<(Timing, FloorRatio)> {
        let (images, texts) = self.model.forward(&self.images, &self.texts, Mode::Eval)?;
        let (images, texts) = (Var::from_tensor(&images)?, Var::from_tensor(&texts)?);
        let batch = Embedded::new(
            images.as_tensor(),
            texts.as_tensor(),
            &self.image_ids,
            &self.text_ids,
        );
        let objective = &self.objective;
        time_against_floor(runs, probe, gflop, || {
            super::on_pool::on_pool(|| {
                let out = objective.forward(&batch)?;
                out.total.backward()?;
                Ok(())
            })
        })
    }
}

/// Seconds of repeated runs: median, fastest and slowest.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Timing {
    /// Median seconds.
    pub median: f64,
    /// Fastest run.
    pub min: f64,
    /// Slowest run.
    pub max: f64,
    /// Runs timed (after one untimed warm-up run).
    pub runs: usize,
}

/// Times what the trainer does to assemble one batch of `shape`: gather its feature rows,
/// at random positions of feature matrices ten batches tall, into the two input tensors.
///
/// # Errors
/// A tensor error from allocation on `device`.
pub fn time_batch_assembly(shape: StepShape, runs: usize, device: &Device) -> Result<Timing> {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let mut matrix = |rows: usize, cols: usize| Matrix {
        rows,
        cols,
        data: (0..rows * cols)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect(),
    };
    let images = matrix(10 * shape.images, shape.d_image);
    let texts = matrix(10 * shape.captions(), shape.d_text);
    let mut pick = ChaCha8Rng::seed_from_u64(3);
    time(runs, || {
        let image_rows: Vec<u32> = (0..shape.images)
            .map(|_| pick.random_range(0..images.rows as u32))
            .collect();
        let text_rows: Vec<u32> = (0..shape.captions())
            .map(|_| pick.random_range(0..texts.rows as u32))
            .collect();
        let x = Tensor::from_vec(
            images.gather(&image_rows),
            (shape.images, images.cols),
            device,
        )?;
        let t = Tensor::from_vec(
            texts.gather(&text_rows),
            (shape.captions(), texts.cols),
            device,
        )?;
        device.synchronize()?;
        drop((x, t));
        Ok(())
    })
}

/// Where a step's time goes (see [`StepBench::time_phases`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StepPhases {
    /// Both branches forward, dropout and normalisation included.
    pub forward: Timing,
    /// The loss forward.
    pub loss: Timing,
    /// Backward through loss and branches.
    pub backward: Timing,
    /// The optimiser update.
    pub optimizer: Timing,
}

impl Timing {
    /// Median, fastest and slowest of `seconds` (at least one).
    fn of(mut seconds: Vec<f64>) -> Timing {
        seconds.sort_by(f64::total_cmp);
        Timing {
            median: seconds[seconds.len() / 2],
            min: seconds[0],
            max: seconds[seconds.len() - 1],
            runs: seconds.len(),
        }
    }
}

/// Times `runs` calls of `f` after one warm-up call.
///
/// # Errors
/// The first error of `f`.
pub fn time(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<Timing> {
    f()?;
    let mut seconds = Vec::with_capacity(runs.max(1));
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        f()?;
        seconds.push(started.elapsed().as_secs_f64());
    }
    Ok(Timing::of(seconds))
}

/// The machine's single-precision matrix-multiply rate through the gemm the training step
/// uses ([`crate::model::gemm`]): one `n × n` by `n × n` product per call.
pub struct SgemmProbe {
    n: usize,
    a: Tensor,
    b: Tensor,
    device: Device,
}

impl SgemmProbe {
    /// Random `n × n` operands on `device`.
    ///
    /// # Errors
    /// A tensor error from allocation on `device`.
    pub fn new(n: usize, device: &Device) -> Result<Self> {
        Ok(SgemmProbe {
            n,
            a: Tensor::randn(0f32, 1.0, (n, n), device)?,
            b: Tensor::randn(0f32, 1.0, (n, n), device)?,
            device: device.clone(),
        })
    }

    /// Floating-point operations of one product.
    pub fn gflop(&self) -> f64 {
        2.0 * (self.n as f64).powi(3) / 1e9
    }

    /// Seconds of one product by the fastest gemm this build has: candle's, and with the
    /// `openblas` feature the system OpenBLAS too (each timed, the faster counts), so that the
    /// floor is the best this host offers the step, not the one the step happens to use.
    ///
    /// # Errors
    /// A tensor error.
    pub fn seconds(&self) -> Result<f64> {
        let mut best = f64::INFINITY;
        for backend in ProbeBackend::ALL {
            best = best.min(self.seconds_with(*backend)?);
        }
        Ok(best)
    }

    /// Seconds of one product by `backend`.
    ///
    /// # Errors
    /// A tensor error.
    pub fn seconds_with(&self, backend: ProbeBackend) -> Result<f64> {
        let started = Instant::now();
        let c = match backend {
            ProbeBackend::Candle => self.a.matmul(&self.b)?,
            #[cfg(feature = "openblas")]
            ProbeBackend::OpenBlas => crate::model::gemm::product(&self.a, &self.b)?,
        };
        self.device.synchronize()?;
        let seconds = started.elapsed().as_secs_f64();
        drop(c);
        Ok(seconds)
    }

    /// Each gemm's best rate over `runs` products after a warm-up, GFLOP/s.
    ///
    /// # Errors
    /// A tensor error.
    pub fn rate_by_backend(&self, runs: usize) -> Result<Vec<(ProbeBackend, f64)>> {
        ProbeBackend::ALL
            .iter()
            .map(|&backend| {
                let timing = time(runs, || self.seconds_with(backend).map(drop))?;
                Ok((backend, self.gflop() / timing.min))
            })
            .collect()
    }

    /// GFLOP/s of one product.
    ///
    /// # Errors
    /// A tensor error.
    pub fn rate(&self) -> Result<f64> {
        Ok(self.gflop() / self.seconds()?)
    }

    /// The product timed `runs` times after a warm-up: GFLOP/s of the fastest, and the
    /// timing.
    ///
    /// # Errors
    /// A tensor error.
    pub fn best_rate(&self, runs: usize) -> Result<(f64, Timing)> {
        let timing = time(runs, || self.seconds().map(drop))?;
        Ok((self.gflop() / timing.min, timing))
    }
}

/// A gemm the probe can time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ProbeBackend {
    /// candle's own (the `gemm` crate; AVX-512 or AVX2 kernels picked at run time).
    Candle,
    /// The system OpenBLAS (`openblas` feature).
    #[cfg(feature = "openblas")]
    OpenBlas,
}

impl ProbeBackend {
    /// Every gemm this build has.
    #[cfg(not(feature = "openblas"))]
    pub const ALL: &'static [ProbeBackend] = &[ProbeBackend::Candle];
    /// Every gemm this build has.
    #[cfg(feature = "openblas")]
    pub const ALL: &'static [ProbeBackend] = &[ProbeBackend::Candle, ProbeBackend::OpenBlas];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            ProbeBackend::Candle => "candle's gemm",
            #[cfg(feature = "openblas")]
            ProbeBackend::OpenBlas => "OpenBLAS",
        }
    }
}

/// How a timed item compares with the floor its matrix products set, run by run: each run's
/// seconds against `gflop / rate`, the rate being the faster of the two probe products timed
/// just before and just after that run. On a shared machine the sgemm rate was seen to drift
/// by 1.5× within a minute; a probe next to each run places each run against the rate of its
/// own moment, where one rate for the whole bench would place a run made in a slow minute
/// against a fast one (or the reverse).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FloorRatio {
    /// Median over the runs of `seconds / (gflop / rate)`.
    pub median: f64,
    /// Smallest run ratio.
    pub min: f64,
    /// Largest run ratio.
    pub max: f64,
    /// Slowest probe rate used, GFLOP/s.
    pub probe_slowest: f64,
    /// Fastest probe rate used, GFLOP/s.
    pub probe_fastest: f64,
}

impl FloorRatio {
    /// `seconds[i]` is run `i`; `rates[i]` and `rates[i + 1]` are the probe rates (GFLOP/s)
    /// just before and just after it, so there is one more rate than runs.
    ///
    /// # Errors
    /// A message when the counts do not fit or there is no run.
    pub fn of(seconds: &[f64], rates: &[f64], gflop: f64) -> Result<FloorRatio> {
        if seconds.is_empty() || rates.len() != seconds.len() + 1 {
            return Err(candle_core::Error::Msg(format!(
                "FloorRatio::of: {} runs need {} probe rates, got {}",
                seconds.len(),
                seconds.len() + 1,
                rates.len()
            ))
            .into());
        }
        let used: Vec<f64> = rates.windows(2).map(|w| w[0].max(w[1])).collect();
        let ratios: Vec<f64> = seconds
            .iter()
            .zip(&used)
            .map(|(s, rate)| s * rate / gflop)
            .collect();
        let ratio = Timing::of(ratios);
        let rate = Timing::of(used);
        Ok(FloorRatio {
            median: ratio.median,
            min: ratio.min,
            max: ratio.max,
            probe_slowest: rate.min,
            probe_fastest: rate.max,
        })
    }
}

/// Times `runs` calls of `f` after one warm-up call, with a probe product before the first
/// run and after each, and places each run against its floor (see [`FloorRatio`]). `gflop`
/// is the matrix-product work of one call.
///
/// # Errors
/// The first error of `f` or of the probe.
pub fn time_against_floor(
    runs: usize,
    probe: &SgemmProbe,
    gflop: f64,
    mut f: impl FnMut() -> Result<()>,
) -> Result<(Timing, FloorRatio)> {
    f()?;
    let runs = runs.max(1);
    let mut seconds = Vec::with_capacity(runs);
    let mut rates = Vec::with_capacity(runs + 1);
    rates.push(probe.rate()?);
    for _ in 0..runs {
        let started = Instant::now();
        f()?;
        seconds.push(started.elapsed().as_secs_f64());
        rates.push(probe.rate()?);
    }
    let floor = FloorRatio::of(&seconds, &rates, gflop)?;
    Ok((Timing::of(seconds), floor))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The explicit backward trains as autograd does: the same loss at step 0 and, after
    /// Adam updates from either's gradients, the same losses for the next steps (to f32
    /// rounding; the dropout masks and the batch are the same).
    #[test]
    fn explicit_and_autograd_steps_train_alike() {
        let shape = StepShape {
            images: 24,
            captions_per_image: 2,
            d_image: 40,
            d_text: 30,
            hidden: 32,
            dim: 16,
        };
        let mut explicit = StepBench::new(shape, &Device::Cpu).unwrap();
        let mut autograd = StepBench::new(shape, &Device::Cpu).unwrap().with_autograd();
        for step in 0..5 {
            let (a, b) = (explicit.step().unwrap(), autograd.step().unwrap());
            let tolerance = if step == 0 { 1e-6 } else { 1e-4 };
            assert!(
                (a - b).abs() <= tolerance * b.abs(),
                "step {step}: explicit {a}, autograd {b}"
            );
        }
    }

    /// Hand-computed: three runs of 1, 2 and 3 s of 10 GFLOP between probes of 10, 20, 5
    /// and 10 GFLOP/s. Each run takes the faster of its two probes: 20, 20, 10. Ratios:
    /// 1·20/10 = 2, 2·20/10 = 4, 3·10/10 = 3.
    #[test]
    fn each_run_is_placed_against_the_faster_probe_next_to_it() {
        let floor = FloorRatio::of(&[1.0, 2.0, 3.0], &[10.0, 20.0, 5.0, 10.0], 10.0).unwrap();
        assert_eq!(
            floor,
            FloorRatio {
                median: 3.0,
                min: 2.0,
                max: 4.0,
                probe_slowest: 10.0,
                probe_fastest: 20.0,
            }
        );
        assert!(FloorRatio::of(&[1.0], &[1.0], 1.0).is_err());
        assert!(FloorRatio::of(&[], &[1.0], 1.0).is_err());
    }

    #[test]
    fn the_probe_and_the_paired_timing_report_consistent_rates() {
        let probe = SgemmProbe::new(64, &Device::Cpu).unwrap();
        assert!((probe.gflop() - 2.0 * 64f64.powi(3) / 1e9).abs() < 1e-15);
        let (best, timing) = probe.best_rate(2).unwrap();
        assert_eq!(timing.runs, 2);
        assert!((best - probe.gflop() / timing.min).abs() <= 1e-12 * best);
        let mut calls = 0;
        let (timing, floor) = time_against_floor(3, &probe, 1e-3, || {
            calls += 1;
            probe.seconds().map(drop)
        })
        .unwrap();
        assert_eq!((calls, timing.runs), (4, 3));
        assert!(floor.min <= floor.median && floor.median <= floor.max);
        assert!(0.0 < floor.probe_slowest && floor.probe_slowest <= floor.probe_fastest);
        // Each run's ratio lies between its seconds at the slowest and at the fastest rate.
        assert!(floor.median >= timing.min * floor.probe_slowest / 1e-3 * (1.0 - 1e-12));
        assert!(floor.median <= timing.max * floor.probe_fastest / 1e-3 * (1.0 + 1e-12));
    }

    #[test]
    fn matmul_flops_counts_every_product_once() {
        // 2 images, 2 captions each; 3/5 → 4 → 2. Image branch: forward 2·3·4 + 2·4·2 = 40
        // MACs, weight grads 40, hidden input grads 2·2·4 = 16 → 96. Text branch (4 rows):
        // 4·5·4 + 4·4·2 = 112, ×2, + 4·2·4 = 32 → 256. Similarity 2·2·4 = 16 MACs, caption
        // similarity 4·2·4 = 32 (forward only: the hinges' backward is no product).
        let shape = StepShape {
            images: 2,
            captions_per_image: 2,
            d_image: 3,
            d_text: 5,
            hidden: 4,
            dim: 2,
        };
        assert_eq!(shape.matmul_flops(), 2.0 * (96.0 + 256.0 + 16.0 + 32.0));
        assert_eq!(shape.loss_flops(), 2.0 * (16.0 + 32.0));
        // The paper's step: 76.9 GFLOP with 1000 captions (75.4 in the branches, 0.5 in the
        // similarity, 1.0 in the structure term); 48.2 with 500 (48 in the branches + 0.2).
        let paper = StepShape::PAPER.matmul_flops() / 1e9;
        assert!((76.8..77.0).contains(&paper), "{paper}");
        let one_caption = StepShape {
            captions_per_image: 1,
            ..StepShape::PAPER
        };
        let paper = one_caption.matmul_flops() / 1e9;
        assert!((48.1..48.3).contains(&paper), "{paper}");
    }

    #[test]
    fn a_step_lowers_the_loss_on_its_batch_and_timing_orders_its_runs() {
        let mut bench = StepBench::new(StepShape::SMALL, &Device::Cpu).unwrap();
        let first = bench.step().unwrap();
        let mut last = first;
        for _ in 0..5 {
            last = bench.step().unwrap();
        }
        assert!(last < first, "{first} → {last}");
        let mut calls = 0;
        let t = time(3, || {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!((calls, t.runs), (4, 3));
        assert!(t.min <= t.median && t.median <= t.max);
    }
}
