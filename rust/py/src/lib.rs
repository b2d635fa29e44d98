//! PyO3 bindings: converts types and errors at the edge; all logic lives in sluicegate-core.

use pyo3::prelude::*;

mod errors;
mod extproc;
mod flowcontrol;
mod kvblock;
mod parse;
mod router;
mod stats;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    parse::register(m)?;
    router::register(m)?;
    stats::register(m)?;
    flowcontrol::register(m)?;
    extproc::register(m)?;
    kvblock::register(m)?;
    Ok(())
}
