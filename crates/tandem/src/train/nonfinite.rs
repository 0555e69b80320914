//! Finding the tensor that went non-finite, and naming the batch that did it.

use candle_core::Var;
use rayon::prelude::*;

use crate::error::Result;

/// The first trained tensor whose gradient has a non-finite entry, with that entry's largest
/// magnitude.
pub(crate) fn first_nonfinite_gradient(
    grads: &candle_core::backprop::GradStore,
    named: &[(String, Var)],
) -> Result<Option<(String, f64)>> {
    for (name, var) in named {
        if let Some(g) = grads.get(var.as_tensor()) {
            // Every step checks every gradient: on the CPU one parallel scan without
            // temporaries (the tensor version allocated |g| and made two single-threaded passes
            // over 22.7M values per step at the paper's size).
            let host = g.device().is_cpu() && g.dtype() == candle_core::DType::F32;
            let bad = if host {
                let g = g.contiguous()?;
                crate::model::gemm::with_values(&g, |v| {
                    v.par_iter()
                        .find_any(|x| !x.is_finite())
                        .map(|x| f64::from(x.abs()))
                })?
            } else {
                let peak = g
                    .abs()?
                    .max_all()?
                    .to_dtype(candle_core::DType::F64)?
                    .to_scalar::<f64>()?;
                (!peak.is_finite()).then_some(peak)
            };
            if let Some(peak) = bad {
                return Ok(Some((format!("gradient of {name}"), peak)));
            }
        }
    }
    Ok(None)
}

/// `12, 55, 1034, … (500 in all)`: enough ids to find the rows, not a wall of numbers.
pub(crate) fn abbreviate(ids: &[u32]) -> String {
    const SHOWN: usize = 8;
    let head: Vec<String> = ids.iter().take(SHOWN).map(u32::to_string).collect();
    if ids.len() > SHOWN {
        format!("{}, … ({} in all)", head.join(", "), ids.len())
    } else {
        head.join(", ")
    }
}
