//! The queues and the dispatch cycle: merge new arrivals, expire overdue requests, then dispatch
//! band by band for as long as saturation allows, handing outcomes over in batches.
//!
//! The queues sit behind one lock. The dispatch thread merges producers' arrivals and dispatches
//! them in batches (pipelined with the producers); a releasing caller that finds the lock free
//! runs a short cycle itself, so room made by a finished request is used without waking the
//! thread. The thread runs the rest: long bursts, retries while blocked, timers (TTL expiry).
//! The thread sleeps only when there is nothing it may do; whoever leaves work behind wakes it.
//! A request with nothing to go to while the pool has endpoints (its subset hint names none of
//! them) is parked aside: it waits like a request for an empty pool, without holding up the
//! requests behind it, and goes back to its band when an endpoint of its subset appears.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::band::Band;
use super::controller::{CompletionSink, Dispatch, Dispatcher, Shared, ALL_SHARDS};
use super::item::{Completion, Item, Outcome, Rejection};
use super::ledger::BandShared;
use super::outcomes::FlowGauge;
use super::usage_limits::BandPosition;

/// Dispatches between two hand-overs of completions on the dispatch thread, so callers hear early.
pub(crate) const BURST: usize = 256;
/// Dispatches a caller's own cycle may make before leaving the rest to the dispatch thread.
pub(crate) const INLINE_BURST: usize = 8;
/// While blocked on something that changes by itself (metrics, endpoints), look again this often.
const BLOCKED_POLL: Duration = Duration::from_millis(1);
const IDLE_PARK: Duration = Duration::from_secs(1);
/// While requests are parked for want of candidates, look again at least this often (endpoint
/// changes also wake the loop through `notify`).
const PARKED_POLL: Duration = Duration::from_millis(20);
/// Before parking, watch for new work this long: a burst of arrivals then costs no futex wake
/// (and no context switch) per request on either side.
const SPIN: Duration = Duration::from_micros(30);
/// While spinning, look for arrivals this often (what a queued request may wait for its batch).
const GATHER: Duration = Duration::from_micros(1);

struct ByDeadline<R>(Instant, Arc<Item<R>>);

impl<R> PartialEq for ByDeadline<R> {
    fn eq(&self, other: &Self) -> bool {
        (self.0, self.1.id) == (other.0, other.1.id)
    }
}
impl<R> Eq for ByDeadline<R> {}
impl<R> PartialOrd for ByDeadline<R> {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl<R> Ord for ByDeadline<R> {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (Reverse(self.0), Reverse(self.1.id)).cmp(&(Reverse(other.0), Reverse(other.1.id)))
    }
}

pub(crate) enum Progress {
    Idle,
    /// Saturated or no candidates; `poll` when only an outside change can unblock it.
    Blocked {
        poll: bool,
    },
    MoreToDo,
}

/// Everything queued, owned by whoever holds the lock around it.
pub(crate) struct Queues<D: Dispatcher> {
    /// Highest priority first.
    bands: BTreeMap<Reverse<i32>, Band<D::Request>>,
    /// Requests with the configured TTL to which the no-endpoint TTL applies, in arrival order:
    /// both of their deadlines follow that order, so expiry looks at the front only and an
    /// ended request is dropped when it reaches the front (no heap, no per-request search).
    fifo: VecDeque<Arc<Item<D::Request>>>,
    /// Every other request, by TTL deadline.
    by_deadline: BinaryHeap<ByDeadline<D::Request>>,
    /// Requests with their own TTL to which the no-endpoint TTL applies, in arrival order.
    arrivals: VecDeque<Arc<Item<D::Request>>>,
    spare: Vec<Arc<Item<D::Request>>>,
    /// Requests that left the queues, once dropped from the indexes: handed to a producer's
    /// inbox shard to drop (`Shard::ended`), or dropped here before the thread sleeps.
    pub ended: Vec<Arc<Item<D::Request>>>,
    /// Inbox shards handed ended requests since the dispatch thread last slept.
    handed: u32,
    /// Arrivals of one merge in runs of one gauge and fairness id, for the enqueue durations.
    merged: Vec<(Arc<FlowGauge>, Arc<str>, u64)>,
    /// Requests whose own candidates are missing while the pool has endpoints.
    parked: Vec<Arc<Item<D::Request>>>,
    out: Vec<Completion<D::Output>>,
    /// Queue capacity freed by this cycle's dispatches, handed back once per cycle.
    freed: Freed,
    /// Requests came in or were parked since the dispatch thread planned its sleep.
    pub changed: bool,
}

