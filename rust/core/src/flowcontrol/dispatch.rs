//! The dispatch loop, alone on its thread: merge new arrivals, expire overdue requests, then
//! dispatch band by band for as long as saturation allows, handing outcomes over in batches.
//! It sleeps only when there is nothing it may do; producers and releases wake it.
//! A request with nothing to go to while the pool has endpoints (its subset hint names none of
//! them) is parked aside: it waits like a request for an empty pool, without holding up the
//! requests behind it, and goes back to its band when an endpoint of its subset appears.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::band::Band;
use super::controller::{CompletionSink, Dispatch, Dispatcher, Shared};
use super::item::{Completion, Item, Outcome, Rejection};
use super::usage_limits::BandPosition;

/// Dispatches between two hand-overs of completions, so callers hear early.
const BURST: usize = 256;
/// While blocked on something that changes by itself (metrics, endpoints), look again this often.
const BLOCKED_POLL: Duration = Duration::from_millis(1);
const IDLE_PARK: Duration = Duration::from_secs(1);
/// While requests are parked for want of candidates, look again at least this often (endpoint
/// changes also wake the loop through `notify`).
const PARKED_POLL: Duration = Duration::from_millis(20);
/// Before parking, watch for new work this long: a burst of arrivals then costs no futex wake
/// (and no context switch) per request on either side.
const SPIN: Duration = Duration::from_micros(30);

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

enum Progress {
    Idle,
    /// Saturated or no candidates; `poll` when only an outside change can unblock it.
    Blocked {
        poll: bool,
    },
    MoreToDo,
}

pub(crate) struct Loop<D: Dispatcher, S> {
    shared: Arc<Shared<D, S>>,
    /// Highest priority first.
    bands: BTreeMap<Reverse<i32>, Band<D::Request>>,
    by_deadline: BinaryHeap<ByDeadline<D::Request>>,
    /// Arrival order, for the no-endpoint TTL (the same for every request).
    arrivals: VecDeque<Arc<Item<D::Request>>>,
    spare: Vec<Arc<Item<D::Request>>>,
    /// Requests whose own candidates are missing while the pool has endpoints.
    parked: Vec<Arc<Item<D::Request>>>,
    out: Vec<Completion<D::Output>>,
}

impl<D: Dispatcher, S: CompletionSink<D::Output>> Loop<D, S> {
    pub fn new(shared: Arc<Shared<D, S>>) -> Self {
        Loop {
            shared,
            bands: BTreeMap::new(),
            by_deadline: BinaryHeap::new(),
            arrivals: VecDeque::new(),
            spare: Vec::new(),
            parked: Vec::new(),
            out: Vec::new(),
        }
    }

    pub fn run(&mut self) {
        loop {
            self.shared.notified.store(false, Ordering::SeqCst);
            let stopping = self.shared.shutdown.load(Ordering::SeqCst);
            self.take_inbox();
            if stopping {
                self.evict_all();
                self.flush();
                return;
            }
            let now = Instant::now();
            self.expire(now);
            self.unpark();
            let progress = self.dispatch_burst();
            self.flush();
            let wait = match progress {
                Progress::MoreToDo => continue,
                Progress::Blocked { poll: true } => BLOCKED_POLL,
                Progress::Blocked { poll: false } | Progress::Idle => IDLE_PARK,
            };
            let wait = if self.parked.is_empty() {
                wait
            } else {
                wait.min(PARKED_POLL)
            };
            let until_expiry = self.next_expiry().map(|t| t.saturating_duration_since(now));
            if self.spin_for_work() {
                continue;
            }
            std::thread::park_timeout(until_expiry.map_or(wait, |d| d.min(wait)));
        }
    }

    /// True when someone woke the dispatcher within `SPIN`.
    fn spin_for_work(&self) -> bool {
        let start = Instant::now();
        loop {
            for _ in 0..64 {
                if self.shared.notified.load(Ordering::Acquire) {
                    return true;
                }
                std::hint::spin_loop();
            }
            if start.elapsed() >= SPIN {
                return false;
            }
        }
    }

    fn take_inbox(&mut self) {
        for shard in &self.shared.inbox {
            std::mem::swap(&mut *shard.lock(), &mut self.spare);
            for item in self.spare.drain(..) {
                if !item.is_queued() {
                    continue; // cancelled before it reached a queue
                }
                self.by_deadline
                    .push(ByDeadline(item.deadline, item.clone()));
                if self
                    .shared
                    .dispatcher
                    .no_endpoint_ttl_applies(&item.request)
                {
                    self.arrivals.push_back(item.clone());
                }
                let config = &self.shared.config;
                self.bands
                    .entry(Reverse(item.priority))
                    .or_insert_with(|| Band::new(config.band(item.priority)))
                    .push(item);
            }
        }
        self.compact();
    }

    /// Index entries of items that ended stay until their deadline; rebuild when they dominate.
    fn compact(&mut self) {
        let live = self.shared.ledger.queued.requests.load(Ordering::Relaxed) as usize;
        let limit = 2 * live + 1024;
        if self.by_deadline.len() > limit {
            self.by_deadline.retain(|e| e.1.is_queued());
        }
        if self.arrivals.len() > limit {
            self.arrivals.retain(|i| i.is_queued());
        }
    }

