//! Bindings for the flow controller. Outcomes wait in a batch and a byte on a pipe tells the
//! asyncio loop to take them all in one call (no per-request callback into Python).

use std::io::{PipeReader, PipeWriter, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use std::collections::BTreeMap;

use pyo3::types::{PyBytes, PyDict};
use sluicegate_core::flowcontrol::{
    no_candidates, route_when_possible, Admission, Completion, CompletionSink, Dispatch,
    Dispatcher, FlowControlConfig, FlowController, FlowStats, Hold, Item, Outcome, QueueDurations,
    QueueLabels, QueueOutcome, Rejection, RouteRequest, SaturationDetector, ScaleFromZero,
};
use sluicegate_core::parse::model_of;
use sluicegate_core::scheduling::{Decision, RouteError};
use std::sync::Mutex;

use sluicegate_extproc::admission::rejection_message;

use crate::errors::{config_error, NoEndpointsError, SaturatedError};
use crate::router::{PyDecision, PyRouter};

pyo3::import_exception!(sluicegate.errors, ShuttingDownError);

type Routed = Option<Result<Decision, RouteError>>;

/// Schedules through the Router when there is one and the request carries a body to route;
/// otherwise dispatch only admits.
struct Target {
    router: Option<Py<PyRouter>>,
}

/// A queued request: what to route (if anything), and whether it waits its own grace period.
struct Queued {
    route: Option<RouteRequest>,
    held: bool,
}

impl Target {
    fn no_candidates_for(&self, route: Option<&RouteRequest>) -> bool {
        self.router.as_ref().is_some_and(|r| {
            let snapshot = r.get().inner.store().snapshot();
            no_candidates(&snapshot, route.and_then(|r| r.subset.as_deref()))
        })
    }
}

impl Dispatcher for Target {
    type Request = Queued;
    type Output = Routed;

    fn no_candidates(&self, q: &Queued) -> bool {
        self.no_candidates_for(q.route.as_ref())
    }

    fn no_endpoint_ttl_applies(&self, q: &Queued) -> bool {
        !q.held
    }

    fn dispatch(&self, q: &Queued) -> Dispatch<Routed> {
        match (&self.router, &q.route) {
            (Some(router), Some(r)) => match route_when_possible(&router.get().inner, r) {
                Dispatch::Done(d) => Dispatch::Done(Some(d)),
                Dispatch::NoCandidates => Dispatch::NoCandidates,
            },
            _ => Dispatch::Done(None),
        }
    }

    fn pool_empty(&self) -> bool {
        self.router
            .as_ref()
            .is_some_and(|r| r.get().inner.store().snapshot().endpoints.is_empty())
    }
}

struct PipeSink {
    pending: Mutex<Vec<Completion<Routed>>>,
    wake: PipeWriter,
}

impl CompletionSink<Routed> for PipeSink {
    fn deliver(&self, batch: &mut Vec<Completion<Routed>>) {
        let was_empty = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let was_empty = p.is_empty();
            p.append(batch);
            was_empty
        };
        // One byte per batch the loop has not yet taken: the pipe never fills.
        if was_empty {
            let _ = (&self.wake).write(&[1]);
        }
    }
}

type Core = FlowController<Target, PipeSink>;

/// The outcome of one queued request.
#[pyclass(name = "Completion", module = "sluicegate._core", frozen, get_all)]
pub struct PyCompletion {
    id: u64,
    /// 200 when dispatched, else the HTTP status of the rejection.
    status: u16,
    /// `x-llm-d-request-dropped-reason` value; "" when dispatched or for a bad request.
    reason: &'static str,
    message: String,
    waited_s: f64,
    /// Where the request goes, when it was routed (enqueued with a path and a Router).
    decision: Option<Py<PyDecision>>,
}

#[pymethods]
impl PyCompletion {
    fn __repr__(&self) -> String {
        format!(
            "Completion(id={}, status={}, reason={:?}, routed={})",
            self.id,
            self.status,
            self.reason,
            self.decision.is_some()
        )
    }
}