/// Capacity of dispatched requests not yet handed back, and their flow gauges not yet counted
/// down: one band and one gauge at a time (a burst mostly drains one band, often one flow),
/// the global count with the band. Each is a cache line the producers write too, so touching
/// it once per run instead of once per request saves a line transfer per request.
#[derive(Default)]
struct Freed {
    band: Option<Arc<BandShared>>,
    requests: u64,
    bytes: u64,
    gauge: Option<Arc<FlowGauge>>,
    gauge_requests: u64,
    gauge_bytes: u64,
}

impl Freed {
    fn add<R>(&mut self, item: &Item<R>) {
        let (band, gauge) = (item.band(), item.gauge());
        if !self.band.as_ref().is_some_and(|b| Arc::ptr_eq(b, band)) {
            self.settle_band();
            self.band = Some(band.clone());
        }
        self.requests += 1;
        self.bytes += item.size;
        if !self.gauge.as_ref().is_some_and(|g| Arc::ptr_eq(g, gauge)) {
            self.settle_gauge();
            self.gauge = Some(gauge.clone());
        }
        self.gauge_requests += 1;
        self.gauge_bytes += item.size;
    }

    fn settle(&mut self) {
        self.settle_band();
        self.settle_gauge();
    }

    fn settle_band(&mut self) {
        if let Some(band) = self.band.take() {
            band.release_many(
                std::mem::take(&mut self.requests),
                std::mem::take(&mut self.bytes),
            );
        }
    }

    fn settle_gauge(&mut self) {
        if let Some(gauge) = self.gauge.take() {
            gauge.leave_many(
                std::mem::take(&mut self.gauge_requests),
                std::mem::take(&mut self.gauge_bytes),
            );
        }
    }
}

fn by_arrival<R>(q: &mut VecDeque<Arc<Item<R>>>, item: Arc<Item<R>>) {
    // Producers on other threads merge shard by shard: keep the queue in arrival order.
    if q.back().is_none_or(|b| b.enqueued <= item.enqueued) {
        q.push_back(item);
    } else {
        let i = q.partition_point(|x| x.enqueued <= item.enqueued);
        q.insert(i, item);
    }
}

/// Take the ended requests off the front of `q` into `ended`.
fn take_ended<R>(q: &mut VecDeque<Arc<Item<R>>>, ended: &mut Vec<Arc<Item<R>>>) {
    while q.front().is_some_and(|i| !i.is_queued()) {
        ended.extend(q.pop_front());
    }
}

impl<D: Dispatcher> Queues<D> {
    pub fn new() -> Self {
        Queues {
            bands: BTreeMap::new(),
            fifo: VecDeque::new(),
            by_deadline: BinaryHeap::new(),
            arrivals: VecDeque::new(),
            spare: Vec::new(),
            ended: Vec::new(),
            handed: 0,
            merged: Vec::new(),
            parked: Vec::new(),
            out: Vec::new(),
            freed: Freed::default(),
            changed: false,
        }
    }

    /// Merge what producers left in the inbox shards named by `bits`.
    ///
    /// The enqueue-duration series (upstream's: the time its processor takes to insert a request
    /// into its queue) are observed here, each request its share of the merge: two clock reads
    /// per merge instead of two per request on the producer. Returns when the merge ended (the
    /// cycle that follows starts then), None when there was nothing to merge.
    pub fn take_inbox<S>(&mut self, s: &Shared<D, S>, bits: u32) -> Option<Instant> {
        self.merge(s, bits, false)
    }

    /// `take_inbox` on the dispatch thread: the requests that ended go to the shards merged.
    fn take_inbox_handing<S>(&mut self, s: &Shared<D, S>, bits: u32) -> Option<Instant> {
        self.merge(s, bits, true)
    }

