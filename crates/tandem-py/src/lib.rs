//! `tandem` for Python: the native module `tandem._tandem`. The Python package around it
//! (`python/tandem`) adds progress bars, config dicts and the PyTorch adapter.

mod arrays;
mod dataset;
mod errors;
mod index;
mod losses;
mod model;
mod text;
mod trainer;
mod training;

use pyo3::prelude::*;

#[pymodule]
fn _tandem(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<dataset::Dataset>()?;
    m.add_class::<model::Model>()?;
    m.add_class::<index::Index>()?;
    m.add_class::<text::SentenceEncoder>()?;
    m.add_class::<text::ImageEncoder>()?;
    m.add_class::<losses::Memory>()?;
    m.add_class::<trainer::PyTrainer>()?;
    m.add_function(wrap_pyfunction!(training::train, m)?)?;
    m.add_function(wrap_pyfunction!(training::resume, m)?)?;
    m.add_function(wrap_pyfunction!(training::default_config, m)?)?;
    m.add_function(wrap_pyfunction!(model::load, m)?)?;
    m.add_function(wrap_pyfunction!(model::evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(losses::loss, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
