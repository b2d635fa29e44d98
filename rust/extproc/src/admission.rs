//! Flow control inside the ext_proc server: a request's objective picks its priority band, its
//! fairness id its flow; it is dispatched at once when nothing waits and the pool has room,
//! else queued, and its stream awaits the outcome on a oneshot the dispatch thread completes
//! (no Python, no asyncio loop). Every queued request gets exactly one outcome: dispatched,
//! rejected, or cancelled by its stream going away; a place whose stream left is freed here.
//! With the flowControl gate off the same objectives drive upstream's legacy admission
//! (sheddable requests, priority < 0, get 429 while the pool is saturated).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use sluicegate_core::flowcontrol::{
    no_candidates, route_view_when_possible, route_when_possible, Admission, Completion,
    CompletionSink, Dispatch, Dispatcher, FlowControlConfig, FlowController, FlowMetrics,
    FlowStats, Hold, Item, Outcome, QueueDurations, QueueLabels, QueueOutcome, Rejection,
    RouteRequest, RouteView, SaturationDetector, ScaleFromZero,
};
use sluicegate_core::parse::model_of;
use sluicegate_core::scheduling::{Decision, RouteError};
use tokio::sync::oneshot;

use crate::SharedRouter;

pub type Routed = Result<Decision, RouteError>;

/// A queued request: what to route, and whether it carries its own wait for endpoints.
pub struct Queued {
    route: RouteRequest,
    held: bool,
}

pub struct RouterDispatch {
    router: SharedRouter,
}

impl Dispatcher for RouterDispatch {
    type Request = Queued;
    type Output = Routed;
    fn dispatch(&self, q: &Queued) -> Dispatch<Routed> {
        route_when_possible(self.router.router(), &q.route)
    }
    fn pool_empty(&self) -> bool {
        self.router.router().store().snapshot().endpoints.is_empty()
    }
    fn no_candidates(&self, q: &Queued) -> bool {
        no_candidates(
            &self.router.router().store().snapshot(),
            q.route.subset.as_deref(),
        )
    }
    fn no_endpoint_ttl_applies(&self, q: &Queued) -> bool {
        !q.held
    }
}

/// Where a queued request's outcome goes: its stream's oneshot, or (stream gone) back to the
/// gate, which frees the place.
enum Slot {
    Waiting(oneshot::Sender<Completion<Routed>>),
    /// Delivered before the stream registered (the dispatcher can be that quick).
    Arrived(Box<Completion<Routed>>),
    /// The stream left while its request was being dispatched: the outcome it gets is recorded
    /// (and its place freed) when it comes, so every count agrees on one outcome.
    Abandoned(Arc<Item<Queued>>),
}

pub struct Waiters {
    slots: Mutex<HashMap<u64, Slot>>,
    gate: OnceLock<Weak<Gate>>,
}

impl Waiters {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl CompletionSink<Routed> for Waiters {
    fn deliver(&self, batch: &mut Vec<Completion<Routed>>) {
        let mut orphans = Vec::new();
        {
            let mut slots = self.slots();
            for c in batch.drain(..) {
                match slots.remove(&c.id) {
                    Some(Slot::Waiting(tx)) => {
                        if let Err(c) = tx.send(c) {
                            orphans.push((c, None));
                        }
                    }
                    Some(Slot::Abandoned(item)) => orphans.push((c, Some(item))),
                    Some(Slot::Arrived(_)) => orphans.push((c, None)),
                    None => {
                        slots.insert(c.id, Slot::Arrived(Box::new(c)));
                    }
                }
            }
        }
        if let Some(gate) = self.gate.get().and_then(Weak::upgrade) {
            for (c, item) in orphans {
                if let Some(item) = item {
                    gate.record(&item, &c);
                }
                gate.discard(c);
            }
        }
    }
}

type Controller = FlowController<RouterDispatch, Waiters>;

pub struct Gate {
    controller: Controller,
    /// False: the flowControl gate is off; only legacy shedding applies.
    queueing: bool,
    router: SharedRouter,
    pub scale_from_zero: ScaleFromZero,
    /// Time in flow control by outcome, one observation per queued-or-dispatched request.
    pub queue_durations: QueueDurations,
}

/// How a request was admitted.
pub enum Admitted {
    /// Dispatched in the caller's thread: routed (a flow-control place is held when Ok).
    Now(Routed),
    Waiting(Waiting),
    Refused(Refusal),
    /// Gate off and not shed: route directly.
    Direct,
}

/// Why flow control refused a request: the rejection and its message.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub rejection: Rejection,
    pub message: String,
}

