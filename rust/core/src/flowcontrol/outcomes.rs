//! How long requests spent in flow control, by how they left it: upstream's
//! `flow_control_request_queue_duration_seconds` (fairness id, priority, outcome, model, target
//! model). Recorded once per request where its outcome is decided, read when Prometheus
//! scrapes; the requests-by-outcome counter is the histograms' counts, so the two always agree.
//! Also the per-flow families (queue size and bytes per flow and model, enqueue durations) and
//! the dispatch-cycle histogram; a flow idle for `FLOW_GC_IDLE` loses its series, as upstream's
//! registry garbage-collects idle flows, so client-chosen fairness ids cannot grow them forever.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::item::Rejection;
use super::ledger::BandShared;
use crate::stats::{AtomicHistogram, Histogram, OVERFLOW, SCHEDULER_BUCKETS};

/// Upstream's default flow GC timeout: a flow with nothing queued for this long is forgotten.
pub const FLOW_GC_IDLE: Duration = Duration::from_secs(300);

/// Upstream's buckets for the queue-duration histogram, in seconds.
pub const QUEUE_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Upstream's QueueOutcome names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueOutcome {
    Dispatched,
    RejectedCapacity,
    EvictedTtl,
    EvictedNoEndpoints,
    EvictedContextCancelled,
    EvictedOther,
}

impl QueueOutcome {
    pub fn name(self) -> &'static str {
        match self {
            QueueOutcome::Dispatched => "Dispatched",
            QueueOutcome::RejectedCapacity => "RejectedCapacity",
            QueueOutcome::EvictedTtl => "EvictedTTL",
            QueueOutcome::EvictedNoEndpoints => "EvictedNoEndpoints",
            QueueOutcome::EvictedContextCancelled => "EvictedContextCancelled",
            QueueOutcome::EvictedOther => "EvictedOther",
        }
    }
}

impl QueueOutcome {
    const ALL: [QueueOutcome; 6] = [
        QueueOutcome::Dispatched,
        QueueOutcome::RejectedCapacity,
        QueueOutcome::EvictedTtl,
        QueueOutcome::EvictedNoEndpoints,
        QueueOutcome::EvictedContextCancelled,
        QueueOutcome::EvictedOther,
    ];

    /// The outcome upstream names `name`.
    pub fn from_name(name: &str) -> Option<QueueOutcome> {
        Self::ALL.into_iter().find(|o| o.name() == name)
    }
}

impl From<Rejection> for QueueOutcome {
    fn from(r: Rejection) -> QueueOutcome {
        match r {
            Rejection::Capacity => QueueOutcome::RejectedCapacity,
            Rejection::TtlExpired => QueueOutcome::EvictedTtl,
            Rejection::NoEndpoints => QueueOutcome::EvictedNoEndpoints,
            Rejection::ShuttingDown => QueueOutcome::EvictedOther,
        }
    }
}

/// Who left the queue: the histogram's label values other than the outcome.
#[derive(Debug, Clone, Copy)]
pub struct QueueLabels<'a> {
    pub fairness_id: &'a str,
    pub priority: i32,
    pub model: &'a str,
    pub target_model: &'a str,
}

/// One label set's histogram, as a scrape reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSeries {
    pub fairness_id: String,
    pub priority: i32,
    pub outcome: &'static str,
    pub model: String,
    pub target_model: String,
    pub duration: Histogram,
}

pub struct QueueDurations {
    /// Label set -> (series, ms since `epoch` of its last observation).
    series: Mutex<HashMap<String, (QueueSeries, u64)>>,
    /// (priority, outcome) -> requests: upstream's requests_total, which no flow GC touches.
    totals: Mutex<HashMap<(i32, &'static str), u64>>,
    max_series: usize,
    epoch: Instant,
}

thread_local! {
    static KEY: RefCell<String> = RefCell::new(String::with_capacity(96));
    /// This thread's last few flow gauges, most recent first.
    static RECENT_GAUGES: RefCell<[Recent; 4]> = RefCell::new(Default::default());
}

static NEXT_METRICS_ID: AtomicU64 = AtomicU64::new(1);

/// `a == b`, without calling memcmp for empty strings (an empty `String` points nowhere, and
/// the vector memcmp's masked load from there takes a microcode assist: measured at 28% of an
/// enqueue when model labels are empty).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && (a.is_empty() || a == b)
}

