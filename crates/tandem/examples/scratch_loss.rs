use candle_core::Device;
use tandem::train::bench::{StepBench, StepShape};
fn main() {
    let mut b = StepBench::new(StepShape::PAPER, &Device::Cpu).unwrap();
    let t = b.time_loss(40).unwrap();
    eprintln!("{t:?}");
}
