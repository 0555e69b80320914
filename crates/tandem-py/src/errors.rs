//! The library's errors as Python exceptions, with the CLI's messages.

use pyo3::PyErr;
use pyo3::exceptions::{
    PyFileNotFoundError, PyFloatingPointError, PyKeyboardInterrupt, PyOSError, PyRuntimeError,
    PyValueError,
};
use tandem::Error;

/// `FileNotFoundError` for a missing file, `OSError` for other I/O, `FloatingPointError` for a
/// diverged run, `KeyboardInterrupt` for an interrupted one, `RuntimeError` from the tensor
/// library, `ValueError` for everything the user can fix in their input.
pub fn to_py(e: Error) -> PyErr {
    let message = e.to_string();
    match &e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(message)
        }
        Error::Io { .. } => PyOSError::new_err(message),
        Error::NonFinite { .. } => PyFloatingPointError::new_err(message),
        Error::Interrupted { .. } => PyKeyboardInterrupt::new_err(message),
        Error::Tensor(_) => PyRuntimeError::new_err(message),
        _ => PyValueError::new_err(message),
    }
}

/// `Result` → `PyResult`.
pub trait IntoPy<T> {
    fn py_err(self) -> pyo3::PyResult<T>;
}

impl<T> IntoPy<T> for tandem::Result<T> {
    fn py_err(self) -> pyo3::PyResult<T> {
        self.map_err(to_py)
    }
}