/// A flow gauge a thread used lately: which metrics, under which labels.
#[derive(Default)]
struct Recent {
    metrics: u64,
    priority: i32,
    flow: String,
    model: String,
    target: String,
    gauge: Weak<FlowGauge>,
}

impl QueueDurations {
    /// `max_series` caps distinct label sets; later ones count under model `__other__`.
    pub fn new(max_series: usize) -> QueueDurations {
        QueueDurations {
            series: Mutex::new(HashMap::new()),
            totals: Mutex::new(HashMap::new()),
            max_series: max_series.max(1),
            epoch: Instant::now(),
        }
    }

    /// One request left flow control after `seconds`; no allocation once its label set exists.
    pub fn observe(&self, l: QueueLabels<'_>, outcome: QueueOutcome, seconds: f64) {
        let at = millis_since(self.epoch);
        *(self.totals.lock())
            .entry((l.priority, outcome.name()))
            .or_insert(0) += 1;
        KEY.with_borrow_mut(|key| {
            let mut map = self.series.lock();
            let mut l = l;
            write_key(key, &l, outcome);
            if !map.contains_key(key.as_str()) && map.len() >= self.max_series {
                l.fairness_id = OVERFLOW;
                l.model = OVERFLOW;
                l.target_model = OVERFLOW;
                write_key(key, &l, outcome);
            }
            if let Some((s, touched)) = map.get_mut(key.as_str()) {
                s.duration.observe(seconds);
                *touched = at;
                return;
            }
            let mut duration = Histogram::new(QUEUE_BUCKETS);
            duration.observe(seconds);
            let series = QueueSeries {
                fairness_id: l.fairness_id.to_owned(),
                priority: l.priority,
                outcome: outcome.name(),
                model: l.model.to_owned(),
                target_model: l.target_model.to_owned(),
                duration,
            };
            map.insert(key.clone(), (series, at));
        })
    }

    /// Requests that left flow control per (priority, outcome), ordered.
    pub fn totals(&self) -> Vec<(i32, &'static str, u64)> {
        let mut out: Vec<_> = (self.totals.lock().iter())
            .map(|(&(priority, outcome), &n)| (priority, outcome, n))
            .collect();
        out.sort();
        out
    }

    /// Every label set, ordered so scrapes are stable; label sets nothing left with for
    /// `FLOW_GC_IDLE` are forgotten first.
    pub fn snapshot(&self) -> Vec<QueueSeries> {
        self.snapshot_forgetting(FLOW_GC_IDLE)
    }

    /// `snapshot`, forgetting label sets idle for `idle`.
    pub fn snapshot_forgetting(&self, idle: Duration) -> Vec<QueueSeries> {
        let now = millis_since(self.epoch);
        let idle = idle.as_millis() as u64;
        let mut map = self.series.lock();
        map.retain(|_, (_, touched)| now.saturating_sub(*touched) < idle);
        let mut out: Vec<QueueSeries> = map.values().map(|(s, _)| s.clone()).collect();
        drop(map);
        out.sort_by(|a, b| {
            (
                &a.fairness_id,
                a.priority,
                a.outcome,
                &a.model,
                &a.target_model,
            )
                .cmp(&(
                    &b.fairness_id,
                    b.priority,
                    b.outcome,
                    &b.model,
                    &b.target_model,
                ))
        });
        out
    }
}