    fn merge<S>(&mut self, s: &Shared<D, S>, bits: u32, hand: bool) -> Option<Instant> {
        let mut bits = bits & ALL_SHARDS;
        if bits == 0 {
            return None;
        }
        let start = Instant::now();
        let mut n = 0u64;
        while bits != 0 {
            let shard = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            {
                let mut inbox = s.inbox[shard].lock();
                std::mem::swap(&mut inbox.arrivals, &mut self.spare);
                if hand && !self.ended.is_empty() && inbox.ended.is_empty() {
                    self.handed |= 1 << shard;
                    std::mem::swap(&mut inbox.ended, &mut self.ended);
                    if self.ended.capacity() < inbox.empty.capacity() {
                        std::mem::swap(&mut inbox.empty, &mut self.ended);
                    }
                }
            }
            let mut spare = std::mem::take(&mut self.spare);
            for item in spare.drain(..) {
                n += 1;
                self.count_merged(&item);
                self.admit(s, item);
            }
            self.spare = spare;
        }
        if n == 0 {
            return None;
        }
        let end = Instant::now();
        let each = end.saturating_duration_since(start).as_secs_f64() / n as f64;
        for (gauge, flow, k) in self.merged.drain(..) {
            s.metrics.enqueued_into(&gauge, &flow, k, each);
        }
        Some(end)
    }

    fn count_merged(&mut self, item: &Item<D::Request>) {
        let (gauge, flow) = (item.gauge(), item.flow());
        match self.merged.last_mut() {
            Some((g, f, k)) if Arc::ptr_eq(g, gauge) && Arc::ptr_eq(f, flow) => *k += 1,
            _ => self.merged.push((gauge.clone(), flow.clone(), 1)),
        }
    }

    /// Take one request into the queues.
    pub fn admit<S>(&mut self, s: &Shared<D, S>, item: Arc<Item<D::Request>>) {
        if !item.is_queued() {
            return; // cancelled before it reached a queue
        }
        self.changed = true;
        let applies = s.dispatcher.no_endpoint_ttl_applies(&item.request);
        if item.default_ttl && applies {
            by_arrival(&mut self.fifo, item.clone());
        } else {
            self.by_deadline
                .push(ByDeadline(item.deadline, item.clone()));
            if applies {
                by_arrival(&mut self.arrivals, item.clone());
            }
        }
        let config = &s.config;
        self.bands
            .entry(Reverse(item.priority))
            .or_insert_with(|| Band::new(config.band(item.priority)))
            .push(item);
    }

    /// Expire, unpark, dispatch up to `burst` requests and hand the outcomes over; `merged` is
    /// when the merge just before it ended (the clock is read here otherwise).
    pub fn cycle<S: CompletionSink<D::Output>>(
        &mut self,
        s: &Shared<D, S>,
        burst: usize,
        merged: Option<Instant>,
    ) -> Progress {
        self.compact(s);
        let now = merged.unwrap_or_else(Instant::now);
        self.expire(s, now);
        self.unpark(s);
        let progress = self.dispatch_some(s, now, burst);
        let l = &s.ledger;
        let took = now.elapsed();
        l.dispatch_cycles.fetch_add(1, Ordering::Relaxed);
        l.dispatch_cycle_nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        s.metrics.dispatch_cycle.observe_duration(took);
        self.flush(s);
        progress
    }

    /// Whether the dispatch thread must look after what a caller's cycle left behind: more to
    /// dispatch, a block only polling ends, or requests whose deadlines it has not planned for.
    pub fn needs_thread<S>(&self, s: &Shared<D, S>, progress: &Progress) -> bool {
        match progress {
            Progress::MoreToDo | Progress::Blocked { poll: true } => true,
            Progress::Idle | Progress::Blocked { poll: false } => {
                self.changed && s.ledger.queued.requests.load(Ordering::SeqCst) > 0
            }
        }
    }

