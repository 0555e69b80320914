//! BERT's GELU, `x · Φ(x) = x/2 · (1 + erf(x/√2))`, by the formula PyTorch's CPU kernel uses.
//!
//! candle's `gelu_erf` evaluates `erf` one element at a time through libm (a seventh of a
//! sentence encoder's time on a 2-core host). PyTorch's vectorised CPU GELU
//! (`Vectorized<float>::erf`) uses Abramowitz & Stegun's 7.1.26, `|error| ≤ 1.5·10⁻⁷`, with a
//! vectorised `exp`; the same formula here, in a loop the compiler vectorises for the widest
//! vectors the CPU has (picked at run time), gives PyTorch's numbers at PyTorch's speed.

/// `gelu(x)` of every value, in place.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512vl+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
pub(super) fn gelu_slice(values: &mut [f32]) {
    for x in values {
        *x = 0.5 * *x * (1.0 + erf(*x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// Abramowitz & Stegun 7.1.26, in PyTorch's order of operations.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / 0.327_591_1f32.mul_add(a, 1.0);
    let r = 1.061_405_4f32
        .mul_add(t, -1.453_152)
        .mul_add(t, 1.421_413_8)
        .mul_add(t, -0.284_496_74)
        .mul_add(t, 0.254_829_6);
    let y = (-exp(-(x * x)) * t).mul_add(r, 1.0);
    y.copysign(x)
}

/// `eˣ` for `x ≤ 0` (Cephes' `expf`: `x = n ln 2 + r`, a degree-6 polynomial in `r`, and
/// `2ⁿ` from the exponent bits), about one ulp. Below −87.3 it returns `e^−87.3` (≈ 10⁻³⁸)
/// rather than a subnormal: in [`erf`] that is 1 − 10⁻³⁸, which rounds to 1.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and removing 1.5·2²³ rounds to the nearest integer in any vector unit.
    const ROUND: f32 = 12_582_912.0;
    let x = x.max(-87.3);
    let n = x.mul_add(LOG2E, ROUND) - ROUND;
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let p = 1.987_569_2e-4f32
        .mul_add(r, 1.398_2e-3)
        .mul_add(r, 8.333_452e-3)
        .mul_add(r, 4.166_579_6e-2)
        .mul_add(r, 0.166_666_65)
        .mul_add(r, 0.5);
    let e = p.mul_add(r * r, r) + 1.0;
    e * f32::from_bits((((n as i32) + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn exp_is_within_two_ulps_of_std() {
        let mut x = -87.0f32;
        while x <= 0.0 {
            let (got, want) = (exp(x), x.exp());
            assert!(
                (got - want).abs() <= 2.5e-7 * want,
                "exp({x}) = {got}, want {want}"
            );
            x += 0.0137;
        }
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) < 1e-37);
    }

    /// `gelu_slice` of a copy of `xs`.
    fn gelu(xs: &[f32]) -> Vec<f32> {
        let mut out = xs.to_vec();
        gelu_slice(&mut out);
        out
    }

    #[test]
    fn gelu_equals_candles_exact_gelu_to_a_few_ulps() {
        // candle's gelu_erf evaluates erf in f64: exact to f32 rounding.
        let xs: Vec<f32> = (-12_000..=12_000).map(|i| i as f32 * 1e-3).collect();
        let t = Tensor::new(xs.as_slice(), &Device::Cpu).unwrap();
        let exact: Vec<f32> = t.gelu_erf().unwrap().to_vec1().unwrap();
        let got = gelu(&xs);
        let mut worst = 0f32;
        for ((x, g), e) in xs.iter().zip(&got).zip(&exact) {
            // A&S's 1.5e-7 on erf is x/2 · 1.5e-7 on gelu, plus f32 rounding of the result.
            let err = (g - e).abs();
            assert!(
                err <= 2.5e-7 * x.abs().max(1.0),
                "gelu({x}) = {g}, want {e}"
            );
            worst = worst.max(err);
        }
        assert!(worst > 0.0, "the approximation is not the exact function");
        // Far tails: x for x ≫ 0, 0 for x ≪ 0, no NaN.
        assert_eq!(gelu(&[-1e4, -50.0, 50.0, 1e4]), [-0.0, -0.0, 50.0, 1e4]);
    }
}
