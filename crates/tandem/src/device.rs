//! Which device tandem computes on: the default, or one named by the user (`--devices`).

use candle_core::Device;

use crate::error::{Error, Result};

/// The device tandem computes on: the first CUDA GPU when built with the `cuda` feature and one
/// is present, else the CPU.
///
/// # Errors
/// A tensor error when CUDA is compiled in but fails to initialise.
pub fn default_device() -> Result<Device> {
    #[cfg(feature = "cuda")]
    {
        Ok(Device::cuda_if_available(0)?)
    }
    #[cfg(not(feature = "cuda"))]
    {
        Ok(Device::Cpu)
    }
}

/// The device called `name`: `cpu`, `cuda` (the first GPU) or `cuda:N`. Naming one GPU twice
/// gives two handles on it (two data-parallel ranks may share a GPU).
///
/// # Errors
/// [`Error::Config`] for another name, or for a GPU in a build without the `cuda` feature; a
/// tensor error when the GPU cannot be opened.
pub fn parse_device(name: &str) -> Result<Device> {
    match name.trim() {
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda(0),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(ordinal)) => cuda(ordinal),
            _ => Err(Error::Config(format!(
                "device `{name}`: expected `cpu`, `cuda` or `cuda:N` (N the GPU's number, from 0)"
            ))),
        },
    }
}

fn cuda(ordinal: usize) -> Result<Device> {
    #[cfg(feature = "cuda")]
    {
        Ok(Device::new_cuda(ordinal)?)
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err(Error::Config(format!(
            "device `cuda:{ordinal}`: this tandem was built without CUDA; build it with \
             `cargo build --release -p tandem-cli --features cuda` on a machine with a GPU"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_to_devices_or_say_what_is_expected() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(parse_device(" cpu ").unwrap().is_cpu());
        for wrong in ["gpu", "cuda:", "cuda:x", "cuda:-1", ""] {
            let e = parse_device(wrong).unwrap_err().to_string();
            assert!(
                e.contains("expected `cpu`, `cuda` or `cuda:N`"),
                "{wrong}: {e}"
            );
        }
        #[cfg(not(feature = "cuda"))]
        for gpu in ["cuda", "cuda:1"] {
            let e = parse_device(gpu).unwrap_err().to_string();
            assert!(
                e.contains("built without CUDA") && e.contains("--features cuda"),
                "{e}"
            );
        }
    }
}
