//! Bindings for the per-pool Router: endpoint snapshot, scheduler and scraper. Values cross
//! as plain types; routing runs with the GIL released.

use std::collections::{BTreeMap, HashMap};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use sluicegate_core::admission::{Objectives, RewriteTable};
use sluicegate_core::datalayer::{metrics, EndpointSpec, Engine, PodFacts};
use sluicegate_core::scheduling::{self, RouteError, RouteOptions};
use sluicegate_core::tokenize::PreTokenized;

use crate::errors::{config_error, route_error};

#[pyclass(name = "EndpointMetrics", module = "sluicegate._core", frozen, get_all)]
pub struct PyEndpointMetrics {
    waiting: u32,
    running: u32,
    kv_usage: f64,
    running_loras: Vec<String>,
    waiting_loras: Vec<String>,
    max_lora: u32,
    block_size: u32,
    num_gpu_blocks: u64,
}

#[pymethods]
impl PyEndpointMetrics {
    fn __repr__(&self) -> String {
        format!(
            "EndpointMetrics(waiting={}, running={}, kv_usage={}, running_loras={:?}, waiting_loras={:?}, \
             max_lora={}, block_size={}, num_gpu_blocks={})",
            self.waiting,
            self.running,
            self.kv_usage,
            self.running_loras,
            self.waiting_loras,
            self.max_lora,
            self.block_size,
            self.num_gpu_blocks
        )
    }
}

fn engine_named(name: &str) -> PyResult<Engine> {
    Engine::from_name(name).map_err(|e| config_error(e.to_string()))
}

fn text_of(bytes: &[u8]) -> PyResult<&str> {
    std::str::from_utf8(bytes).map_err(|e| {
        pyo3::exceptions::PyValueError::new_err(format!("metrics text is not UTF-8: {e}"))
    })
}

#[pyfunction]
fn parse_metrics(
    py: Python<'_>,
    text: &Bound<'_, PyBytes>,
    engine: &str,
) -> PyResult<PyEndpointMetrics> {
    let engine = engine_named(engine)?;
    let text = text_of(text.as_bytes())?;
    let mut m = metrics::EndpointMetrics::default();
    let update = py.detach(|| metrics::parse_metrics(text, engine));
    m.merge(&update);
    Ok(PyEndpointMetrics {
        waiting: m.waiting,
        running: m.running,
        kv_usage: m.kv_usage,
        running_loras: m.running_loras,
        waiting_loras: m.waiting_loras,
        max_lora: m.max_lora,
        block_size: m.block_size,
        num_gpu_blocks: m.num_gpu_blocks,
    })
}

#[pyclass(name = "Decision", module = "sluicegate._core", frozen, get_all)]
pub struct PyDecision {
    endpoints: String,
    primary: String,
    model: Option<String>,
    target_model: Option<String>,
    body: Option<Py<PyBytes>>,
    stream: bool,
    kind: &'static str,
    headers: Option<BTreeMap<String, String>>,
    response_headers: Option<BTreeMap<String, String>>,
    session_token: Option<String>,
    endpoint_scores: Option<BTreeMap<String, f64>>,
    /// Estimated tokens held on the primary: give them back with `release(primary, held_tokens)`.
    held_tokens: u64,
}

impl PyDecision {
    /// Also used by the flow controller, whose dispatch thread routes queued requests.
    pub(crate) fn from_core(py: Python<'_>, d: scheduling::Decision) -> Self {
        PyDecision {
            primary: d.primary().to_owned(),
            held_tokens: u64::from(d.held_tokens),
            body: d.body.as_deref().map(|b| PyBytes::new(py, b).unbind()),
            endpoints: d.endpoints,
            model: d.model,
            target_model: d.target_model,
            stream: d.stream,
            kind: d.kind.as_str(),
            headers: (!d.headers.is_empty()).then(|| d.headers.into_iter().collect()),
            session_token: d
                .response_headers
                .iter()
                .find(|(k, _)| k == scheduling::SESSION_TOKEN_HEADER)
                .map(|(_, v)| v.clone()),
            response_headers: (!d.response_headers.is_empty())
                .then(|| d.response_headers.into_vec().into_iter().collect()),
            endpoint_scores: d
                .endpoint_scores
                .map(|s| s.into_vec().into_iter().collect()),
        }
    }
}

#[pymethods]
impl PyDecision {
    fn __repr__(&self) -> String {
        format!(
            "Decision(endpoints={:?}, model={:?}, target_model={:?}, rewritten={}, stream={}, kind={:?}, \
             headers={:?})",
            self.endpoints,
            self.model,
            self.target_model,
            self.body.is_some(),
            self.stream,
            self.kind,
            self.headers
        )
    }
}