fn completion(py: Python<'_>, c: Completion<Routed>) -> PyResult<PyCompletion> {
    let mut out = PyCompletion {
        id: c.id,
        status: 200,
        reason: "",
        message: String::new(),
        waited_s: c.waited.as_secs_f64(),
        decision: None,
    };
    match c.outcome {
        Outcome::Dispatched(None) => {}
        Outcome::Dispatched(Some(Ok(d))) => {
            out.decision = Some(Py::new(py, PyDecision::from_core(py, d))?);
        }
        Outcome::Dispatched(Some(Err(e))) => {
            let no_endpoints = matches!(e, RouteError::NoEndpoints(_));
            out.status = if no_endpoints { 503 } else { 400 };
            out.reason = if no_endpoints {
                Rejection::NoEndpoints.reason()
            } else {
                ""
            };
            out.message = e.to_string();
        }
        Outcome::Rejected(r) => {
            out.status = r.status();
            out.reason = r.reason();
            out.message = rejection_message(r).to_owned();
        }
    }
    Ok(out)
}

fn rejection_error(r: Rejection) -> PyErr {
    match r {
        Rejection::NoEndpoints => NoEndpointsError::new_err(rejection_message(r)),
        Rejection::ShuttingDown => ShuttingDownError::new_err(rejection_message(r)),
        _ => SaturatedError::new_err(rejection_message(r)),
    }
}

/// A request waiting in the queue; `cancel` removes it if it has not been dispatched.
#[pyclass(name = "QueuedRequest", module = "sluicegate._core", frozen)]
pub struct PyQueued {
    item: Arc<Item<Queued>>,
    /// Held for the scale-from-zero grace period; released when this object goes.
    hold: Mutex<Option<Hold>>,
}

#[pymethods]
impl PyQueued {
    #[getter]
    fn id(&self) -> u64 {
        self.item.id
    }

    /// True when it waits for the scale-from-zero grace period.
    #[getter]
    fn held(&self) -> bool {
        self.item.request.held
    }

    /// It failed at the end of its grace period: count it, and give the message to fail with.
    fn expired(&self) -> Option<String> {
        let hold = self.hold.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        let message = hold.message.to_string();
        hold.expired();
        Some(message)
    }

    fn cancel(&self) -> bool {
        self.item.cancel()
    }
}

#[pyclass(name = "FlowController", module = "sluicegate._core", frozen)]
pub struct PyFlowController {
    core: Core,
    wake_reader: PipeReader,
    scale_from_zero: ScaleFromZero,
    hold_signal: HoldSignal,
    queue_durations: QueueDurations,
}

/// The activator's event: a byte on a pipe when a request is held while none was; at most one
/// byte is outstanding until Python takes it (`take_hold_signal`), so the pipe never fills.
pub struct HoldSignal {
    reader: PipeReader,
    pending: Arc<std::sync::atomic::AtomicBool>,
}

impl HoldSignal {
    /// The signal and the ScaleFromZero that raises it.
    pub fn new() -> std::io::Result<(HoldSignal, ScaleFromZero)> {
        use std::sync::atomic::Ordering;
        let (reader, writer) = std::io::pipe()?;
        let pending = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = pending.clone();
        let sfz = ScaleFromZero::with_signal(Box::new(move || {
            if !flag.swap(true, Ordering::AcqRel) {
                let _ = (&writer).write(&[1]);
            }
        }));
        Ok((HoldSignal { reader, pending }, sfz))
    }

    pub fn fd(&self) -> i32 {
        self.reader.as_raw_fd()
    }

    /// Re-arm the signal; the caller then drains the pipe and looks at the counters.
    pub fn take(&self) {
        self.pending
            .store(false, std::sync::atomic::Ordering::Release);
    }
}

#[pymethods]
impl PyFlowController {
    #[new]
    #[pyo3(signature = (config_json = "{}", router = None))]
    fn new(config_json: &str, router: Option<Py<PyRouter>>) -> PyResult<Self> {
        let config =
            FlowControlConfig::from_json(config_json).map_err(|e| config_error(e.to_string()))?;
        let store = router.as_ref().map(|r| r.get().inner.store().clone());
        let detector = SaturationDetector::from_config(&config.saturation_detector, store)
            .map_err(config_error)?;
        let (wake_reader, wake) = std::io::pipe()?;
        let sink = PipeSink {
            pending: Mutex::new(Vec::new()),
            wake,
        };
        let core = FlowController::start(config, detector, Target { router }, sink)?;
        let (hold_signal, scale_from_zero) = HoldSignal::new()?;
        Ok(PyFlowController {
            core,
            wake_reader,
            scale_from_zero,
            hold_signal,
            queue_durations: QueueDurations::new(MAX_QUEUE_SERIES),
        })
    }

    /// Read end of the wake pipe: readable when completions wait in `take_completions`.
    fn wake_fd(&self) -> i32 {
        self.wake_reader.as_raw_fd()
    }