fn millis_since(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

/// Requests of one flow and model held in flow control now: upstream's queue_size and
/// queue_bytes series (fairness id, priority, model, target model). Bound when a request
/// queues; it counts itself out when it leaves. It also carries what every enqueue of its flow
/// needs, found with the one lookup that binds it: its band, the fairness id interned (shared by
/// the flow's queued requests, not copied per request) and its flow's enqueue-duration series.
/// A queued request holds its gauge and nothing else shared: one reference count per request
/// for producer and dispatcher to pass between them.
#[derive(Debug)]
pub struct FlowGauge {
    pub fairness_id: Arc<str>,
    pub priority: i32,
    pub model: String,
    pub target_model: String,
    band: Arc<BandShared>,
    /// Its flow's "NotYetFinalized" enqueue durations; None for the overflow gauge (many flows).
    enqueued: Option<Arc<EnqueueCell>>,
    requests: AtomicI64,
    bytes: AtomicI64,
    /// ms since the metrics' epoch when it last held nothing.
    idle_since: AtomicU64,
    epoch: Instant,
    /// Forgotten (idle past the GC time): whoever finds it in a thread's recent gauges counts
    /// itself out again and looks its flow up anew.
    retired: AtomicBool,
}

impl FlowGauge {
    /// Count one request in. SeqCst: a producer counting in and the GC retiring the gauge
    /// (store `retired`, then read `requests`) see each other (`FlowMetrics::enter`).
    pub(crate) fn enter(&self, size: u64) {
        self.requests.fetch_add(1, SeqCst);
        self.bytes.fetch_add(size as i64, Relaxed);
    }

    pub(crate) fn leave(&self, size: u64) {
        self.leave_many(1, size);
    }

    /// `requests` requests of `bytes` in all left the queue (a dispatch batch).
    pub(crate) fn leave_many(&self, requests: u64, bytes: u64) {
        self.bytes.fetch_sub(bytes as i64, Relaxed);
        if self.requests.fetch_sub(requests as i64, Relaxed) == requests as i64 {
            self.idle_since.store(millis_since(self.epoch), Relaxed);
        }
    }

    /// Whether this gauge is `flow`'s own (not the overflow gauge of many flows).
    pub(crate) fn is_flow(&self, flow: &str) -> bool {
        &*self.fairness_id == flow
    }

    pub(crate) fn band(&self) -> &Arc<BandShared> {
        &self.band
    }
}

/// A gauge row as a scrape reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowGaugeRow {
    pub fairness_id: String,
    pub priority: i32,
    pub model: String,
    pub target_model: String,
    pub requests: i64,
    pub bytes: i64,
}

/// Enqueue durations of one flow by outcome ("NotYetFinalized" when it went into its queue).
#[derive(Debug, Clone, PartialEq)]
pub struct EnqueueSeries {
    pub fairness_id: String,
    pub priority: i32,
    pub outcome: &'static str,
    pub duration: Histogram,
}

/// One enqueue series as it is recorded: lock-free, so a flow's gauge can hold its own.
#[derive(Debug)]
struct EnqueueCell {
    fairness_id: String,
    priority: i32,
    outcome: &'static str,
    duration: AtomicHistogram,
    /// ms since the metrics' epoch of the last observation.
    touched: AtomicU64,
    epoch: Instant,
}

impl EnqueueCell {
    fn observe(&self, elapsed: Duration) {
        self.duration.observe_duration(elapsed);
        self.touched.store(millis_since(self.epoch), Relaxed);
    }
}

/// Upstream's outcome of an enqueue that put the request in its queue.
pub const ENQUEUED: &str = "NotYetFinalized";

/// The per-flow families and the dispatch-cycle histogram of one flow controller.
pub struct FlowMetrics {
    /// Unique per instance: names it in the threads' recent gauges.
    id: u64,
    epoch: Instant,
    max_series: usize,
    gauges: Mutex<HashMap<String, Arc<FlowGauge>>>,
    /// flow\0priority\0outcome -> series
    enqueue: Mutex<HashMap<String, Arc<EnqueueCell>>>,
    /// One observation per pass of the dispatch loop (merge, expire, dispatch).
    pub dispatch_cycle: AtomicHistogram,
}

impl std::fmt::Debug for FlowMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowMetrics").finish_non_exhaustive()
    }
}

