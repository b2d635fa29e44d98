//! Bindings for the Rust ext_proc server: Python builds the Router (and, for flow control, the
//! FlowGate) and hands the same objects here; the server admits and routes with them on its own
//! tokio threads, never touching Python per request. The wire names are exported from here.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use sluicegate_core::flowcontrol::FlowControlConfig;
use sluicegate_core::scheduling::Router;
use sluicegate_extproc::log::{self, Encoder, Level, TimeEncoding};
use sluicegate_extproc::stream_metrics::{BUCKETS, CODE_NAMES};
use sluicegate_extproc::{
    protocol, ExtProcServer, Gate, RouterHandle, ServerError, ServerOptions, TlsPem, TlsPolicy,
};

use crate::errors::config_error;
use crate::flowcontrol::HoldSignal;
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

/// Flow control (or, `queueing` False, legacy shedding) in front of the ext_proc server's
/// routing. Python reads its counters at scrape time and sets the scale-from-zero grace period.
/// ((fairness id, priority, outcome, model, target model), histogram)
pub(crate) type QueueDurationRow = (
    (String, i32, &'static str, String, String),
    crate::stats::PyHistogram,
);

pub(crate) fn queue_rows(
    q: &sluicegate_core::flowcontrol::QueueDurations,
) -> Vec<QueueDurationRow> {
    q.snapshot()
        .into_iter()
        .map(|s| {
            let labels = (
                s.fairness_id,
                s.priority,
                s.outcome,
                s.model,
                s.target_model,
            );
            (labels, crate::stats::hist(s.duration))
        })
        .collect()
}

/// ((fairness id, priority, model, target model, requests, bytes) per flow and model,
///  ((fairness id, priority, outcome), enqueue-duration histogram), dispatch-cycle histogram)
pub(crate) type FlowMetricRows = (
    Vec<(String, i32, String, String, i64, i64)>,
    Vec<((String, i32, &'static str), crate::stats::PyHistogram)>,
    crate::stats::PyHistogram,
);

pub(crate) fn flow_metric_rows(m: &sluicegate_core::flowcontrol::FlowMetrics) -> FlowMetricRows {
    let (gauges, enqueue) = m.snapshot();
    let gauges = gauges
        .into_iter()
        .map(|g| {
            let (requests, bytes) = (g.requests, g.bytes);
            (
                g.fairness_id,
                g.priority,
                g.model,
                g.target_model,
                requests,
                bytes,
            )
        })
        .collect();
    let enqueue = enqueue
        .into_iter()
        .map(|e| {
            let labels = (e.fairness_id, e.priority, e.outcome);
            (labels, crate::stats::hist(e.duration))
        })
        .collect();
    (
        gauges,
        enqueue,
        crate::stats::hist(m.dispatch_cycle.snapshot()),
    )
}

#[pyclass(name = "FlowGate", module = "sluicegate._core.extproc", frozen)]
pub struct PyFlowGate {
    gate: Arc<Gate>,
    hold_signal: HoldSignal,
}

#[pymethods]
impl PyFlowGate {
    #[new]
    #[pyo3(signature = (router, config_json = "{}", queueing = true))]
    fn new(router: Py<PyRouter>, config_json: &str, queueing: bool) -> PyResult<Self> {
        let config =
            FlowControlConfig::from_json(config_json).map_err(|e| config_error(e.to_string()))?;
        let (hold_signal, scale_from_zero) = HoldSignal::new()?;
        let gate = Gate::start(
            Arc::new(PythonRouter(router)),
            config,
            queueing,
            scale_from_zero,
        )?;
        Ok(PyFlowGate { gate, hold_signal })
    }

    #[getter]
    fn queueing(&self) -> bool {
        self.gate.queueing()
    }

    /// Endpoints or metrics changed: requests waiting for them may go now.
    fn notify(&self) {
        self.gate.notify();
    }

    fn saturation(&self) -> f64 {
        self.gate.saturation()
    }

    /// The pool's scale-from-zero grace period in seconds (None: not managed) and the message
    /// requests held for it fail with when it ends.
    #[pyo3(signature = (grace_s, message = String::new()))]
    fn set_scale_from_zero(&self, grace_s: Option<f64>, message: String) -> PyResult<()> {
        let grace = grace_s.map(|g| seconds("grace_s", g)).transpose()?;
        self.gate
            .scale_from_zero
            .set(grace.map(|period| (period, message)));
        Ok(())
    }

    /// (requests held for the grace period now, held in total, failed at its end in total).
    fn hold_counts(&self) -> (u64, u64, u64) {
        self.gate.scale_from_zero.counts()
    }

    /// Readable when a request was held while none was (the activator's scale-up event).
    fn hold_fd(&self) -> i32 {
        self.hold_signal.fd()
    }

    /// Re-arm the hold event; then drain `hold_fd` and read `hold_counts`.
    fn take_hold_signal(&self) {
        self.hold_signal.take();
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        crate::flowcontrol::stats_dict(py, &self.gate.stats())
    }

    /// Time in flow control per (fairness id, priority, outcome, model, target model): one
    /// histogram each, upstream's QueueOutcome names and buckets.
    fn queue_durations(&self) -> Vec<QueueDurationRow> {
        queue_rows(&self.gate.queue_durations)
    }

    /// (per-flow queue gauges, enqueue durations, dispatch-cycle durations).
    fn flow_metrics(&self) -> FlowMetricRows {
        flow_metric_rows(self.gate.flow_metrics())
    }

    /// (priority, outcome, requests) that left flow control, kept when idle flows are forgotten.
    fn queue_totals(&self) -> Vec<(i32, &'static str, u64)> {
        self.gate.queue_durations.totals()
    }

    /// Answer every queued request 503 rejected-shutting-down and stop the dispatch thread.
    fn shutdown(&self, py: Python<'_>) {
        py.detach(|| self.gate.shutdown());
    }
}

fn seconds(field: &str, value: f64) -> PyResult<Duration> {
    if value.is_finite() && value > 0.0 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(PyValueError::new_err(format!(
            "{field}: {value} is not a positive number of seconds"
        )))
    }
}

/// Log lines from Rust: Python's level number (10 debug … 40 error), the encoder ("json",
/// "console" or "text") and --zap-time-encoding (None = iso8601), set once for the process.
#[pyfunction]
#[pyo3(signature = (level, encoder = "json", time_encoding = None))]
fn configure_logging(level: u8, encoder: &str, time_encoding: Option<&str>) -> PyResult<()> {
    let encoder = Encoder::from_name(encoder).ok_or_else(|| {
        PyValueError::new_err(format!(
            "encoder: {encoder:?} is not one of json, console, text"
        ))
    })?;
    let time = match time_encoding {
        None => TimeEncoding::Iso8601,
        Some(name) => TimeEncoding::from_name(name).ok_or_else(|| {
            PyValueError::new_err(format!(
                "time_encoding: {name:?} is not one of epoch, millis, nano, iso8601, rfc3339, rfc3339nano"
            ))
        })?,
    };
    log::configure(Level::from_python(level), encoder, time);
    Ok(())
}

#[pyclass(name = "ExtProcServer", module = "sluicegate._core.extproc", frozen)]
pub struct PyExtProcServer {
    inner: Mutex<ExtProcServer>,
    #[pyo3(get)]
    port: u16,
    #[pyo3(get)]
    health_port: u16,
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
                        worker_threads = None, max_body_bytes = None, gate = None,
                        health_checking = false, max_recv_msg_bytes = None, max_send_msg_bytes = None,
                        tls_reload_dir = None, tls_min_version = None, tls_cipher_suites = Vec::new(),
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
        gate: Option<Py<PyFlowGate>>,
        health_checking: bool,
        max_recv_msg_bytes: Option<usize>,
        max_send_msg_bytes: Option<usize>,
        tls_reload_dir: Option<std::path::PathBuf>,
        tls_min_version: Option<String>,
        tls_cipher_suites: Vec<String>,
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
            gate: gate.map(|g| g.get().gate.clone()),
            health_checking,
            max_recv_msg_bytes,
            max_send_msg_bytes,
            tls_policy: TlsPolicy {
                reload_dir: tls_reload_dir,
                min_version: tls_min_version,
                cipher_suites: tls_cipher_suites,
            },
            stream_metrics,
        };
        let handle = std::sync::Arc::new(PythonRouter(router));
        let server = py
            .detach(|| ExtProcServer::new(handle, host, port, health_port, options))
            .map_err(server_error)?;
        Ok(PyExtProcServer {
            port: server.port(),
            health_port: server.health_port(),
            inner: Mutex::new(server),
        })
    }

    /// --enable-grpc-stream-metrics counts, read at scrape time: (streams open now, cumulative
    /// duration bucket counts matching STREAM_DURATION_BUCKETS then +Inf, sum of durations in
    /// seconds, {Go code name: streams ended with it}); None when not enabled.
    #[allow(clippy::type_complexity)]
    fn stream_metrics(
        &self,
        py: Python<'_>,
    ) -> Option<(i64, Vec<u64>, f64, Vec<(&'static str, u64)>)> {
        self.with(py, |s| s.stream_metrics())
            .map(|m| (m.inflight, m.buckets, m.sum_seconds, m.ended))
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
    m.add_class::<PyExtProcServer>()?;
    m.add_class::<PyFlowGate>()?;
    m.add_function(wrap_pyfunction!(configure_logging, m)?)?;
    // Wire names, defined once in Rust.
    m.add("DESTINATION_ENDPOINT", protocol::DESTINATION_ENDPOINT)?;
    m.add("DESTINATION_NAMESPACE", protocol::DESTINATION_NAMESPACE)?;
    m.add("SUBSET_NAMESPACE", protocol::SUBSET_NAMESPACE)?;
    m.add("SUBSET_KEY", protocol::SUBSET_KEY)?;
    m.add("SERVED_ENDPOINT", protocol::SERVED_ENDPOINT)?;
    m.add("OBJECTIVE_HEADERS", protocol::OBJECTIVE_HEADERS)?;
    m.add("FAIRNESS_HEADERS", protocol::FAIRNESS_HEADERS)?;
    m.add("MODEL_REWRITE_HEADERS", protocol::MODEL_REWRITE_HEADERS)?;
    m.add(
        "DESTINATION_ENDPOINT_SCORES",
        protocol::DESTINATION_ENDPOINT_SCORES,
    )?;
    m.add("SLO_TTFT_HEADERS", protocol::SLO_TTFT_HEADERS)?;
    m.add("SLO_TPOT_HEADERS", protocol::SLO_TPOT_HEADERS)?;
    m.add("PREFILLER_HEADER", protocol::PREFILLER_HEADER)?;
    m.add("ENCODERS_HEADER", protocol::ENCODERS_HEADER)?;
    m.add("DATA_PARALLEL_HEADER", protocol::DATA_PARALLEL_HEADER)?;
    m.add("SESSION_TOKEN_HEADER", protocol::SESSION_TOKEN_HEADER)?;
    m.add("SESSION_ID_HEADER", protocol::SESSION_ID_HEADER)?;
    m.add("DEFAULT_FAIRNESS_ID", protocol::DEFAULT_FAIRNESS_ID)?;
    m.add("DROPPED_REASON", protocol::DROPPED_REASON)?;
    m.add("REQUEST_ID", protocol::REQUEST_ID)?;
    m.add("BODY_CHUNK_BYTES", protocol::BODY_CHUNK_BYTES)?;
    m.add("EXT_PROC_SERVICE", protocol::EXT_PROC_SERVICE)?;
    m.add("HEALTH_SERVICES", protocol::HEALTH_SERVICES)?;
    m.add("MAX_BODY_BYTES", sluicegate_extproc::stream::MAX_BODY_BYTES)?;
    m.add("STREAM_DURATION_BUCKETS", BUCKETS.to_vec())?;
    m.add("GRPC_CODE_NAMES", CODE_NAMES.to_vec())?;
    Ok(())
}
