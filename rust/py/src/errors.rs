//! Maps sluicegate-core errors to the exception classes defined in `sluicegate.errors`.

pyo3::import_exception!(sluicegate.errors, BadRequestError);
pyo3::import_exception!(sluicegate.errors, NoEndpointsError);
pyo3::import_exception!(sluicegate.errors, SaturatedError);
pyo3::import_exception!(sluicegate.errors, ConfigError);

use pyo3::PyErr;
use sluicegate_core::parse::ParseError;

pub fn parse_error(e: ParseError) -> PyErr {
    BadRequestError::new_err(e.to_string())
}
