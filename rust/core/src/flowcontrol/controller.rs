//! The flow controller: producers leave requests in sharded inboxes (no global lock to wait on)
//! and the dispatch thread merges and dispatches them in batches, pipelined with the producers.
//! Room made by a release is used in the releasing caller's thread when the queues are free (a
//! short cycle, no wake of the dispatch thread); the thread runs the rest: long bursts, retries
//! while blocked, and deadlines.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use super::config::{FlowControlConfig, OrderingPolicy};
use super::dispatch::{self, Queues, INLINE_BURST};
use super::item::{Completion, Item, Rejection};
use super::ledger::{BandShared, Ledger};
use super::outcomes::{FlowMetrics, QueueOutcome};
use super::saturation::SaturationDetector;
use super::usage_limits::{BandPosition, UsageLimiter};

/// What the dispatch thread does with a request once policy says it may go.
pub trait Dispatcher: Send + Sync + 'static {
    type Request: Send + Sync + 'static;
    type Output: Send + 'static;
    /// Resolve candidates from the current state and pick; `NoCandidates` makes the request
    /// (and everything behind it) wait until the pool changes.
    fn dispatch(&self, request: &Self::Request) -> Dispatch<Self::Output>;
    /// True while the pool has no endpoints at all (expiry then reports no-endpoints).
    fn pool_empty(&self) -> bool;
    /// True while nothing `request` may go to exists (an empty pool, or no endpoint in its
    /// subset): it waits without blocking the requests behind it, and expires as no-endpoints.
    fn no_candidates(&self, _request: &Self::Request) -> bool {
        self.pool_empty()
    }
    /// False when `request` carries its own wait for endpoints (a scale-from-zero grace period
    /// given as its TTL) that the global no-endpoint TTL must not cut short.
    fn no_endpoint_ttl_applies(&self, _request: &Self::Request) -> bool {
        true
    }
}

pub enum Dispatch<O> {
    Done(O),
    NoCandidates,
}

/// Receives outcomes in batches on the dispatch thread; must take (drain) the batch.
pub trait CompletionSink<O>: Send + Sync + 'static {
    fn deliver(&self, batch: &mut Vec<Completion<O>>);
}

impl<O, F> CompletionSink<O> for F
where
    F: Fn(&mut Vec<Completion<O>>) + Send + Sync + 'static,
{
    fn deliver(&self, batch: &mut Vec<Completion<O>>) {
        self(batch)
    }
}

/// How one request asks to be admitted.
#[derive(Debug, Clone, Default)]
pub struct Admission<'a> {
    /// Fairness id.
    pub flow: &'a str,
    pub priority: i32,
    /// Bytes counted against band and global capacity.
    pub size: u64,
    /// None = the configured default.
    pub ttl: Option<Duration>,
    /// TTFT objective, the key of `slo-deadline-ordering-policy`.
    pub slo_ttft: Option<Duration>,
    /// The request's model and the one it is sent as ("" when unknown): queue-gauge labels.
    pub model: &'a str,
    pub target_model: &'a str,
}

/// A snapshot of the counters, for metrics exporters.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowStats {
    pub queued_requests: u64,
    pub queued_bytes: u64,
    /// (priority, queued requests, queued bytes), highest priority first.
    pub bands: Vec<(i32, u64, u64)>,
    /// (priority, max requests, max bytes) of the same bands; 0 = no limit.
    pub band_limits: Vec<(i32, u64, u64)>,
    /// Global limits; 0 = none.
    pub max_requests: u64,
    pub max_bytes: u64,
    pub enqueued: u64,
    pub dispatched: u64,
    pub rejected_capacity: u64,
    pub expired_ttl: u64,
    pub expired_no_endpoints: u64,
    pub cancelled: u64,
    pub evicted: u64,
    pub in_flight: u64,
    pub saturation: f64,
    pub dispatch_cycles: u64,
    pub dispatch_cycle_seconds: f64,
    pub queue_wait_seconds: f64,
    /// In-flight eviction; None when `enableEviction` is off.
    pub eviction: Option<super::eviction::EvictionStats>,
}