#[pyclass(name = "EndpointStatus", module = "sluicegate._core", frozen, get_all)]
pub struct PyEndpointStatus {
    name: String,
    address: String,
    waiting: u32,
    running: u32,
    kv_usage: f64,
    in_flight: u32,
    in_flight_tokens: u64,
    models: Option<Vec<String>>,
    age_ms: i64,
    stale: bool,
    scrape_errors: u64,
    /// Why the last metrics scrape failed; None once one succeeds.
    scrape_error: Option<String>,
    /// (source type, extractor type, poll errors, extract errors, why the last poll failed) of
    /// each attribute source that has failed here.
    source_errors: Vec<SourceErrorRow>,
}

/// A Pod's (name, `spec.hostname`, node address), as `set_endpoints` takes them.
type PodRow = (Option<String>, Option<String>, Option<String>);

type SourceErrorRow = (&'static str, &'static str, u64, u64, Option<String>);

#[pymethods]
impl PyEndpointStatus {
    fn __repr__(&self) -> String {
        format!(
            "EndpointStatus(name={:?}, address={:?}, waiting={}, running={}, kv_usage={}, in_flight={}, \
             in_flight_tokens={}, age_ms={}, stale={}, scrape_errors={}, scrape_error={:?})",
            self.name,
            self.address,
            self.waiting,
            self.running,
            self.kv_usage,
            self.in_flight,
            self.in_flight_tokens,
            self.age_ms,
            self.stale,
            self.scrape_errors,
            self.scrape_error
        )
    }
}

/// A request's token ids computed before its cycle by `Router.tokenize` (or why they could not
/// be), for `Router.route(..., tokens=)`; kept on the Rust side, never converted.
#[pyclass(name = "Tokens", module = "sluicegate._core", frozen)]
pub struct PyTokens {
    inner: PreTokenized,
}

#[pymethods]
impl PyTokens {
    /// Why tokenizing failed (the route then scores no prefix match); None when it worked.
    #[getter]
    fn error(&self) -> Option<String> {
        self.inner.as_ref().err().map(ToString::to_string)
    }

    fn __len__(&self) -> usize {
        self.inner.as_ref().map_or(0, Vec::len)
    }
}

#[pyclass(name = "Router", module = "sluicegate._core", frozen)]
pub struct PyRouter {
    pub(crate) inner: scheduling::Router,
}

#[pymethods]
impl PyRouter {
    #[new]
    #[pyo3(signature = (config_json = "{}"))]
    fn new(config_json: &str) -> PyResult<Self> {
        let inner =
            scheduling::Router::from_json(config_json).map_err(|e| config_error(e.to_string()))?;
        Ok(PyRouter { inner })
    }

    /// `pods`: address -> (name, `spec.hostname`, node address) of the Pod behind the endpoint,
    /// as Kubernetes mode reads them (DCGM's pod label and `useNodeAddress`, topology-extractor's
    /// fallback), replaced together with the endpoints.
    #[pyo3(signature = (endpoints, pods = None))]
    fn set_endpoints(
        &self,
        endpoints: Vec<(String, String, BTreeMap<String, String>)>,
        pods: Option<HashMap<String, PodRow>>,
    ) {
        let specs: Vec<EndpointSpec> = endpoints
            .into_iter()
            .map(|(name, address, labels)| EndpointSpec {
                name,
                address,
                labels: labels.into_iter().collect(),
            })
            .collect();
        let pods: HashMap<String, PodFacts> = pods
            .unwrap_or_default()
            .into_iter()
            .map(|(address, (name, hostname, node_address))| {
                let facts = PodFacts {
                    name,
                    hostname,
                    node_address,
                };
                (address, facts)
            })
            .collect();
        self.inner.set_endpoints_with(&specs, &pods);
    }

    /// Serve only `models`, naming `pool` in refusals; None serves any model.
    #[pyo3(signature = (pool, models = None))]
    fn set_allowed_models(&self, pool: &str, models: Option<Vec<String>>) {
        self.inner.set_allowed_models(pool, models.as_deref());
    }

    #[pyo3(signature = (address, text, engine = "vllm"))]
    fn ingest_metrics(
        &self,
        py: Python<'_>,
        address: &str,
        text: &Bound<'_, PyBytes>,
        engine: &str,
    ) -> PyResult<bool> {
        let engine = engine_named(engine)?;
        let text = text_of(text.as_bytes())?;
        Ok(py.detach(|| self.inner.ingest_metrics(address, text, engine)))
    }

    fn start_scraper(&self) -> PyResult<()> {
        Ok(self.inner.start_scraper()?)
    }

