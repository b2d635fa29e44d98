//! Bindings for the request metrics (sluicegate_core::stats): recorded once per request by the
//! Python request path, read by the Prometheus collector at scrape time.

use std::sync::Arc;

use pyo3::prelude::*;
use sluicegate_core::stats::{Histogram, Outcome, RequestLabels, RequestStats, Series};

/// (bucket upper bounds, per-bucket counts with +Inf last, sum)
pub(crate) type PyHistogram = (Vec<f64>, Vec<u64>, f64);

#[pyclass(name = "RequestStats", module = "sluicegate._core", frozen)]
pub struct PyRequestStats {
    pub(crate) inner: Arc<RequestStats>,
}

#[pyclass(name = "SeriesSnapshot", module = "sluicegate._core", frozen, get_all)]
pub struct PySeries {
    model: String,
    target_model: String,
    fairness_id: String,
    priority: i32,
    requests: u64,
    errors: Vec<(String, u64)>,
    running: i64,
    duration: PyHistogram,
    request_size: PyHistogram,
    response_size: PyHistogram,
    input_tokens: PyHistogram,
    output_tokens: PyHistogram,
    cached_tokens: PyHistogram,
    ntpot: PyHistogram,
    ttft: PyHistogram,
    ttft_streaming: PyHistogram,
    tpot: PyHistogram,
    itl: PyHistogram,
}

pub(crate) fn hist(h: Histogram) -> PyHistogram {
    (h.bounds.to_vec(), h.counts, h.sum)
}

impl From<Series> for PySeries {
    fn from(s: Series) -> Self {
        let [ttft, ttft_streaming] = s.ttft;
        PySeries {
            model: s.model,
            target_model: s.target_model,
            fairness_id: s.fairness_id,
            priority: s.priority,
            requests: s.requests,
            errors: s.errors,
            running: s.running,
            duration: hist(s.duration),
            request_size: hist(s.request_size),
            response_size: hist(s.response_size),
            input_tokens: hist(s.input_tokens),
            output_tokens: hist(s.output_tokens),
            cached_tokens: hist(s.cached_tokens),
            ntpot: hist(s.ntpot),
            ttft: hist(ttft),
            ttft_streaming: hist(ttft_streaming),
            tpot: hist(s.tpot),
            itl: hist(s.itl),
        }
    }
}

#[pymethods]
impl PyRequestStats {
    #[new]
    #[pyo3(signature = (max_series = 1000))]
    fn new(max_series: usize) -> Self {
        PyRequestStats {
            inner: Arc::new(RequestStats::new(max_series)),
        }
    }

    fn started(&self, model: &str, target_model: &str, fairness_id: &str, priority: i32) {
        self.inner.started(RequestLabels {
            model,
            target_model,
            fairness_id,
            priority,
        });
    }

    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (
        model, target_model, fairness_id, priority, was_started, *, error_code = None,
        request_bytes = None, response_bytes = None, input_tokens = None, output_tokens = None,
        cached_tokens = None, duration_s = None, ttft_s = None, streaming = false
    ))]
    fn finished(
        &self,
        model: &str,
        target_model: &str,
        fairness_id: &str,
        priority: i32,
        was_started: bool,
        error_code: Option<&str>,
        request_bytes: Option<u64>,
        response_bytes: Option<u64>,
        input_tokens: Option<u64>,
        output_tokens: Option<u64>,
        cached_tokens: Option<u64>,
        duration_s: Option<f64>,
        ttft_s: Option<f64>,
        streaming: bool,
    ) {
        let labels = RequestLabels {
            model,
            target_model,
            fairness_id,
            priority,
        };
        let outcome = Outcome {
            error_code,
            request_bytes,
            response_bytes,
            input_tokens,
            output_tokens,
            cached_tokens,
            duration_s,
            ttft_s,
            streaming,
            itl: None,
        };
        self.inner.finished(labels, was_started, &outcome);
    }

    fn snapshot(&self, py: Python<'_>) -> Vec<PySeries> {
        py.detach(|| self.inner.snapshot())
            .into_iter()
            .map(PySeries::from)
            .collect()
    }

    /// (success, target model, endpoint name, endpoint address, count) per scheduling outcome.
    fn attempts(&self) -> Vec<(bool, String, String, String, u64)> {
        self.inner
            .attempts()
            .into_iter()
            .map(|a| {
                (
                    a.success,
                    a.target_model,
                    a.endpoint_name,
                    a.endpoint_address,
                    a.count,
                )
            })
            .collect()
    }

    /// Scheduling cycles scored a second time (requests routed on other threads meanwhile).
    fn rescored(&self) -> u64 {
        self.inner
            .rescored
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Scheduling-cycle durations in seconds.
    fn scheduler(&self) -> PyHistogram {
        hist(self.inner.scheduler_histogram())
    }

    /// (request processing, response processing) durations in seconds.
    fn processing(&self) -> (PyHistogram, PyHistogram) {
        (
            hist(self.inner.request_processing.snapshot()),
            hist(self.inner.response_processing.snapshot()),
        )
    }

    /// (rewrite rule, request model, target model, count) per weighted model-rewrite decision.
    fn rewrites(&self) -> Vec<(String, String, String, u64)> {
        (self.inner.rewrites().into_iter())
            .map(|r| (r.rule, r.model, r.target, r.count))
            .collect()
    }
}

/// Per-call plugin durations of this process: (extension point, plugin type, name, histogram).
#[pyfunction]
fn plugin_timings() -> Vec<(&'static str, String, String, PyHistogram)> {
    (sluicegate_core::stats::plugin_timings().into_iter())
        .map(|(point, kind, name, h)| (point, kind, name, hist(h)))
        .collect()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyRequestStats>()?;
    m.add_class::<PySeries>()?;
    m.add_function(wrap_pyfunction!(plugin_timings, m)?)?;
    Ok(())
}