const SHARDS: usize = 16;
/// The top bit marks ids of outcomes that never queued (`next_id`).
const UNQUEUED_IDS: u64 = 1 << 63;
/// `Shared::pending` bits: one per inbox shard holding arrivals, and one for "look again".
pub(crate) const ALL_SHARDS: u32 = (1 << SHARDS) - 1;
const LOOK_AGAIN: u32 = 1 << 31;

/// One shard of arrivals not yet merged by the dispatcher, and of items it is done with.
pub(crate) type Inbox<R> = Mutex<Shard<R>>;

pub(crate) struct Shard<R> {
    pub arrivals: Vec<Arc<Item<R>>>,
    /// The dispatcher's last references to requests that left the queues, for the next producer
    /// of this shard to drop: a request's memory is then freed by a thread that allocates
    /// requests (and reuses it from its own cache) instead of by the dispatch thread, through
    /// which every request passes. The dispatcher drops them itself before it sleeps.
    pub ended: Vec<Arc<Item<R>>>,
    /// An emptied `ended` buffer, back for the dispatcher to fill again.
    pub empty: Vec<Arc<Item<R>>>,
}

impl<R> Default for Shard<R> {
    fn default() -> Self {
        Shard {
            arrivals: Vec::new(),
            ended: Vec::new(),
            empty: Vec::new(),
        }
    }
}

pub(crate) struct Shared<D: Dispatcher, S> {
    pub config: FlowControlConfig,
    pub dispatcher: D,
    pub sink: S,
    pub detector: SaturationDetector,
    /// The usage-limit policy with its state.
    pub limits: UsageLimiter,
    pub ledger: Arc<Ledger>,
    /// In-flight eviction (`enableEviction`).
    pub eviction: Option<super::eviction::Eviction>,
    /// Per-flow gauges, enqueue and dispatch-cycle durations (upstream's families). A flow's
    /// gauge holds its band (not the other way round: no cycle through the ledger).
    pub metrics: FlowMetrics,
    /// Few (one per priority in use): a scan beats hashing.
    bands: ArcSwap<Vec<Arc<BandShared>>>,
    band_writer: Mutex<()>,
    pub inbox: Vec<Inbox<D::Request>>,
    pub queues: Mutex<Queues<D>>,
    next_id: AtomicU64,
    /// Work for the dispatch thread (`ALL_SHARDS` bits, `LOOK_AGAIN`); it takes all at once.
    pub pending: AtomicU32,
    pub shutdown: AtomicBool,
    thread: std::sync::OnceLock<Thread>,
}

impl<D: Dispatcher, S> Shared<D, S> {
    /// Tell the dispatch thread about `bits`; only the first signal since it last looked wakes it.
    fn signal(&self, bits: u32) {
        if self.pending.fetch_or(bits, Ordering::AcqRel) == 0 {
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
    }

    pub fn wake(&self) {
        self.signal(LOOK_AGAIN);
    }

    fn band(&self, priority: i32) -> Arc<BandShared> {
        let find =
            |bands: &[Arc<BandShared>]| bands.iter().find(|b| b.priority == priority).cloned();
        if let Some(b) = find(&self.bands.load()) {
            return b;
        }
        let _w = self.band_writer.lock();
        let current = self.bands.load_full();
        if let Some(b) = find(&current) {
            return b;
        }
        let cfg = self.config.band(priority);
        let band = Arc::new(BandShared {
            priority,
            max_requests: cfg.max_requests,
            max_bytes: cfg.max_bytes,
            ordering: cfg.ordering_policy,
            counters: Default::default(),
            ledger: self.ledger.clone(),
        });
        let mut next = (*current).clone();
        next.push(band.clone());
        self.bands.store(Arc::new(next));
        band
    }
}

pub struct FlowController<D: Dispatcher, S: CompletionSink<D::Output>> {
    shared: Arc<Shared<D, S>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static SHARD: Cell<usize> = Cell::new(NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS);
}

impl<D: Dispatcher, S: CompletionSink<D::Output>> FlowController<D, S> {
    /// Start the dispatch thread.
    pub fn start(
        config: FlowControlConfig,
        detector: SaturationDetector,
        dispatcher: D,
        sink: S,
    ) -> std::io::Result<Self> {
        let ledger = Arc::new(Ledger {
            max_requests: config.max_requests,
            max_bytes: config.max_bytes,
            ..Default::default()
        });
        let limits = UsageLimiter::new(config.usage_limit_policy.clone());
        let eviction = config.eviction(!detector.changes_on_its_own());
        let shared = Arc::new(Shared {
            eviction,
            config,
            limits,
            dispatcher,
            sink,
            detector,
            ledger,
            metrics: FlowMetrics::default(),
            bands: ArcSwap::from_pointee(Vec::new()),
            band_writer: Mutex::new(()),
            inbox: (0..SHARDS).map(|_| Mutex::default()).collect(),
            queues: Mutex::new(Queues::new()),
            next_id: AtomicU64::new(1),
            pending: AtomicU32::new(0),
            shutdown: AtomicBool::new(false),
            thread: std::sync::OnceLock::new(),
        });
        let for_thread = shared.clone();
        let handle = std::thread::Builder::new()
            .name("sluicegate-flow-dispatch".into())
            .spawn(move || dispatch::run(for_thread))?;
        let _ = shared.thread.set(handle.thread().clone());
        shared.wake();
        Ok(FlowController {
            shared,
            thread: Mutex::new(Some(handle)),
        })
    }

