//! Maps sluicegate-core errors to the exception classes defined in `sluicegate.errors`.

pyo3::import_exception!(sluicegate.errors, BadRequestError);
pyo3::import_exception!(sluicegate.errors, NoEndpointsError);
pyo3::import_exception!(sluicegate.errors, SaturatedError);
pyo3::import_exception!(sluicegate.errors, ConfigError);
pyo3::import_exception!(sluicegate.errors, ModelNotServedError);

use pyo3::PyErr;
use sluicegate_core::parse::ParseError;

pub fn parse_error(e: ParseError) -> PyErr {
    BadRequestError::new_err(e.to_string())
}

pub fn config_error(message: String) -> PyErr {
    ConfigError::new_err(message)
}

pub fn route_error(e: sluicegate_core::scheduling::RouteError) -> PyErr {
    use sluicegate_core::scheduling::RouteError;
    match e {
        RouteError::BadRequest(p) => parse_error(p),
        RouteError::NoEndpoints(s) => NoEndpointsError::new_err(s.to_string()),
        e @ RouteError::ModelNotServed { .. } => ModelNotServedError::new_err(e.to_string()),
    }
}
