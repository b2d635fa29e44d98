//! Bindings for the per-pool Router: endpoint snapshot, scheduler and scraper.

use pyo3::prelude::*;

pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
