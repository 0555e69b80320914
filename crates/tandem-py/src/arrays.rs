//! numpy in and out: feature matrices of any float dtype and either order, borrowed when they
//! are C-contiguous float32 and copied otherwise.

use std::borrow::Cow;

use numpy::{
    AllowTypeChange, PyArray1, PyArrayLike1, PyArrayLike2, PyArrayMethods, PyUntypedArrayMethods,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// A 2-D array-like that numpy can turn into float32.
pub type Floats<'py> = PyArrayLike2<'py, f32, AllowTypeChange>;
/// A 1-D array-like that numpy can turn into int64.
pub type Ints<'py> = PyArrayLike1<'py, i64, AllowTypeChange>;

/// The rows of `array` in row-major order, with its shape; `name` names it in errors.
///
/// # Errors
/// `ValueError` for a non-finite value (with its row and column) or an empty array.
pub fn rows<'a>(array: &'a Floats<'_>, name: &str) -> PyResult<(Cow<'a, [f32]>, usize, usize)> {
    let view = array.as_array();
    let (r, c) = view.dim();
    if r == 0 || c == 0 {
        return Err(PyValueError::new_err(format!(
            "{name}: the array is empty ({r} × {c}); give one row per item"
        )));
    }
    // `as_slice` also succeeds for Fortran-ordered arrays (their memory order), so C order
    // is checked first; anything else is copied row by row.
    let values = match array.as_slice() {
        Ok(slice) if array.is_c_contiguous() => Cow::Borrowed(slice),
        _ => Cow::Owned(view.iter().copied().collect()),
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(PyValueError::new_err(format!(
            "{name}: non-finite value {} at row {}, column {}; replace NaN/Inf (e.g. numpy.nan_to_num) or drop those rows",
            values[i],
            i / c,
            i % c
        )));
    }
    Ok((values, r, c))
}

/// A `[rows, cols]` numpy array owning `values` (float32 embeddings and scores, int64 ids).
pub fn matrix<'py, T: numpy::Element>(
    py: Python<'py>,
    values: Vec<T>,
    rows: usize,
    cols: usize,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(PyArray1::from_vec(py, values)
        .reshape([rows, cols])?
        .into_any())
}

/// A Python object from anything serialisable, through JSON (metrics, reports).
pub fn to_python<'py>(
    py: Python<'py>,
    value: &impl serde::Serialize,
) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(value).expect("reports serialise");
    py.import("json")?.call_method1("loads", (text,))
}
