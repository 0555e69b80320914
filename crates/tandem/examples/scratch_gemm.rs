use candle_core::{Device, Tensor};
use std::time::Instant;
fn main() {
    let d = Device::Cpu;
    let (n, din, h) = (1000usize, 6000usize, 2048usize);
    let x = Tensor::randn(0f32, 1.0, (n, din), &d).unwrap();
    let w = Tensor::randn(0f32, 1.0, (h, din), &d).unwrap();
    let g = Tensor::randn(0f32, 1.0, (n, h), &d).unwrap();
    let fl = 2.0 * (n * din * h) as f64;
    let mut best = [f64::MAX; 2];
    for _ in 0..5 {
        let s = Instant::now();
        drop(x.matmul(&w.t().unwrap()).unwrap());
        best[0] = best[0].min(s.elapsed().as_secs_f64());
        let s = Instant::now();
        drop(g.t().unwrap().matmul(&x).unwrap());
        best[1] = best[1].min(s.elapsed().as_secs_f64());
    }
    println!(
        "candle fwd {:.1} dW {:.1} GFLOP/s",
        fl / best[0] / 1e9,
        fl / best[1] / 1e9
    );
}