    /// How long the dispatch thread may sleep after a cycle that ended with `progress`.
    pub fn sleep_for<S>(&self, s: &Shared<D, S>, progress: &Progress) -> Duration {
        let wait = match progress {
            Progress::MoreToDo => Duration::ZERO,
            Progress::Blocked { poll: true } => BLOCKED_POLL,
            Progress::Blocked { poll: false } | Progress::Idle => IDLE_PARK,
        };
        let wait = if self.parked.is_empty() {
            wait
        } else {
            wait.min(PARKED_POLL)
        };
        let now = Instant::now();
        self.next_expiry(s)
            .map_or(wait, |t| wait.min(t.saturating_duration_since(now)))
    }

    /// Index entries of requests that ended stay until they reach the front or their deadline;
    /// rebuild when they dominate.
    fn compact<S>(&mut self, s: &Shared<D, S>) {
        let live = s.ledger.queued.requests.load(Ordering::Relaxed) as usize;
        let limit = 2 * live + 1024;
        if self.by_deadline.len() > limit {
            self.by_deadline.retain(|e| e.1.is_queued());
        }
        if self.fifo.len() > limit {
            self.fifo.retain(|i| i.is_queued());
        }
        if self.arrivals.len() > limit {
            self.arrivals.retain(|i| i.is_queued());
        }
    }

    fn expire<S>(&mut self, s: &Shared<D, S>, now: Instant) {
        let dispatcher = &s.dispatcher;
        let ttl = s.config.no_endpoint_ttl();
        // Asked at most once per cycle, and only when something could expire.
        let mut pool_empty = None;
        let mut is_empty = || *pool_empty.get_or_insert_with(|| dispatcher.pool_empty());
        while self.by_deadline.peek().is_some_and(|e| e.0 <= now) {
            let ByDeadline(_, item) = self.by_deadline.pop().expect("peeked");
            if !item.is_queued() {
                self.ended.push(item);
                continue;
            }
            let why = if is_empty() || dispatcher.no_candidates(&item.request) {
                Rejection::NoEndpoints
            } else {
                Rejection::TtlExpired
            };
            self.end(&item, why, now);
        }
        loop {
            take_ended(&mut self.fifo, &mut self.ended);
            let Some(front) = self.fifo.front() else {
                break;
            };
            let why = if front.deadline <= now {
                if is_empty() || dispatcher.no_candidates(&front.request) {
                    Rejection::NoEndpoints
                } else {
                    Rejection::TtlExpired
                }
            } else if front.enqueued + ttl <= now && is_empty() {
                Rejection::NoEndpoints
            } else {
                break;
            };
            let item = self.fifo.pop_front().expect("front");
            self.end(&item, why, now);
        }
        // Parked requests wait for their subset as others wait for an empty pool.
        if !self.parked.is_empty() {
            let mut parked = std::mem::take(&mut self.parked);
            parked.retain(|item| {
                if !item.is_queued() {
                    return false;
                }
                let overdue =
                    item.enqueued + ttl <= now && dispatcher.no_endpoint_ttl_applies(&item.request);
                if overdue {
                    self.end(item, Rejection::NoEndpoints, now);
                }
                !overdue
            });
            self.parked = parked;
        }
        loop {
            take_ended(&mut self.arrivals, &mut self.ended);
            match self.arrivals.front() {
                Some(front) if front.enqueued + ttl <= now && is_empty() => {
                    let item = self.arrivals.pop_front().expect("front");
                    self.end(&item, Rejection::NoEndpoints, now);
                }
                _ => break,
            }
        }
    }

    /// Parked requests whose subset has an endpoint now go back to the front of their band, in
    /// the order they left it.
    fn unpark<S>(&mut self, s: &Shared<D, S>) {
        if self.parked.is_empty() {
            return;
        }
        let dispatcher = &s.dispatcher;
        let config = &s.config;
        let mut still = Vec::with_capacity(self.parked.len());
        for item in std::mem::take(&mut self.parked).into_iter().rev() {
            if !item.is_queued() {
                continue;
            }
            if dispatcher.no_candidates(&item.request) {
                still.push(item);
                continue;
            }
            self.bands
                .entry(Reverse(item.priority))
                .or_insert_with(|| Band::new(config.band(item.priority)))
                .push_front(item);
        }
        still.reverse();
        self.parked = still;
    }