    fn stop_scraper(&self, py: Python<'_>) {
        // Joining the scrape thread can take up to one request timeout.
        py.detach(|| self.inner.stop_scraper());
    }

    /// The resolved scheduling configuration as JSON (profiles, plugins, weights).
    fn describe(&self) -> String {
        self.inner.describe().to_string()
    }

    #[pyo3(signature = (path, body, model_rewrite = None, subset = None, *, headers = None, tokens = None))]
    #[allow(clippy::too_many_arguments)]
    fn route(
        &self,
        py: Python<'_>,
        path: &str,
        body: &Bound<'_, PyBytes>,
        model_rewrite: Option<&str>,
        subset: Option<Vec<String>>,
        headers: Option<BTreeMap<String, String>>,
        tokens: Option<PyRef<'_, PyTokens>>,
    ) -> PyResult<PyDecision> {
        let request = (path, body.as_bytes(), model_rewrite, subset, headers);
        let tokens = tokens.as_ref().map(|t| &t.inner);
        let d = detached(py, request, tokens, |p, b, o| {
            self.inner.route_with(p, b, o)
        })?;
        Ok(PyDecision::from_core(py, d))
    }

    /// When the token-producer tokenizes through the model server's render API: that call for
    /// this request, made now with the GIL released, for `route(..., tokens=)` — the ext_proc
    /// server's order, so the round trip is never part of a routing cycle. None when the
    /// tokenizer is in-process or no precise index is configured (the cycle keys the request).
    fn tokenize(&self, py: Python<'_>, path: &str, body: &Bound<'_, PyBytes>) -> Option<PyTokens> {
        let source = self.inner.remote_tokens()?;
        let body = body.as_bytes();
        let inner = py.detach(|| source.tokens(path, body));
        Some(PyTokens { inner })
    }

    /// What `route` would decide and why, changing nothing: (decision, [(profile, candidates,
    /// [(scorer, weight, raw scores)], totals, picked)]).
    #[pyo3(signature = (path, body, model_rewrite = None, subset = None, *, headers = None))]
    fn explain(
        &self,
        py: Python<'_>,
        path: &str,
        body: &Bound<'_, PyBytes>,
        model_rewrite: Option<&str>,
        subset: Option<Vec<String>>,
        headers: Option<BTreeMap<String, String>>,
    ) -> PyResult<(PyDecision, Vec<Explained>)> {
        let request = (path, body.as_bytes(), model_rewrite, subset, headers);
        let (d, explained) = detached(py, request, None, |p, b, o| self.inner.explain(p, b, o))?;
        let explained = explained
            .into_iter()
            .map(|e| (e.profile, e.candidates, e.scores, e.totals, e.picked))
            .collect();
        Ok((PyDecision::from_core(py, d), explained))
    }

    /// Apply one KV-event batch (msgpack `KVEventBatch`, the last ZMQ frame) published by the
    /// endpoint at `address` for `model` (from the topic; "" when unknown); False when no
    /// endpoint has that address. ValueError names what is wrong with a bad payload, or that no
    /// precise-prefix-cache-producer is configured.
    #[pyo3(signature = (address, payload, seq = None, model = ""))]
    fn apply_kv_events(
        &self,
        py: Python<'_>,
        address: &str,
        payload: &Bound<'_, PyBytes>,
        seq: Option<u64>,
        model: &str,
    ) -> PyResult<bool> {
        let payload = payload.as_bytes();
        py.detach(|| self.inner.apply_kv_events(address, model, payload, seq))
            .map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// Totals of the precise KV-block index; None when no producer is configured.
    fn kv_event_stats(&self) -> Option<BTreeMap<&'static str, u64>> {
        self.inner.kv_event_stats().map(crate::kvblock::stats_map)
    }

    /// Events the precise index left out: (removal, cache kind, reason, count) each.
    fn kv_event_skips(&self) -> Vec<(bool, String, &'static str, u64)> {
        self.inner.block_index().map_or_else(Vec::new, |i| {
            i.skips()
                .into_iter()
                .map(|((removal, kind, reason), n)| (removal, kind, reason, n))
                .collect()
        })
    }

    /// The precise index's lookups by latency: (bucket upper bounds in seconds, counts per
    /// bucket with one more for above them all, not cumulative, sum of seconds); None without
    /// one.
    fn kv_lookup_latency(&self) -> Option<crate::stats::PyHistogram> {
        self.inner
            .block_index()
            .map(|i| crate::stats::hist(i.lookup_latency()))
    }

