//! `dataset.safetensors`: the three dataset arrays in one file.

use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::data::Matrix;
use crate::error::{Error, Result};

const FIX: &str = "save tensors named images [n_images, d], texts [n_texts, d] and text_to_image [n_texts] with safetensors";

/// Reads `images`, `texts` and `text_to_image` from one safetensors file.
///
/// # Errors
/// [`Error::BadFile`] for a corrupt file, a missing tensor, a wrong dtype or shape, or a
/// non-finite feature.
pub fn read_dataset(path: &Path, bytes: &[u8]) -> Result<(Matrix, Matrix, Vec<i64>)> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::bad_file(path, format!("not a valid safetensors file: {e}"), FIX))?;
    let tensor = |name: &str| {
        st.tensor(name)
            .map_err(|_| Error::bad_file(path, format!("the tensor `{name}` is missing"), FIX))
    };
    let images = features(path, "images", &tensor("images")?)?;
    let texts = features(path, "texts", &tensor("texts")?)?;
    let ids = ids(path, &tensor("text_to_image")?)?;
    Ok((images, texts, ids))
}

fn features(path: &Path, name: &str, view: &safetensors::tensor::TensorView<'_>) -> Result<Matrix> {
    let shape = view.shape();
    if shape.len() != 2 || shape[0] == 0 || shape[1] == 0 {
        return Err(Error::bad_file(
            path,
            format!("`{name}` must be a non-empty 2-D tensor, found shape {shape:?}"),
            FIX,
        ));
    }
    let raw = view.data();
    let data: Vec<f32> = match view.dtype() {
        Dtype::F32 => raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F64 => raw
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("chunk of 8")) as f32)
            .collect(),
        Dtype::F16 => raw
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => raw
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => {
            return Err(Error::bad_file(
                path,
                format!("`{name}` must be a float tensor, found {other:?}"),
                "convert the features to float32 before saving",
            ));
        }
    };
    let cols = shape[1];
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(Error::bad_file(
            path,
            format!(
                "`{name}` has a non-finite value at row {}, column {}",
                i / cols,
                i % cols
            ),
            "replace NaN/Inf features or drop those rows",
        ));
    }
    Ok(Matrix {
        rows: shape[0],
        cols,
        data,
    })
}

fn ids(path: &Path, view: &safetensors::tensor::TensorView<'_>) -> Result<Vec<i64>> {
    if view.shape().len() != 1 {
        return Err(Error::bad_file(
            path,
            format!(
                "`text_to_image` must be 1-D, found shape {:?}",
                view.shape()
            ),
            FIX,
        ));
    }
    let raw = view.data();
    let out = match view.dtype() {
        Dtype::I64 => raw
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8")))
            .collect(),
        Dtype::I32 => raw
            .chunks_exact(4)
            .map(|c| i64::from(i32::from_le_bytes(c.try_into().expect("4"))))
            .collect(),
        Dtype::I16 => raw
            .chunks_exact(2)
            .map(|c| i64::from(i16::from_le_bytes([c[0], c[1]])))
            .collect(),
        Dtype::I8 => raw.iter().map(|&b| i64::from(b as i8)).collect(),
        Dtype::U8 => raw.iter().map(|&b| i64::from(b)).collect(),
        Dtype::U16 => raw
            .chunks_exact(2)
            .map(|c| i64::from(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        Dtype::U32 => raw
            .chunks_exact(4)
            .map(|c| i64::from(u32::from_le_bytes(c.try_into().expect("4"))))
            .collect(),
        Dtype::U64 => raw
            .chunks_exact(8)
            .map(|c| {
                i64::try_from(u64::from_le_bytes(c.try_into().expect("8"))).unwrap_or(i64::MAX)
            })
            .collect(),
        other => {
            return Err(Error::bad_file(
                path,
                format!("`text_to_image` must be an integer tensor, found {other:?}"),
                "convert the ids to int64 before saving",
            ));
        }
    };
    Ok(out)
}
