//! Feature matrices in HDF5 files: `.h5` dumps (h5py, PyTables) and MATLAB v7.3 `.mat` files,
//! which are HDF5 behind a 512-byte header (the reference's sentence features are such a file,
//! stored transposed). Read by `hdf5-reader` (pure Rust, bounds-checked).

use std::path::Path;

use hdf5_reader::{Dataset, Hdf5File};

use super::Matrix;
use super::mat::{KNOWN_NAMES, oriented};
use crate::error::{Error, Result};

/// Reads the feature matrix of an HDF5 file: its one 2-D float dataset at the top level, or the
/// one with a known name (`image_features`, `text_features`, `features`, `feats`). With `items`
/// given, a matrix stored one item per column is transposed.
///
/// # Errors
/// [`Error::BadFile`] naming the file when it is not HDF5, holds no 2-D float dataset, several
/// without a known name, or non-finite values.
pub fn read_hdf5_features(path: &Path, items: Option<usize>) -> Result<Matrix> {
    let bad = |problem: String| {
        Error::bad_file(
            path,
            problem,
            "keep one 2-D float dataset at the file's top level (or name it image_features / text_features), or save .npy",
        )
    };
    let file = Hdf5File::from_vec(crate::fsio::read(path)?)
        .map_err(|e| bad(format!("not a readable HDF5 file: {e}")))?;
    let datasets = file
        .root_group()
        .and_then(|g| g.datasets())
        .map_err(|e| bad(format!("cannot list the datasets: {e}")))?;
    let matrices: Vec<Dataset> = datasets.into_iter().filter(|d| d.ndim() == 2).collect();
    let chosen = match matrices.len() {
        0 => return Err(bad("holds no 2-D dataset at its top level".into())),
        1 => &matrices[0],
        _ => match matrices.iter().find(|d| KNOWN_NAMES.contains(&d.name())) {
            Some(d) => d,
            None => {
                let names: Vec<&str> = matrices.iter().map(|d| d.name()).collect();
                return Err(bad(format!(
                    "holds {} matrices ({}) and none is named image_features or text_features",
                    names.len(),
                    names.join(", ")
                )));
            }
        },
    };
    let name = chosen.name().to_string();
    let (rows, cols) = (chosen.shape()[0] as usize, chosen.shape()[1] as usize);
    let values: Vec<f32> = match chosen.read_array::<f32>() {
        Ok(a) => a.iter().copied().collect(),
        Err(_) => chosen
            .read_array::<f64>()
            .map_err(|e| bad(format!("`{name}` is not a float matrix: {e}")))?
            .iter()
            .map(|&v| v as f32)
            .collect(),
    };
    if values.len() != rows * cols {
        return Err(bad(format!(
            "`{name}` is {rows}×{cols} but holds {} values",
            values.len()
        )));
    }
    // HDF5 is row-major: as stored, item i is row i.
    oriented(&name, rows, cols, |r, c| values[r * cols + c], items).map_err(bad)
}