    fn expire(&mut self, now: Instant) {
        let pool_empty = self.shared.dispatcher.pool_empty();
        while self.by_deadline.peek().is_some_and(|e| e.0 <= now) {
            let ByDeadline(_, item) = self.by_deadline.pop().expect("peeked");
            let why = if pool_empty || self.shared.dispatcher.no_candidates(&item.request) {
                Rejection::NoEndpoints
            } else {
                Rejection::TtlExpired
            };
            self.end(&item, why, now);
        }
        let ttl = self.shared.config.no_endpoint_ttl();
        // Parked requests wait for their subset as others wait for an empty pool.
        let mut parked = std::mem::take(&mut self.parked);
        parked.retain(|item| {
            if !item.is_queued() {
                return false;
            }
            let overdue = item.enqueued + ttl <= now
                && self
                    .shared
                    .dispatcher
                    .no_endpoint_ttl_applies(&item.request);
            if overdue {
                self.end(item, Rejection::NoEndpoints, now);
            }
            !overdue
        });
        self.parked = parked;
        while let Some(front) = self.arrivals.front() {
            if !front.is_queued() {
                self.arrivals.pop_front();
            } else if pool_empty && front.enqueued + ttl <= now {
                let item = self.arrivals.pop_front().expect("front");
                self.end(&item, Rejection::NoEndpoints, now);
            } else {
                break;
            }
        }
    }

    /// Parked requests whose subset has an endpoint now go back to the front of their band, in
    /// the order they left it.
    fn unpark(&mut self) {
        if self.parked.is_empty() {
            return;
        }
        let dispatcher = &self.shared.dispatcher;
        let config = &self.shared.config;
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

    fn next_expiry(&self) -> Option<Instant> {
        let ttl_deadline = self.by_deadline.peek().map(|e| e.0);
        let no_endpoint = if self.shared.dispatcher.pool_empty() {
            self.arrivals
                .front()
                .map(|i| i.enqueued + self.shared.config.no_endpoint_ttl())
        } else {
            None
        };
        match (ttl_deadline, no_endpoint) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
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

    fn dispatch_burst(&mut self) -> Progress {
        let started = Instant::now();
        let progress = self.dispatch_some(started);
        let l = &self.shared.ledger;
        let took = started.elapsed();
        l.dispatch_cycles.fetch_add(1, Ordering::Relaxed);
        l.dispatch_cycle_nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        l.metrics.dispatch_cycle.observe_duration(took);
        progress
    }

    fn dispatch_some(&mut self, now: Instant) -> Progress {
        let shared = &*self.shared;
        let l = &*shared.ledger;
        // Bands are only added while merging arrivals, so one ranking serves the whole burst.
        let ranks = shared.limits.ranks();
        let configured = &shared.config.priority_bands;
        let provisioned: Vec<i32> = if ranks {
            self.bands.keys().map(|p| p.0).collect()
        } else {
            Vec::new()
        };
        for _ in 0..BURST {
            let saturation = shared
                .detector
                .saturation(now, l.in_flight.load(Ordering::SeqCst));
            let ceilings = shared.limits.cycle(saturation);
            let mut dispatched = false;
            for (&Reverse(priority), band) in self.bands.iter_mut() {
                if !band.has_live() {
                    continue;
                }
                let at = if ranks {
                    let others = configured
                        .iter()
                        .map(|b| b.priority)
                        .filter(|p| !provisioned.contains(p))
                        .chain(provisioned.iter().copied());
                    BandPosition::among(priority, others)
                } else {
                    BandPosition::default()
                };
                if saturation >= ceilings.ceiling(at) {
                    // Head-of-line: lower bands wait too, no priority inversion.
                    return Progress::Blocked {
                        poll: shared.detector.changes_on_its_own()
                            || shared.limits.alternates(saturation),
                    };
                }
                let Some(item) = band.claim_next() else {
                    continue;
                };
                match shared.dispatcher.dispatch(&item.request) {
                    Dispatch::Done(output) => {
                        item.finish_claimed();
                        l.in_flight.fetch_add(1, Ordering::AcqRel);
                        l.dispatched.fetch_add(1, Ordering::Relaxed);
                        let waited = now.saturating_duration_since(item.enqueued);
                        l.queue_wait_nanos
                            .fetch_add(waited.as_nanos() as u64, Ordering::Relaxed);
                        self.out.push(Completion {
                            id: item.id,
                            outcome: Outcome::Dispatched(output),
                            waited,
                        });
                    }
                    Dispatch::NoCandidates => {
                        item.unclaim();
                        if shared.dispatcher.pool_empty()
                            || !shared.dispatcher.no_candidates(&item.request)
                        {
                            band.push_front(item);
                            return Progress::Blocked { poll: true };
                        }
                        // Only this request's candidates are missing: the rest may go.
                        self.parked.push(item);
                    }
                }
                dispatched = true;
                break;
            }
            if !dispatched {
                return Progress::Idle;
            }
        }
        Progress::MoreToDo
    }

    fn evict_all(&mut self) {
        let now = Instant::now();
        let mut all: Vec<_> = self.bands.values_mut().flat_map(|b| b.drain()).collect();
        all.extend(self.arrivals.drain(..));
        all.append(&mut self.parked);
        for item in all {
            self.end(&item, Rejection::ShuttingDown, now);
        }
        self.by_deadline.clear();
    }

    fn flush(&mut self) {
        if !self.out.is_empty() {
            self.shared.sink.deliver(&mut self.out);
            self.out.clear();
        }
    }
}