impl Refusal {
    fn of(rejection: Rejection) -> Refusal {
        Refusal {
            rejection,
            message: rejection_message(rejection).to_owned(),
        }
    }
}

pub fn rejection_message(r: Rejection) -> &'static str {
    match r {
        Rejection::Capacity => "flow control queue is full",
        Rejection::TtlExpired => "request waited in the flow control queue past its TTL",
        Rejection::NoEndpoints => "no endpoints in the pool to serve the request",
        Rejection::ShuttingDown => "the endpoint picker is shutting down",
    }
}

/// A body the Router could not parse: upstream parses before flow control, so such a request
/// never counts as having been in it.
fn unparsable(routed: &Routed) -> bool {
    matches!(routed, Err(RouteError::BadRequest(_)))
}

/// Label sets of the queue-duration histogram before the rest fold into model `__other__`.
const MAX_QUEUE_SERIES: usize = 2000;

/// A dispatched request as in-flight eviction tracks it (`enableEviction`): its token, and
/// the signal that it was chosen as a victim.
pub struct Tracked {
    token: u64,
    revoked: Option<oneshot::Receiver<()>>,
}

impl Tracked {
    /// Ready (true) once the request is revoked; a tracker gone without revoking never is.
    pub fn poll_revoked(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let Some(rx) = self.revoked.as_mut() else {
            return Poll::Pending;
        };
        match Pin::new(rx).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                self.revoked = None;
                Poll::Ready(r.is_ok())
            }
        }
    }
}

/// What a request asks of admission beyond what it routes with.
pub struct Ask<'a> {
    pub priority: i32,
    pub flow: &'a str,
    pub size: u64,
    pub slo_ttft: Option<Duration>,
}

impl Gate {
    /// `config` is flow control's (JSON as the core takes it); `queueing` false = gate off;
    /// `scale_from_zero` holds requests while an activator manages the pool.
    pub fn start(
        router: SharedRouter,
        config: FlowControlConfig,
        queueing: bool,
        scale_from_zero: ScaleFromZero,
    ) -> std::io::Result<Arc<Gate>> {
        let store = router.router().store().clone();
        let detector = SaturationDetector::from_config(&config.saturation_detector, Some(store))
            .map_err(std::io::Error::other)?;
        let waiters = Waiters {
            slots: Mutex::new(HashMap::new()),
            gate: OnceLock::new(),
        };
        let dispatch = RouterDispatch {
            router: router.clone(),
        };
        let controller = FlowController::start(config, detector, dispatch, waiters)?;
        let gate = Arc::new(Gate {
            controller,
            queueing,
            router,
            scale_from_zero,
            queue_durations: QueueDurations::new(MAX_QUEUE_SERIES),
        });
        let _ = gate.controller.sink().gate.set(Arc::downgrade(&gate));
        Ok(gate)
    }

    pub fn queueing(&self) -> bool {
        self.queueing
    }