    /// Queue a request (a QueuedRequest), or with `dispatch_now` first try to dispatch it in this
    /// thread when nothing waits and there is room (a Completion, waited_s 0).
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (flow, priority = 0, size = 0, ttl = None, slo_ttft = None, *,
                        path = None, body = None, model_rewrite = None, subset = None,
                        headers = None, dispatch_now = false))]
    fn enqueue(
        &self,
        py: Python<'_>,
        flow: &str,
        priority: i32,
        size: u64,
        ttl: Option<f64>,
        slo_ttft: Option<f64>,
        path: Option<String>,
        body: Option<&Bound<'_, PyBytes>>,
        model_rewrite: Option<String>,
        subset: Option<Vec<String>>,
        headers: Option<BTreeMap<String, String>>,
        dispatch_now: bool,
    ) -> PyResult<Py<PyAny>> {
        let mut admission = Admission {
            flow,
            priority,
            size,
            ttl: seconds("ttl", ttl)?,
            slo_ttft: seconds("slo_ttft", slo_ttft)?,
            ..Default::default()
        };
        let request = path.map(|path| RouteRequest {
            path,
            body: body.map(|b| b.as_bytes().to_vec()).unwrap_or_default(),
            model_rewrite,
            subset,
            headers: headers
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
            priority,
            tokens: None,
            burst: None,
        });
        let mut queued = Queued {
            route: request,
            held: false,
        };
        if dispatch_now {
            let now = match &queued.route {
                // Routing parses the body: without the GIL.
                Some(_) => py.detach(|| self.core.dispatch_now(&admission, &queued)),
                None => self.core.dispatch_now(&admission, &queued),
            };
            if let Some(outcome) = now {
                let c = Completion {
                    id: self.core.next_id(),
                    outcome: Outcome::Dispatched(outcome),
                    waited: Duration::ZERO,
                };
                return Ok(Py::new(py, self.completed(py, c)?)?.into_any());
            }
        }
        // Queued: its flow's gauges are labelled with the model the body names.
        let model = (queued.route.as_ref())
            .and_then(|r| model_of(&r.body))
            .unwrap_or_default();
        admission.model = &model;
        admission.target_model = &model;
        let hold = if self
            .core
            .dispatcher()
            .no_candidates_for(queued.route.as_ref())
        {
            self.scale_from_zero.hold()
        } else {
            None
        };
        if let Some(h) = &hold {
            admission.ttl = Some(h.period);
            queued.held = true;
        }
        // Short and bounded (one shard lock): not worth releasing the GIL for.
        let item = self
            .core
            .enqueue(&admission, queued)
            .map_err(rejection_error)?;
        let hold = Mutex::new(hold);
        Ok(Py::new(py, PyQueued { item, hold })?.into_any())
    }

    /// The pool's scale-from-zero grace period in seconds (None: not managed) and the message
    /// requests held for it fail with when it ends.
    #[pyo3(signature = (grace_s, message = String::new()))]
    fn set_scale_from_zero(&self, grace_s: Option<f64>, message: String) -> PyResult<()> {
        let grace = seconds("grace_s", grace_s)?;
        self.scale_from_zero
            .set(grace.map(|period| (period, message)));
        Ok(())
    }

    /// (requests held for the grace period now, held in total, failed at its end in total).
    fn hold_counts(&self) -> (u64, u64, u64) {
        self.scale_from_zero.counts()
    }

    /// Readable when a request was held while none was (the activator's scale-up event).
    fn hold_fd(&self) -> i32 {
        self.hold_signal.fd()
    }

    /// Re-arm the hold event; then drain `hold_fd` and read `hold_counts`.
    fn take_hold_signal(&self) {
        self.hold_signal.take();
    }

    /// Every outcome delivered since the last call, oldest first.
    fn take_completions(&self, py: Python<'_>) -> PyResult<Vec<PyCompletion>> {
        let batch = std::mem::take(
            &mut *self
                .core
                .sink()
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        batch.into_iter().map(|c| self.completed(py, c)).collect()
    }

    /// A dispatched request finished (or was never used): free its place.
    fn release(&self) {
        self.core.release();
    }

    /// Endpoints or metrics changed: let the dispatcher look again now.
    fn notify(&self) {
        self.core.notify();
    }

    fn saturation(&self) -> f64 {
        self.core.saturation()
    }

    /// One request left the controller (the façade calls this once per outcome): `outcome` is
    /// upstream's QueueOutcome name (Dispatched, RejectedCapacity, EvictedTTL, ...).
    #[pyo3(signature = (flow, priority, outcome, seconds, model = "", target_model = ""))]
    fn record_outcome(
        &self,
        flow: &str,
        priority: i32,
        outcome: &str,
        seconds: f64,
        model: &str,
        target_model: &str,
    ) -> PyResult<()> {
        let outcome = QueueOutcome::from_name(outcome).ok_or_else(|| {
            pyo3::exceptions::PyValueError::new_err(format!(
                "outcome: {outcome:?} is not an upstream QueueOutcome name"
            ))
        })?;
        let labels = QueueLabels {
            fairness_id: flow,
            priority,
            model,
            target_model,
        };
        self.queue_durations.observe(labels, outcome, seconds);
        Ok(())
    }

    /// As FlowGate.queue_durations: one histogram per label set and outcome.
    fn queue_durations(&self) -> Vec<crate::extproc::QueueDurationRow> {
        crate::extproc::queue_rows(&self.queue_durations)
    }

    /// (per-flow queue gauges, enqueue durations, dispatch-cycle durations).
    fn flow_metrics(&self) -> crate::extproc::FlowMetricRows {
        crate::extproc::flow_metric_rows(self.core.metrics())
    }

    /// As FlowGate.queue_totals.
    fn queue_totals(&self) -> Vec<(i32, &'static str, u64)> {
        self.queue_durations.totals()
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        stats_dict(py, &self.core.stats())
    }

    /// Evict every queued request (503 rejected-shutting-down) and stop the dispatch thread.
    fn shutdown(&self, py: Python<'_>) {
        py.detach(|| self.core.shutdown());
    }
}