    fn next_expiry<S>(&self, s: &Shared<D, S>) -> Option<Instant> {
        let ttl = s.config.no_endpoint_ttl();
        let empty =
            (!self.fifo.is_empty() || !self.arrivals.is_empty()) && s.dispatcher.pool_empty();
        let fifo = self.fifo.front().map(|i| {
            if empty {
                i.deadline.min(i.enqueued + ttl)
            } else {
                i.deadline
            }
        });
        let arrivals = self
            .arrivals
            .front()
            .filter(|_| empty)
            .map(|i| i.enqueued + ttl);
        [self.by_deadline.peek().map(|e| e.0), fifo, arrivals]
            .into_iter()
            .flatten()
            .min()
    }

    fn end(&mut self, item: &Item<D::Request>, why: Rejection, now: Instant) {
        if !item.finish_queued() {
            return;
        }
        let l = item.ledger();
        let counter = match why {
            Rejection::TtlExpired => &l.expired_ttl,
            Rejection::NoEndpoints => &l.expired_no_endpoints,
            Rejection::ShuttingDown => &l.evicted,
            Rejection::Capacity => &l.rejected_capacity,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.out.push(Completion {
            id: item.id,
            outcome: Outcome::Rejected(why),
            waited: now.saturating_duration_since(item.enqueued),
        });
    }

    fn dispatch_some<S>(&mut self, s: &Shared<D, S>, now: Instant, burst: usize) -> Progress {
        let l = &*s.ledger;
        // Bands are only added while merging arrivals, so one ranking serves the whole burst.
        let ranks = s.limits.ranks();
        let configured = &s.config.priority_bands;
        let provisioned: Vec<i32> = if ranks {
            self.bands.keys().map(|p| p.0).collect()
        } else {
            Vec::new()
        };
        let position = |priority: i32| {
            if ranks {
                let others = configured
                    .iter()
                    .map(|b| b.priority)
                    .filter(|p| !provisioned.contains(p))
                    .chain(provisioned.iter().copied());
                BandPosition::among(priority, others)
            } else {
                BandPosition::default()
            }
        };
        let (mut dispatched, mut waited_nanos) = (0u64, 0u64);
        let mut progress = Progress::MoreToDo;
        // (blocked band, saturation, its ceilings) when head-of-line blocking ended the burst.
        let mut blocked = None;
        'burst: for _ in 0..burst {
            // This burst's dispatches count in flight from here; they are published once, at its
            // end (before their capacity is handed back, so an inline dispatch that finds the
            // queues empty sees them in flight; their callers hear of them only after that).
            let in_flight = l.in_flight.load(Ordering::SeqCst) + dispatched;
            let saturation = s.detector.saturation(now, in_flight);
            let ceilings = s.limits.cycle(saturation);
            let mut went = false;
            for (&Reverse(priority), band) in self.bands.iter_mut() {
                if !band.has_live() {
                    continue;
                }
                let at = position(priority);
                if saturation >= ceilings.ceiling(at) {
                    // Head-of-line: lower bands wait too, no priority inversion.
                    progress = Progress::Blocked {
                        poll: s.detector.changes_on_its_own() || s.limits.alternates(saturation),
                    };
                    blocked = Some((priority, saturation, ceilings));
                    break 'burst;
                }
                let Some(item) = band.claim_next() else {
                    continue;
                };
                match s.dispatcher.dispatch(&item.request) {
                    Dispatch::Done(output) => {
                        item.finish_dispatched();
                        self.freed.add(&item);
                        dispatched += 1;
                        let waited = now.saturating_duration_since(item.enqueued);
                        waited_nanos += waited.as_nanos() as u64;
                        self.out.push(Completion {
                            id: item.id,
                            outcome: Outcome::Dispatched(output),
                            waited,
                        });
                    }
                    Dispatch::NoCandidates => {
                        item.unclaim();
                        if s.dispatcher.pool_empty() || !s.dispatcher.no_candidates(&item.request) {
                            band.push_front(item);
                            progress = Progress::Blocked { poll: true };
                            break 'burst;
                        }
                        // Only this request's candidates are missing: the rest may go.
                        self.parked.push(item);
                        self.changed = true;
                    }
                }
                went = true;
                break;
            }
            if !went {
                progress = Progress::Idle;
                break;
            }
        }
        if let (Some((priority, saturation, ceilings)), Some(ev)) = (blocked, &s.eviction) {
            // Demand: this band and those below it that hold requests (upstream's trigger).
            let demand: Vec<(i32, f64)> = (self.bands.range_mut(Reverse(priority)..))
                .filter_map(|(p, b)| b.has_live().then_some(p.0))
                .map(|p| (p, ceilings.ceiling(position(p))))
                .collect();
            ev.on_blocked(now, saturation, demand);
            if ev.busy() {
                progress = Progress::Blocked { poll: true }; // a grace or timeout ends by itself
            }
        }
        if dispatched > 0 {
            l.in_flight.fetch_add(dispatched, Ordering::SeqCst);
        }
        self.freed.settle();
        if dispatched > 0 {
            l.dispatched.fetch_add(dispatched, Ordering::Relaxed);
            l.queue_wait_nanos
                .fetch_add(waited_nanos, Ordering::Relaxed);
        }
        progress
    }