impl Default for FlowMetrics {
    fn default() -> Self {
        FlowMetrics::new(2000)
    }
}

impl FlowMetrics {
    /// `max_series` caps the flow/model gauges; later models count under `__other__`.
    pub fn new(max_series: usize) -> FlowMetrics {
        FlowMetrics {
            id: NEXT_METRICS_ID.fetch_add(1, Relaxed),
            epoch: Instant::now(),
            max_series: max_series.max(1),
            gauges: Mutex::new(HashMap::new()),
            enqueue: Mutex::new(HashMap::new()),
            dispatch_cycle: AtomicHistogram::new(SCHEDULER_BUCKETS),
        }
    }

    /// Count one request of `size` into the gauge of its flow and model (created in `band`, the
    /// priority's, on the flow's first request) and return the gauge. A thread queueing for the
    /// same few flows finds it among its recent gauges: no lock, no hashing.
    pub(crate) fn enter(
        &self,
        flow: &str,
        priority: i32,
        model: &str,
        target: &str,
        size: u64,
        band: impl FnOnce() -> Arc<BandShared>,
    ) -> Arc<FlowGauge> {
        let recent = RECENT_GAUGES.with_borrow(|r| {
            r.iter()
                .find(|e| {
                    (e.metrics, e.priority) == (self.id, priority)
                        && same(&e.flow, flow)
                        && same(&e.model, model)
                        && same(&e.target, target)
                })
                .and_then(|e| e.gauge.upgrade())
        });
        if let Some(g) = recent {
            g.enter(size);
            // Retired by a GC that did not see this request: count out, look up anew.
            if !g.retired.load(SeqCst) {
                return g;
            }
            g.leave(size);
        }
        let g = KEY.with_borrow_mut(|key| {
            gauge_key(key, flow, priority, model, target);
            self.gauge_locked(key, flow, priority, model, target, band, |g| g.enter(size))
        });
        if g.is_flow(flow) {
            RECENT_GAUGES.with_borrow_mut(|r| {
                r.rotate_right(1);
                let e = &mut r[0];
                (e.metrics, e.priority) = (self.id, priority);
                e.flow.replace_range(.., flow);
                e.model.replace_range(.., model);
                e.target.replace_range(.., target);
                e.gauge = Arc::downgrade(&g);
            });
        }
        g
    }

    /// The gauge under `key`, made on first use (past the cap, the overflow gauge); `enter`
    /// runs with the gauges' lock held, so the GC cannot retire it meanwhile.
    #[allow(clippy::too_many_arguments)]
    fn gauge_locked(
        &self,
        key: &mut String,
        flow: &str,
        priority: i32,
        model: &str,
        target: &str,
        band: impl FnOnce() -> Arc<BandShared>,
        enter: impl FnOnce(&FlowGauge),
    ) -> Arc<FlowGauge> {
        let mut map = self.gauges.lock();
        if let Some(g) = map.get(key.as_str()) {
            enter(g);
            return g.clone();
        }
        let (flow, model, target) = if map.len() >= self.max_series {
            gauge_key(key, OVERFLOW, priority, OVERFLOW, OVERFLOW);
            if let Some(g) = map.get(key.as_str()) {
                enter(g);
                return g.clone();
            }
            (OVERFLOW, OVERFLOW, OVERFLOW)
        } else {
            (flow, model, target)
        };
        // Lock order: gauges, then enqueue series (nowhere the other way round).
        let enqueued = (flow != OVERFLOW)
            .then(|| self.enqueue_cell(&mut String::new(), flow, priority, ENQUEUED))
            .filter(|c| c.fairness_id == flow);
        let g = Arc::new(FlowGauge {
            fairness_id: Arc::from(flow),
            priority,
            model: model.to_owned(),
            target_model: target.to_owned(),
            band: band(),
            enqueued,
            requests: AtomicI64::new(0),
            bytes: AtomicI64::new(0),
            idle_since: AtomicU64::new(millis_since(self.epoch)),
            epoch: self.epoch,
            retired: AtomicBool::new(false),
        });
        enter(&g);
        map.insert(key.clone(), g.clone());
        g
    }