impl PyFlowController {
    /// The Python outcome; a request the scheduler refused never went anywhere, so its place
    /// is freed here (nothing will release it later).
    fn completed(&self, py: Python<'_>, c: Completion<Routed>) -> PyResult<PyCompletion> {
        if matches!(c.outcome, Outcome::Dispatched(Some(Err(_)))) {
            self.core.release();
        }
        completion(py, c)
    }
}

/// The controller's counters as the metrics exporters read them.
pub fn stats_dict<'py>(py: Python<'py>, s: &FlowStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("queued_requests", s.queued_requests)?;
    d.set_item("queued_bytes", s.queued_bytes)?;
    d.set_item("bands", s.bands.clone())?;
    d.set_item("band_limits", s.band_limits.clone())?;
    d.set_item("max_requests", s.max_requests)?;
    d.set_item("max_bytes", s.max_bytes)?;
    d.set_item("enqueued", s.enqueued)?;
    d.set_item("dispatched", s.dispatched)?;
    d.set_item("rejected_capacity", s.rejected_capacity)?;
    d.set_item("expired_ttl", s.expired_ttl)?;
    d.set_item("expired_no_endpoints", s.expired_no_endpoints)?;
    d.set_item("cancelled", s.cancelled)?;
    d.set_item("evicted", s.evicted)?;
    d.set_item("in_flight", s.in_flight)?;
    d.set_item("saturation", s.saturation)?;
    d.set_item("dispatch_cycles", s.dispatch_cycles)?;
    d.set_item("dispatch_cycle_seconds", s.dispatch_cycle_seconds)?;
    d.set_item("queue_wait_seconds", s.queue_wait_seconds)?;
    if let Some(e) = &s.eviction {
        let ev = PyDict::new(py);
        ev.set_item("issued", e.issued.clone())?;
        ev.set_item("confirmed", e.confirmed)?;
        ev.set_item("timed_out", e.timed_out)?;
        ev.set_item("reclaim_target", e.reclaim_target)?;
        ev.set_item("pending_reclaim", e.pending_reclaim)?;
        let h = &e.confirmation;
        ev.set_item("confirmation", (h.bounds.to_vec(), h.counts.clone(), h.sum))?;
        ev.set_item("tracked", e.tracked)?;
        ev.set_item("evictable", e.evictable)?;
        d.set_item("eviction", ev)?;
    }
    Ok(d)
}

fn seconds(field: &str, value: Option<f64>) -> PyResult<Option<Duration>> {
    match value {
        None => Ok(None),
        Some(v) if v.is_finite() && v > 0.0 => Ok(Some(Duration::from_secs_f64(v))),
        Some(v) => Err(pyo3::exceptions::PyValueError::new_err(format!(
            "{field}: {v} is not a positive number of seconds"
        ))),
    }
}

/// Label sets of the queue-duration histogram before the rest fold into model `__other__`.
const MAX_QUEUE_SERIES: usize = 2000;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyFlowController>()?;
    m.add_class::<PyQueued>()?;
    m.add_class::<PyCompletion>()?;
    Ok(())
}