    /// Admit one request whose body is complete. It is routed from `route` as the stream holds
    /// it when it may go at once; only a request that must queue is copied.
    pub fn admit(self: &Arc<Self>, ask: &Ask<'_>, route: RouteView<'_>) -> Admitted {
        if !self.queueing {
            if ask.priority < 0 && self.controller.saturation() >= 1.0 {
                return Admitted::Refused(Refusal {
                    rejection: Rejection::Capacity,
                    message: "the pool is saturated: sheddable request shed".to_owned(),
                });
            }
            return Admitted::Direct;
        }
        let mut admission = Admission {
            flow: ask.flow,
            priority: ask.priority,
            size: ask.size,
            ttl: None,
            slo_ttft: ask.slo_ttft,
            ..Default::default()
        };
        let router = self.router.router();
        let now = self
            .controller
            .dispatch_now_with(&admission, || route_view_when_possible(router, route));
        if let Some(now) = now {
            if now.is_err() {
                self.controller.release(); // refused by the scheduler: it never went anywhere
            }
            if !unparsable(&now) {
                self.left(
                    ask.flow,
                    ask.priority,
                    QueueOutcome::Dispatched,
                    now.as_ref().ok(),
                    0.0,
                );
            }
            return Admitted::Now(now);
        }
        let mut queued = Queued {
            route: route.to_request(),
            held: false,
        };
        let snapshot = router.store().snapshot();
        let hold = if no_candidates(&snapshot, route.subset) {
            self.scale_from_zero.hold()
        } else {
            None
        };
        if let Some(h) = &hold {
            admission.ttl = Some(h.period);
            queued.held = true;
        }
        // Queued: its flow's gauges are labelled with the model it names (parsed at dispatch).
        let model = model_of(&queued.route.body).unwrap_or_default();
        let target_model = queued.route.model_rewrite.clone();
        admission.model = &model;
        admission.target_model = target_model.as_deref().unwrap_or(&model);
        let item = match self.controller.enqueue(&admission, queued) {
            Ok(item) => item,
            Err(r) => {
                self.left(ask.flow, ask.priority, r.into(), None, 0.0);
                return Admitted::Refused(Refusal::of(r));
            }
        };
        let (tx, rx) = oneshot::channel();
        {
            let mut slots = self.controller.sink().slots();
            match slots.remove(&item.id) {
                Some(Slot::Arrived(c)) => {
                    let _ = tx.send(*c);
                }
                _ => {
                    slots.insert(item.id, Slot::Waiting(tx));
                }
            }
        }
        Admitted::Waiting(Waiting {
            gate: self.clone(),
            item,
            rx,
            hold,
            done: false,
        })
    }

    /// Record how a request left flow control (labelled with its model once it was routed).
    fn left(
        &self,
        flow: &str,
        priority: i32,
        outcome: QueueOutcome,
        decision: Option<&Decision>,
        seconds: f64,
    ) {
        let model = decision.and_then(|d| d.model.as_deref()).unwrap_or("");
        let target_model = decision
            .and_then(|d| d.target_model.as_deref())
            .unwrap_or(model);
        let labels = QueueLabels {
            fairness_id: flow,
            priority,
            model,
            target_model,
        };
        self.queue_durations.observe(labels, outcome, seconds);
    }

    /// The one queue-duration observation of a queued request, from the outcome it was given.
    fn record(&self, item: &Item<Queued>, c: &Completion<Routed>) {
        let (outcome, decision) = match &c.outcome {
            Outcome::Dispatched(routed) if unparsable(routed) => return,
            Outcome::Dispatched(routed) => (QueueOutcome::Dispatched, routed.as_ref().ok()),
            Outcome::Rejected(r) => ((*r).into(), None),
        };
        let waited = c.waited.as_secs_f64();
        self.left(item.flow(), item.priority, outcome, decision, waited);
    }

    /// Per-flow queue gauges, enqueue and dispatch-cycle durations.
    pub fn flow_metrics(&self) -> &FlowMetrics {
        self.controller.metrics()
    }

    /// A dispatched request finished: its place is free.
    pub fn release(&self) {
        self.controller.release();
    }

    /// A request holding a place is running: with eviction on, it is tracked (a victim if
    /// sheddable) until `untrack`.
    pub fn track(&self, priority: i32) -> Option<Tracked> {
        let eviction = self.controller.eviction()?;
        let (tx, rx) = oneshot::channel();
        let token = eviction.track(
            priority,
            Box::new(move || {
                let _ = tx.send(());
            }),
        );
        Some(Tracked {
            token,
            revoked: Some(rx),
        })
    }

    /// The tracked request ended (its revocation, if any, is confirmed).
    pub fn untrack(&self, tracked: Tracked) {
        if let Some(eviction) = self.controller.eviction() {
            eviction.untrack(tracked.token, std::time::Instant::now());
        }
    }

    /// A routed request of `flow` ended with this usage (program-aware fairness's service).
    pub fn completed(&self, flow: &str, prompt_tokens: u64, completion_tokens: u64) {
        self.controller
            .completed(flow, prompt_tokens, completion_tokens);
    }

    /// An outcome nobody waits for any more: free what it holds.
    fn discard(&self, c: Completion<Routed>) {
        match c.outcome {
            Outcome::Dispatched(Ok(mut d)) => {
                self.router.router().finish(&mut d);
                self.controller.release();
            }
            Outcome::Dispatched(Err(_)) => self.controller.release(),
            Outcome::Rejected(_) => {}
        }
    }

