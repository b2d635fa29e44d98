//! PyO3 bindings: converts types and errors at the edge; all logic lives in sluicegate-core and
//! sluicegate-extproc. One submodule per concept (`sluicegate._core.parse`, `.scheduling`,
//! `.flowcontrol`, `.extproc`, `.stats`, `.optimizer`), each imported by its one Python façade.

use pyo3::prelude::*;
use pyo3::types::PyDict;

mod errors;
mod extproc;
mod flowcontrol;
mod kvblock;
mod optimizer;
mod parse;
mod router;
mod stats;

/// Build `sluicegate._core.<name>`, importable by its dotted name. Its names also stay on
/// `_core` itself for code that has not moved to the submodule yet.
fn submodule(
    parent: &Bound<'_, PyModule>,
    name: &str,
    register: fn(&Bound<'_, PyModule>) -> PyResult<()>,
) -> PyResult<()> {
    let py = parent.py();
    let m = PyModule::new(py, name)?;
    register(&m)?;
    parent.add_submodule(&m)?;
    let modules = py.import("sys")?.getattr("modules")?;
    modules.set_item(format!("sluicegate._core.{name}"), &m)?;
    let names: Bound<'_, PyDict> = m.dict();
    for (key, value) in names.iter() {
        let key: String = key.extract()?;
        if !key.starts_with('_') {
            parent.add(key.as_str(), value)?;
        }
    }
    Ok(())
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    submodule(m, "parse", parse::register)?;
    submodule(m, "scheduling", router::register)?;
    submodule(m, "stats", stats::register)?;
    submodule(m, "flowcontrol", flowcontrol::register)?;
    submodule(m, "extproc", extproc::register)?;
    submodule(m, "kvblock", kvblock::register)?;
    submodule(m, "optimizer", optimizer::register)?;
    Ok(())
}
