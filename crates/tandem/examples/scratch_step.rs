use candle_core::Device;
use tandem::train::bench::{StepBench, StepShape};
fn main() {
    let mut b = StepBench::new(StepShape::PAPER, &Device::Cpu).unwrap();
    let n: usize = std::env::args().nth(1).map_or(6, |s| s.parse().unwrap());
    for _ in 0..n {
        let t = std::time::Instant::now();
        b.step().unwrap();
        eprintln!("{:.3}", t.elapsed().as_secs_f64());
    }
}