    /// The request metrics shared by every request path of this Router.
    /// Replace every objective at once: name → priority (absent or unknown → 0).
    fn set_objectives(&self, priorities: BTreeMap<String, i32>) {
        self.inner.set_objectives(Objectives::new(priorities));
    }

    /// Priority of an objective as requests are admitted with it now.
    fn priority_of(&self, objective: &str) -> i32 {
        self.inner.policies().objectives.priority_of(objective)
    }

    /// Replace the whole InferenceModelRewrite table at once (JSON: `exact` model → rule,
    /// `matchAll` rule; a rule is `{"source", "targets": [{"model", "weight"}]}`).
    fn set_rewrites(&self, table_json: &str) -> PyResult<()> {
        let table = RewriteTable::from_json(table_json).map_err(|e| config_error(e.to_string()))?;
        self.inner.set_rewrites(table);
        Ok(())
    }

    /// The model a request naming `model` is sent upstream as, when a rule applies (a weighted
    /// draw when the rule has several targets).
    #[pyo3(signature = (model))]
    fn rewrite_of(&self, model: Option<&str>) -> Option<String> {
        self.inner
            .policies()
            .rewrites
            .rewrite(model)
            .map(str::to_owned)
    }

    fn request_stats(&self) -> crate::stats::PyRequestStats {
        crate::stats::PyRequestStats {
            inner: self.inner.stats().clone(),
        }
    }

    #[pyo3(signature = (address, held_tokens = 0))]
    fn release(&self, address: &str, held_tokens: u64) {
        self.inner.release_held(address, 1, held_tokens);
    }

    fn status(&self) -> Vec<PyEndpointStatus> {
        self.inner
            .status()
            .into_iter()
            .map(|s| PyEndpointStatus {
                name: s.name,
                address: s.address,
                waiting: s.waiting,
                running: s.running,
                kv_usage: s.kv_usage,
                in_flight: s.in_flight,
                in_flight_tokens: s.in_flight_tokens,
                models: s.models,
                age_ms: s.age_ms.map_or(-1, |a| a.min(i64::MAX as u64) as i64),
                stale: s.stale,
                scrape_errors: s.scrape_errors,
                scrape_error: s.scrape_error,
                source_errors: s
                    .source_errors
                    .into_iter()
                    .map(|e| {
                        (
                            e.source.source_type(),
                            e.source.extractor_type(),
                            e.poll_errors,
                            e.extract_errors,
                            e.last_error.as_deref().map(str::to_owned),
                        )
                    })
                    .collect(),
            })
            .collect()
    }
}

type Explained = (
    String,
    Vec<String>,
    Vec<(String, f64, Vec<f64>)>,
    Vec<f64>,
    Vec<String>,
);

/// A route's arguments as Python passes them: path, body, model rewrite, subset, headers.
type RouteArgs<'a> = (
    &'a str,
    &'a [u8],
    Option<&'a str>,
    Option<Vec<String>>,
    Option<BTreeMap<String, String>>,
);

/// Run `f` on the request with the GIL released; header names are lower-cased first.
fn detached<T: Send>(
    py: Python<'_>,
    (path, body, model_rewrite, subset, headers): RouteArgs<'_>,
    tokens: Option<&PreTokenized>,
    f: impl FnOnce(&str, &[u8], &RouteOptions<'_>) -> Result<T, RouteError> + Send,
) -> PyResult<T> {
    let headers: Vec<(String, String)> = headers
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let options = RouteOptions {
        model_rewrite,
        subset: subset.as_deref(),
        headers: &headers,
        priority: 0,
        tokens,
        burst: None,
    };
    py.detach(|| f(path, body, &options)).map_err(route_error)
}

/// The block hashes an engine publishes for this request under sluicegate's scheme (see
/// `precise-prefix-cache-producer`); the simulator keys its KV cache by them.
#[pyfunction]
fn request_block_hashes(
    py: Python<'_>,
    path: &str,
    body: &Bound<'_, PyBytes>,
    block_tokens: usize,
) -> PyResult<Vec<u64>> {
    if block_tokens == 0 {
        return Err(PyValueError::new_err(
            "block_tokens must be positive, got 0",
        ));
    }
    let body = body.as_bytes();
    py.detach(|| scheduling::request_block_hashes(path, body, block_tokens))
        .map_err(crate::errors::parse_error)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(request_block_hashes, m)?)?;
    m.add_class::<PyEndpointMetrics>()?;
    m.add_class::<PyDecision>()?;
    m.add_class::<PyEndpointStatus>()?;
    m.add_class::<PyRouter>()?;
    m.add_class::<PyTokens>()?;
    m.add_function(wrap_pyfunction!(parse_metrics, m)?)?;
    Ok(())
}