    pub fn evict_all(&mut self) {
        let now = Instant::now();
        let mut all: Vec<_> = self.bands.values_mut().flat_map(|b| b.drain()).collect();
        all.extend(self.fifo.drain(..));
        all.extend(self.arrivals.drain(..));
        all.append(&mut self.parked);
        all.extend(self.by_deadline.drain().map(|e| e.1));
        for item in all {
            self.end(&item, Rejection::ShuttingDown, now);
        }
    }

    pub fn flush<S: CompletionSink<D::Output>>(&mut self, s: &Shared<D, S>) {
        if !self.out.is_empty() {
            s.sink.deliver(&mut self.out);
            self.out.clear();
        }
    }
}

/// The dispatch thread: cycles while there is work, sleeps until woken or a deadline is due.
pub(crate) fn run<D: Dispatcher, S: CompletionSink<D::Output>>(s: Arc<Shared<D, S>>) {
    loop {
        let stopping = s.shutdown.load(Ordering::SeqCst);
        let mut q = s.queues.lock();
        // Taken under the lock, as callers' cycles do: whoever merges an inbox shard holds the
        // queues, so a request never overtakes one that was handed in before it.
        let bits = s.pending.swap(0, Ordering::AcqRel);
        if stopping {
            q.take_inbox(&s, ALL_SHARDS);
            q.evict_all();
            q.flush(&s);
            return;
        }
        let merged = q.take_inbox_handing(&s, bits);
        let progress = q.cycle(&s, BURST, merged);
        q.changed = false;
        let wait = q.sleep_for(&s, &progress);
        if merged.is_none() {
            q.ended.clear(); // no producer came to hand them to (a backlog draining, or idle)
        }
        drop(q);
        if matches!(progress, Progress::MoreToDo) || spin_for_work(&s) {
            continue;
        }
        take_back_ended(&s);
        std::thread::park_timeout(wait);
    }
}

/// Before the dispatch thread sleeps: drop the ended requests still waiting in inbox shards for
/// producers that did not come back (they would hold their requests' memory meanwhile).
fn take_back_ended<D: Dispatcher, S>(s: &Shared<D, S>) {
    let mut handed = std::mem::take(&mut s.queues.lock().handed);
    while handed != 0 {
        let shard = handed.trailing_zeros() as usize;
        handed &= handed - 1;
        let ended = std::mem::take(&mut s.inbox[shard].lock().ended);
        drop(ended);
    }
}

/// True when someone woke the dispatcher within `SPIN`. Arrivals are looked for no more often
/// than every `GATHER`: a producer then hands in a run of requests at the cost of one (one
/// signal, the inbox and its lock staying in the producer's cache meanwhile) instead of
/// trading those cache lines with the dispatcher per request.
fn spin_for_work<D: Dispatcher, S>(s: &Shared<D, S>) -> bool {
    let start = Instant::now();
    loop {
        for _ in 0..16 {
            std::hint::spin_loop();
        }
        let spun = start.elapsed();
        if spun >= GATHER && s.pending.load(Ordering::Acquire) != 0 {
            return true;
        }
        if spun >= SPIN {
            return false;
        }
    }
}