    /// Queueing one request took `elapsed`; `outcome` is `ENQUEUED` or its rejection's name.
    pub fn enqueued(&self, flow: &str, priority: i32, outcome: &'static str, elapsed: Duration) {
        KEY.with_borrow_mut(|key| self.enqueue_cell(key, flow, priority, outcome))
            .observe(elapsed);
    }

    /// `n` requests of `gauge`'s flow went into their queue taking `seconds` each: through the
    /// series the gauge holds, without a lookup when it holds one.
    pub(crate) fn enqueued_into(&self, gauge: &FlowGauge, flow: &str, n: u64, seconds: f64) {
        match &gauge.enqueued {
            // No last-use time: a series a gauge holds is never forgotten, and the gauge is
            // forgotten only once idle longer than the series would be.
            Some(cell) => cell.duration.observe_n(seconds, n),
            None => {
                let cell = KEY
                    .with_borrow_mut(|key| self.enqueue_cell(key, flow, gauge.priority, ENQUEUED));
                cell.duration.observe_n(seconds, n);
                cell.touched.store(millis_since(self.epoch), Relaxed);
            }
        }
    }

    /// The series of (flow, priority, outcome), made on first use; past the cap, the
    /// overflow flow's.
    fn enqueue_cell(
        &self,
        key: &mut String,
        flow: &str,
        priority: i32,
        outcome: &'static str,
    ) -> Arc<EnqueueCell> {
        join_key(key, &[flow], priority, &[outcome]);
        let mut map = self.enqueue.lock();
        let mut flow = flow;
        if !map.contains_key(key.as_str()) && map.len() >= self.max_series {
            flow = OVERFLOW;
            join_key(key, &[flow], priority, &[outcome]);
        }
        if let Some(c) = map.get(key.as_str()) {
            return c.clone();
        }
        let cell = Arc::new(EnqueueCell {
            fairness_id: flow.to_owned(),
            priority,
            outcome,
            duration: AtomicHistogram::new(SCHEDULER_BUCKETS),
            touched: AtomicU64::new(millis_since(self.epoch)),
            epoch: self.epoch,
        });
        map.insert(key.clone(), cell.clone());
        cell
    }

    /// Gauges and enqueue durations, ordered; flows idle for `FLOW_GC_IDLE` are forgotten.
    pub fn snapshot(&self) -> (Vec<FlowGaugeRow>, Vec<EnqueueSeries>) {
        self.snapshot_forgetting(FLOW_GC_IDLE)
    }

    /// `snapshot`, forgetting flows idle (nothing held, nothing enqueued) for `idle`.
    pub fn snapshot_forgetting(&self, idle: Duration) -> (Vec<FlowGaugeRow>, Vec<EnqueueSeries>) {
        let now = millis_since(self.epoch);
        let idle = idle.as_millis() as u64;
        let mut gauges: Vec<FlowGaugeRow> = {
            let mut map = self.gauges.lock();
            // A gauge counting requests (a queued one, or one being queued) is never idle. A
            // producer may be counting in through its recent gauges without this lock: it
            // counts in, then reads `retired`; retiring stores `retired`, then reads the count
            // (all SeqCst), so one of the two sees the other.
            map.retain(|_, g| {
                if g.requests.load(SeqCst) != 0
                    || now.saturating_sub(g.idle_since.load(Relaxed)) < idle
                {
                    return true;
                }
                g.retired.store(true, SeqCst);
                if g.requests.load(SeqCst) != 0 {
                    g.retired.store(false, SeqCst);
                    return true;
                }
                false
            });
            map.values()
                .map(|g| FlowGaugeRow {
                    fairness_id: g.fairness_id.to_string(),
                    priority: g.priority,
                    model: g.model.clone(),
                    target_model: g.target_model.clone(),
                    requests: g.requests.load(Relaxed),
                    bytes: g.bytes.load(Relaxed),
                })
                .collect()
        };
        gauges.sort_by(|a, b| {
            (&a.fairness_id, a.priority, &a.model, &a.target_model).cmp(&(
                &b.fairness_id,
                b.priority,
                &b.model,
                &b.target_model,
            ))
        });
        let mut enqueue: Vec<EnqueueSeries> = {
            let mut map = self.enqueue.lock();
            // A series a gauge holds (a flow still queueing) is never idle.
            map.retain(|_, c| {
                Arc::strong_count(c) > 1 || now.saturating_sub(c.touched.load(Relaxed)) < idle
            });
            map.values()
                .filter(|c| c.duration.count() > 0)
                .map(|c| EnqueueSeries {
                    fairness_id: c.fairness_id.clone(),
                    priority: c.priority,
                    outcome: c.outcome,
                    duration: c.duration.snapshot(),
                })
                .collect()
        };
        enqueue.sort_by(|a, b| {
            (&a.fairness_id, a.priority, a.outcome).cmp(&(&b.fairness_id, b.priority, b.outcome))
        });
        (gauges, enqueue)
    }
}

