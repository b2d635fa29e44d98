//! Bindings for the Rust ext_proc server: Python builds the Router and hands the same object
//! here; the server routes with it on its own tokio threads, never touching Python per request.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use sluicegate_core::scheduling::Router;
use sluicegate_extproc::stream_metrics::StreamMetrics;
use sluicegate_extproc::{ExtProcServer, RouterHandle, ServerError, ServerOptions, TlsPem};

use crate::errors::config_error;
use crate::router::PyRouter;

/// Keeps the Python Router object alive while the server routes with it.
struct PythonRouter(Py<PyRouter>);

impl RouterHandle for PythonRouter {
    fn router(&self) -> &Router {
        &self.0.get().inner
    }
}

fn server_error(e: ServerError) -> PyErr {
    match e {
        ServerError::Bind { .. } | ServerError::Runtime(_) => PyOSError::new_err(e.to_string()),
        ServerError::Tls(_) => config_error(e.to_string()),
        ServerError::State(_) => PyRuntimeError::new_err(e.to_string()),
    }
}

#[pyclass(name = "ExtProcServer", module = "sluicegate._core", frozen)]
pub struct PyExtProcServer {
    inner: Mutex<ExtProcServer>,
    #[pyo3(get)]
    port: u16,
    #[pyo3(get)]
    health_port: u16,
    streams: Option<Arc<StreamMetrics>>,
}

impl PyExtProcServer {
    fn with<T: Send>(&self, py: Python<'_>, f: impl FnOnce(&mut ExtProcServer) -> T + Send) -> T {
        py.detach(|| f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner())))
    }
}

#[pymethods]
impl PyExtProcServer {
    #[new]
    #[pyo3(signature = (router, host = "0.0.0.0", port = 9002, health_port = 9003, *,
                        tls_cert_pem = None, tls_key_pem = None, skip_response = false,
                        worker_threads = None, max_body_bytes = None, health_checking = false,
                        max_recv_msg_bytes = None, max_send_msg_bytes = None,
                        stream_metrics = false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        router: Py<PyRouter>,
        host: &str,
        port: u16,
        health_port: u16,
        tls_cert_pem: Option<Vec<u8>>,
        tls_key_pem: Option<Vec<u8>>,
        skip_response: bool,
        worker_threads: Option<usize>,
        max_body_bytes: Option<usize>,
        health_checking: bool,
        max_recv_msg_bytes: Option<usize>,
        max_send_msg_bytes: Option<usize>,
        stream_metrics: bool,
    ) -> PyResult<Self> {
        let tls = match (tls_cert_pem, tls_key_pem) {
            (Some(cert), Some(key)) => Some(TlsPem { cert, key }),
            (None, None) => None,
            _ => {
                return Err(PyValueError::new_err(
                    "tls_cert_pem and tls_key_pem: give both or neither",
                ))
            }
        };
        if worker_threads == Some(0) {
            return Err(PyValueError::new_err("worker_threads: must be at least 1"));
        }
        let options = ServerOptions {
            skip_response,
            tls,
            worker_threads,
            max_body_bytes,
            health_checking,
            max_recv_msg_bytes,
            max_send_msg_bytes,
            stream_metrics: stream_metrics.then(Default::default),
        };
        let streams = options.stream_metrics.clone();
        let handle = Arc::new(PythonRouter(router));
        let server = py
            .detach(|| ExtProcServer::new(handle, host, port, health_port, options))
            .map_err(server_error)?;
        Ok(PyExtProcServer {
            port: server.port(),
            health_port: server.health_port(),
            inner: Mutex::new(server),
            streams,
        })
    }

    /// With stream_metrics: (streams open, [(Go code name, ended)], duration histogram as
    /// (bounds, per-bucket counts, sum)); else None.
    #[allow(clippy::type_complexity)]
    fn stream_metrics(&self) -> Option<(i64, Vec<(&'static str, u64)>, (Vec<f64>, Vec<u64>, f64))> {
        let snap = self.streams.as_ref()?.snapshot();
        let d = snap.duration;
        Some((
            snap.inflight,
            snap.ended,
            (d.bounds.to_vec(), d.counts, d.sum),
        ))
    }

    /// Serve ext_proc and health on the server's own threads; returns at once.
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |s| s.start()).map_err(server_error)
    }

    fn set_serving(&self, py: Python<'_>, serving: bool) {
        self.with(py, |s| s.set_serving(serving));
    }

    /// NOT_SERVING, then up to `drain_timeout` s for open streams, then stop. Idempotent.
    #[pyo3(signature = (drain_timeout = 0.0))]
    fn stop(&self, py: Python<'_>, drain_timeout: f64) -> PyResult<()> {
        let grace = Duration::try_from_secs_f64(drain_timeout).map_err(|_| {
            PyValueError::new_err(format!(
                "drain_timeout: {drain_timeout} is not a number of seconds >= 0"
            ))
        })?;
        self.with(py, |s| s.stop(grace));
        Ok(())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyExtProcServer>()
}