    /// Dispatch in the caller's thread when nothing waits anywhere and the request's band has
    /// room: the unsaturated common case then pays no hand-off to the dispatch thread. None
    /// when it must queue (then `enqueue` it); counted as enqueued and dispatched when it went.
    pub fn dispatch_now(
        &self,
        admission: &Admission<'_>,
        request: &D::Request,
    ) -> Option<D::Output> {
        self.dispatch_now_with(admission, || self.shared.dispatcher.dispatch(request))
    }

    /// `dispatch_now` with the caller's own `dispatch` (a request it holds borrowed, so nothing
    /// is copied unless it must queue).
    pub fn dispatch_now_with<T>(
        &self,
        admission: &Admission<'_>,
        dispatch: impl FnOnce() -> Dispatch<T>,
    ) -> Option<T> {
        let s = &*self.shared;
        let l = &*s.ledger;
        if s.shutdown.load(Ordering::Acquire) || l.queued.requests.load(Ordering::SeqCst) > 0 {
            return None; // whatever waits goes first
        }
        let at = self.position_of(admission.priority);
        let now = Instant::now();
        l.in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                let saturation = s.detector.saturation(now, n);
                (saturation < s.limits.peek(saturation).ceiling(at)).then_some(n + 1)
            })
            .ok()?;
        match dispatch() {
            Dispatch::Done(output) => {
                l.enqueued.fetch_add(1, Ordering::Relaxed);
                l.dispatched.fetch_add(1, Ordering::Relaxed);
                Some(output)
            }
            Dispatch::NoCandidates => {
                self.release();
                None
            }
        }
    }

    /// Where `priority`'s band ranks among the bands provisioned so far (what the dispatcher
    /// ranks it among), for its usage-limit ceiling.
    fn position_of(&self, priority: i32) -> BandPosition {
        if !self.shared.limits.ranks() {
            return BandPosition::default();
        }
        let bands = self.shared.bands.load();
        let configured = self.shared.config.priority_bands.iter();
        let others = configured
            .map(|b| b.priority)
            .filter(|p| !bands.iter().any(|b| b.priority == *p))
            .chain(bands.iter().map(|b| b.priority));
        BandPosition::among(priority, others)
    }

    /// A dispatched request of `flow` finished having used these tokens (its response's
    /// usage): program-aware-fairness counts them as the program's service. No-op otherwise.
    pub fn completed(&self, flow: &str, prompt_tokens: u64, completion_tokens: u64) {
        if let Some(p) = &self.shared.config.program_aware_policy.0 {
            p.completed(flow, prompt_tokens, completion_tokens, Instant::now());
        }
    }

    /// A fresh id for an outcome that never queued (a range of its own: queued requests' ids
    /// count enqueues).
    pub fn next_id(&self) -> u64 {
        UNQUEUED_IDS | self.shared.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Queue a request; its outcome arrives through the sink. Capacity and shutdown
    /// rejections are returned here at once instead (and never reach the sink).
    pub fn enqueue(
        &self,
        admission: &Admission<'_>,
        request: D::Request,
    ) -> Result<Arc<Item<D::Request>>, Rejection> {
        let s = &*self.shared;
        let now = Instant::now();
        let metrics = &s.metrics;
        let (flow, priority) = (admission.flow, admission.priority);
        let refused = |r: Rejection| {
            metrics.enqueued(flow, priority, QueueOutcome::from(r).name(), now.elapsed());
            Err(r)
        };
        if s.shutdown.load(Ordering::Acquire) {
            return refused(Rejection::ShuttingDown);
        }
        // One lookup finds the flow's gauge, and with it its band and interned key; the request
        // counts in it from here (out again if refused).
        let gauge = metrics.enter(
            flow,
            priority,
            admission.model,
            admission.target_model,
            admission.size,
            || s.band(priority),
        );
        let band = gauge.band();
        if !band.try_reserve(admission.size) {
            gauge.leave(admission.size);
            s.ledger.rejected_capacity.fetch_add(1, Ordering::Relaxed);
            return refused(if s.dispatcher.pool_empty() {
                Rejection::NoEndpoints
            } else {
                Rejection::Capacity
            });
        }
        let deadline = now + admission.ttl.unwrap_or(s.config.default_ttl());
        let order_deadline = match (band.ordering, admission.slo_ttft) {
            (OrderingPolicy::SloDeadline, Some(slo)) => now + slo,
            _ => deadline,
        };
        let own_flow = (!gauge.is_flow(flow)).then(|| Arc::from(flow));
        // Ids count enqueues: one counter for both, in arrival order (global-strict's age).
        let id = s.ledger.enqueued.fetch_add(1, Ordering::Relaxed) + 1;
        let item = Arc::new(Item::new(
            id,
            own_flow,
            admission.priority,
            admission.size,
            now,
            deadline,
            admission.ttl.is_none(),
            order_deadline,
            request,
            gauge,
        ));
        let shard = SHARD.with(Cell::get);
        let (first, ended) = {
            let mut inbox = s.inbox[shard].lock();
            inbox.arrivals.push(item.clone());
            let ended = (!inbox.ended.is_empty()).then(|| std::mem::take(&mut inbox.ended));
            (inbox.arrivals.len() == 1, ended)
        };
        // A shard with arrivals in it was signalled when its first came and not taken since
        // (whoever takes it clears its bit first, then empties it under its lock).
        if first {
            s.signal(1 << shard);
        }
        if let Some(mut ended) = ended {
            ended.clear(); // outside the lock
            let mut inbox = s.inbox[shard].lock();
            if inbox.empty.capacity() < ended.capacity() {
                inbox.empty = ended;
            }
        }
        // Shutdown may have drained the inboxes between the check above and the push: whoever
        // ends the item first owns its outcome.
        if s.shutdown.load(Ordering::Acquire) && item.finish_queued() {
            s.ledger.evicted.fetch_add(1, Ordering::Relaxed);
            return Err(Rejection::ShuttingDown);
        }
        Ok(item)
    }

    /// A short cycle in the caller's thread (the queues' lock held); the dispatch thread is woken
    /// for whatever the cycle leaves to it.
    fn finish_cycle(
        &self,
        mut q: parking_lot::MutexGuard<'_, Queues<D>>,
        asked: bool,
        merged: Option<Instant>,
    ) {
        let s = &*self.shared;
        let progress = q.cycle(s, INLINE_BURST, merged);
        let wake = asked || q.needs_thread(s, &progress);
        // A caller's thread is one that allocates requests: it drops what ended here itself.
        let ended = (!q.ended.is_empty()).then(|| std::mem::take(&mut q.ended));
        drop(q);
        drop(ended);
        if wake {
            s.wake();
        }
    }

    /// Room was made: dispatch what waits, here when the queues are free, else on the thread.
    fn kick(&self) {
        let s = &*self.shared;
        match s.queues.try_lock() {
            Some(q) if !s.shutdown.load(Ordering::SeqCst) => {
                let mut q = q;
                let bits = s.pending.swap(0, Ordering::AcqRel);
                let merged = q.take_inbox(s, bits);
                self.finish_cycle(q, bits & LOOK_AGAIN != 0, merged);
            }
            _ => s.wake(),
        }
    }

    /// A dispatched request finished: it no longer counts in flight.
    pub fn release(&self) {
        let l = &self.shared.ledger;
        let _ = l
            .in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_sub(1))
            });
        // Only a waiting request can use the room; with none queued, the next enqueue dispatches
        // itself. SeqCst pairs with the enqueue's reservation and the dispatcher's in-flight
        // read, so a request queued meanwhile is never left asleep.
        if l.queued.requests.load(Ordering::SeqCst) > 0 {
            self.kick();
        }
    }

    /// Something outside changed (endpoints, metrics): look again now.
    pub fn notify(&self) {
        self.shared.wake();
    }

    pub fn saturation(&self) -> f64 {
        let in_flight = self.shared.ledger.in_flight.load(Ordering::Acquire);
        self.shared.detector.saturation(Instant::now(), in_flight)
    }

    /// In-flight eviction, when `enableEviction` is on: the caller tracks what it dispatched.
    pub fn eviction(&self) -> Option<&super::eviction::Eviction> {
        self.shared.eviction.as_ref()
    }

    pub fn dispatcher(&self) -> &D {
        &self.shared.dispatcher
    }

    pub fn sink(&self) -> &S {
        &self.shared.sink
    }

    pub fn stats(&self) -> FlowStats {
        let l = &self.shared.ledger;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut bands: Vec<_> = self
            .shared
            .bands
            .load()
            .iter()
            .map(|b| {
                (
                    b.priority,
                    get(&b.counters.requests),
                    get(&b.counters.bytes),
                )
            })
            .collect();
        bands.sort_by_key(|b| std::cmp::Reverse(b.0));
        let mut band_limits: Vec<_> = (self.shared.bands.load().iter())
            .map(|b| (b.priority, b.max_requests, b.max_bytes))
            .collect();
        band_limits.sort_by_key(|b| std::cmp::Reverse(b.0));
        FlowStats {
            band_limits,
            max_requests: l.max_requests,
            max_bytes: l.max_bytes,
            queued_requests: get(&l.queued.requests),
            queued_bytes: get(&l.queued.bytes),
            bands,
            enqueued: get(&l.enqueued),
            dispatched: get(&l.dispatched),
            rejected_capacity: get(&l.rejected_capacity),
            expired_ttl: get(&l.expired_ttl),
            expired_no_endpoints: get(&l.expired_no_endpoints),
            cancelled: get(&l.cancelled),
            evicted: get(&l.evicted),
            in_flight: get(&l.in_flight),
            saturation: self.saturation(),
            dispatch_cycles: get(&l.dispatch_cycles),
            dispatch_cycle_seconds: get(&l.dispatch_cycle_nanos) as f64 / 1e9,
            queue_wait_seconds: get(&l.queue_wait_nanos) as f64 / 1e9,
            eviction: self.shared.eviction.as_ref().map(|e| e.stats()),
        }
    }

    /// Per-flow gauges, enqueue and dispatch-cycle durations.
    pub fn metrics(&self) -> &FlowMetrics {
        &self.shared.metrics
    }

    /// Evict everything queued (503 rejected-shutting-down) and stop the dispatch thread.
    pub fn shutdown(&self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.signal(LOOK_AGAIN);
        if let Some(t) = self.shared.thread.get() {
            t.unpark();
        }
        if let Some(h) = self.thread.lock().take() {
            let _ = h.join();
        }
    }
}

impl<D: Dispatcher, S: CompletionSink<D::Output>> Drop for FlowController<D, S> {
    fn drop(&mut self) {
        self.shutdown();
    }
}