fn gauge_key(key: &mut String, flow: &str, priority: i32, model: &str, target: &str) {
    join_key(key, &[flow], priority, &[model, target]);
}

/// `before\0...\0priority\0after\0...` into `key`, without the formatting machinery (a key is
/// built on every enqueue and every outcome).
fn join_key(key: &mut String, before: &[&str], priority: i32, after: &[&str]) {
    key.clear();
    for part in before {
        key.push_str(part);
        key.push('\0');
    }
    let mut digits = [0u8; 11];
    let mut n = priority.unsigned_abs();
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if priority < 0 {
        key.push('-');
    }
    key.push_str(std::str::from_utf8(&digits[at..]).expect("ascii digits"));
    for part in after {
        key.push('\0');
        key.push_str(part);
    }
}

fn write_key(key: &mut String, l: &QueueLabels<'_>, outcome: QueueOutcome) {
    join_key(
        key,
        &[l.fairness_id],
        l.priority,
        &[outcome.name(), l.model, l.target_model],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_join_the_labels_as_formatting_would() {
        let mut key = String::new();
        for p in [0, 7, -5, i32::MIN, i32::MAX] {
            join_key(&mut key, &["tenant"], p, &["Dispatched", "m", "t"]);
            assert_eq!(key, format!("tenant\0{p}\0Dispatched\0m\0t"));
        }
        join_key(&mut key, &["a"], 3, &[]);
        assert_eq!(key, "a\x003");
    }

    fn labels<'a>(flow: &'a str, model: &'a str) -> QueueLabels<'a> {
        QueueLabels {
            fairness_id: flow,
            priority: 1,
            model,
            target_model: model,
        }
    }

    #[test]
    fn one_histogram_per_label_set_and_outcome() {
        let q = QueueDurations::new(10);
        q.observe(labels("a", "m"), QueueOutcome::Dispatched, 0.002);
        q.observe(labels("a", "m"), QueueOutcome::Dispatched, 0.2);
        q.observe(labels("a", "m"), Rejection::TtlExpired.into(), 3.0);
        let s = q.snapshot();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].outcome, s[0].duration.count()), ("Dispatched", 2));
        assert_eq!((s[1].outcome, s[1].duration.count()), ("EvictedTTL", 1));
        assert_eq!(s[0].duration.sum, 0.202);
    }

    fn band() -> Arc<BandShared> {
        Arc::new(BandShared {
            priority: 2,
            max_requests: 0,
            max_bytes: 0,
            ordering: Default::default(),
            counters: Default::default(),
            ledger: Default::default(),
        })
    }

    #[test]
    fn a_flow_gauge_counts_its_requests_and_is_forgotten_once_idle() {
        let m = FlowMetrics::new(10);
        let g = m.enter("tenant", 2, "m", "m", 100, band);
        assert!(Arc::ptr_eq(&g, &m.enter("tenant", 2, "m", "m", 50, band)));
        let (rows, _) = m.snapshot();
        assert_eq!((rows[0].requests, rows[0].bytes), (2, 150));
        assert_eq!(
            (rows[0].fairness_id.as_str(), rows[0].model.as_str()),
            ("tenant", "m")
        );
        // counting requests: kept even past the idle time
        assert_eq!(m.snapshot_forgetting(Duration::ZERO).0.len(), 1);
        g.leave(100);
        g.leave(50);
        assert_eq!(
            m.snapshot().0[0].requests,
            0,
            "kept at 0 while recently active"
        );
        assert!(m.snapshot_forgetting(Duration::ZERO).0.is_empty());
        // a new request of the flow starts a fresh series, though this thread still knows the
        // forgotten gauge (and something holds it)
        let fresh = m.enter("tenant", 2, "m", "m", 10, band);
        assert!(!Arc::ptr_eq(&g, &fresh));
        assert_eq!((g.requests.load(SeqCst), g.bytes.load(SeqCst)), (0, 0));
        let rows = m.snapshot().0;
        assert_eq!((rows.len(), rows[0].requests, rows[0].bytes), (1, 1, 10));
        assert!(Arc::ptr_eq(
            &fresh,
            &m.enter("tenant", 2, "m", "m", 10, band)
        ));
    }

    #[test]
    fn recent_gauges_are_per_metrics_instance() {
        let (a, b) = (FlowMetrics::new(10), FlowMetrics::new(10));
        let ga = a.enter("tenant", 0, "m", "m", 1, band);
        let gb = b.enter("tenant", 0, "m", "m", 1, band);
        assert!(!Arc::ptr_eq(&ga, &gb));
        assert_eq!(
            (a.snapshot().0[0].requests, b.snapshot().0[0].requests),
            (1, 1)
        );
    }

    #[test]
    fn enqueue_durations_per_flow_and_outcome_fold_flows_past_the_cap() {
        let m = FlowMetrics::new(2);
        m.enqueued("a", 0, ENQUEUED, Duration::from_micros(50));
        m.enqueued("a", 0, ENQUEUED, Duration::from_micros(150));
        m.enqueued("b", 0, "RejectedCapacity", Duration::from_micros(10));
        m.enqueued("c", 0, ENQUEUED, Duration::from_micros(10));
        let (_, rows) = m.snapshot();
        let got: Vec<_> = rows
            .iter()
            .map(|r| (r.fairness_id.as_str(), r.outcome, r.duration.count()))
            .collect();
        assert_eq!(
            got,
            vec![
                (OVERFLOW, ENQUEUED, 1),
                ("a", ENQUEUED, 2),
                ("b", "RejectedCapacity", 1)
            ]
        );
        assert!(m.snapshot_forgetting(Duration::ZERO).1.is_empty());
    }

    #[test]
    fn forgetting_idle_flows_leaves_the_outcome_totals_alone() {
        let q = QueueDurations::new(10);
        q.observe(labels("a", "m"), QueueOutcome::Dispatched, 0.1);
        q.observe(labels("b", "m"), QueueOutcome::Dispatched, 0.1);
        assert!(q.snapshot_forgetting(Duration::ZERO).is_empty());
        assert_eq!(q.totals(), vec![(1, "Dispatched", 2)]);
    }

    #[test]
    fn label_sets_past_the_cap_fold_into_the_overflow_model() {
        let q = QueueDurations::new(1);
        q.observe(labels("a", "m1"), QueueOutcome::Dispatched, 0.1);
        q.observe(labels("a", "m2"), QueueOutcome::Dispatched, 0.1);
        q.observe(labels("a", "m3"), QueueOutcome::Dispatched, 0.1);
        let s = q.snapshot();
        let total: u64 = s.iter().map(|s| s.duration.count()).sum();
        assert_eq!(total, 3, "nothing is lost");
        assert!(s
            .iter()
            .any(|s| s.model == OVERFLOW && s.duration.count() == 2));
    }
}