    /// Endpoints or metrics changed: requests waiting for them may go now.
    pub fn notify(&self) {
        self.controller.notify();
    }

    pub fn saturation(&self) -> f64 {
        self.controller.saturation()
    }

    pub fn stats(&self) -> FlowStats {
        self.controller.stats()
    }

    /// Answer everything queued 503 rejected-shutting-down and stop the dispatch thread.
    pub fn shutdown(&self) {
        self.controller.shutdown();
    }
}

/// A queued request's stream side; dropping it (stream reset) cancels the request or, when
/// its outcome is already on the way, hands the place back.
pub struct Waiting {
    gate: Arc<Gate>,
    item: Arc<Item<Queued>>,
    rx: oneshot::Receiver<Completion<Routed>>,
    hold: Option<Hold>,
    done: bool,
}

/// What the stream does with a queued request's outcome. Returned by value once per queued
/// request and consumed at once: boxing the decision would add an allocation per request.
#[allow(clippy::large_enum_variant)]
pub enum Decided {
    /// Routed; the request holds a flow-control place until it ends.
    Routed(Decision),
    Failed(RouteError),
    Refused(Refusal),
}

impl Waiting {
    /// The request body it was queued with.
    pub fn body(&self) -> &[u8] {
        &self.item.request.route.body
    }

    fn decided(&mut self, c: Completion<Routed>) -> Decided {
        self.done = true;
        self.record(&c);
        let hold = self.hold.take();
        match c.outcome {
            Outcome::Dispatched(Ok(d)) => Decided::Routed(d),
            Outcome::Dispatched(Err(e)) => {
                self.gate.release();
                Decided::Failed(e)
            }
            Outcome::Rejected(Rejection::NoEndpoints) if hold.is_some() => {
                let hold = hold.expect("checked");
                let message = hold.message.to_string();
                hold.expired();
                Decided::Refused(Refusal {
                    rejection: Rejection::NoEndpoints,
                    message,
                })
            }
            Outcome::Rejected(r) => Decided::Refused(Refusal::of(r)),
        }
    }
}

impl Waiting {
    fn record(&self, c: &Completion<Routed>) {
        self.gate.record(&self.item, c);
    }

    /// The stream went away before an outcome reached it: counted as cancelled by the client.
    fn record_cancelled(&self) {
        let waited = self.item.enqueued.elapsed().as_secs_f64();
        let (flow, priority) = (&**self.item.flow(), self.item.priority);
        self.gate.left(
            flow,
            priority,
            QueueOutcome::EvictedContextCancelled,
            None,
            waited,
        );
    }
}

impl Future for Waiting {
    type Output = Decided;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Decided> {
        let this = self.get_mut();
        match Pin::new(&mut this.rx).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(c)) => Poll::Ready(this.decided(c)),
            // The controller went away without an outcome (it always gives one first).
            Poll::Ready(Err(_)) => {
                this.done = true;
                Poll::Ready(Decided::Refused(Refusal::of(Rejection::ShuttingDown)))
            }
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Ok(c) = self.rx.try_recv() {
            self.record(&c);
            self.gate.discard(c);
            return;
        }
        // No outcome reached the stream: the client went away while it waited.
        let id = self.item.id;
        if self.item.cancel() {
            self.record_cancelled();
            self.gate.controller.sink().slots().remove(&id);
            return;
        }
        // Being dispatched or ended right now: that outcome is the request's (as upstream, whoever
        // finalizes first decides), recorded and freed when it comes to the sink.
        let mut slots = self.gate.controller.sink().slots();
        match slots.remove(&id) {
            Some(Slot::Waiting(_)) => {
                slots.insert(id, Slot::Abandoned(self.item.clone()));
            }
            Some(Slot::Arrived(c)) => {
                drop(slots);
                self.record(&c);
                self.gate.discard(*c);
            }
            Some(Slot::Abandoned(_)) | None => {
                drop(slots);
                // Sent to our oneshot between the first look and the lock.
                if let Ok(c) = self.rx.try_recv() {
                    self.record(&c);
                    self.gate.discard(c);
                }
            }
        }
    }
}
