//! A queued request and its one-way life: queued → (claimed →) exactly one terminal outcome.
//! Whoever wins the state CAS owns the outcome, so cancellation never scans a queue: the
//! cancelled item stays behind as a tombstone the dispatcher drops when it reaches it.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ledger::{BandShared, Ledger};
use super::outcomes::FlowGauge;

const QUEUED: u8 = 0;
const CLAIMED: u8 = 1;
const DONE: u8 = 2;
const CANCELLED: u8 = 3;

/// Why a request left the queue without being dispatched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Band or global capacity full at enqueue (429 `rejected-saturated`).
    Capacity,
    /// Waited past its TTL (429 `rejected-ttl-expired`).
    TtlExpired,
    /// Capacity full or TTL passed while the pool had no endpoints (503 `rejected-no-endpoints`).
    NoEndpoints,
    /// The controller shut down with the request queued (503 `rejected-shutting-down`).
    ShuttingDown,
}

impl Rejection {
    pub fn status(self) -> u16 {
        match self {
            Rejection::Capacity | Rejection::TtlExpired => 429,
            Rejection::NoEndpoints | Rejection::ShuttingDown => 503,
        }
    }

    /// The upstream `x-llm-d-request-dropped-reason` value.
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::Capacity => "rejected-saturated",
            Rejection::TtlExpired => "rejected-ttl-expired",
            Rejection::NoEndpoints => "rejected-no-endpoints",
            Rejection::ShuttingDown => "rejected-shutting-down",
        }
    }
}

/// What the dispatcher tells a waiting caller.
#[derive(Debug)]
pub enum Outcome<O> {
    Dispatched(O),
    Rejected(Rejection),
}

#[derive(Debug)]
pub struct Completion<O> {
    pub id: u64,
    pub outcome: Outcome<O>,
    /// Time spent queued.
    pub waited: Duration,
}

pub struct Item<R> {
    pub id: u64,
    /// The fairness id when its gauge is not the flow's own (the overflow gauge).
    own_flow: Option<Arc<str>>,
    pub priority: i32,
    pub size: u64,
    pub enqueued: Instant,
    /// TTL deadline.
    pub deadline: Instant,
    /// The deadline is the configured default TTL's (not the request's own).
    pub default_ttl: bool,
    /// Key of EDF / SLO ordering.
    pub order_deadline: Instant,
    pub request: R,
    state: AtomicU8,
    /// Its flow's queue gauges (counted in on enqueue, out when it leaves the queue), its band
    /// and usually its fairness id.
    gauge: Arc<FlowGauge>,
}

impl<R> Item<R> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: u64,
        own_flow: Option<Arc<str>>,
        priority: i32,
        size: u64,
        enqueued: Instant,
        deadline: Instant,
        default_ttl: bool,
        order_deadline: Instant,
        request: R,
        gauge: Arc<FlowGauge>,
    ) -> Self {
        Item {
            id,
            own_flow,
            priority,
            size,
            enqueued,
            deadline,
            default_ttl,
            order_deadline,
            request,
            state: AtomicU8::new(QUEUED),
            gauge,
        }
    }

    /// Its fairness id.
    pub fn flow(&self) -> &Arc<str> {
        self.own_flow.as_ref().unwrap_or(&self.gauge.fairness_id)
    }

    pub fn is_queued(&self) -> bool {
        self.state.load(Ordering::Acquire) == QUEUED
    }

    /// Dispatcher takes the item to try it; only it can give it back with `unclaim`.
    pub(crate) fn claim(&self) -> bool {
        self.state
            .compare_exchange(QUEUED, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    pub(crate) fn unclaim(&self) {
        self.state.store(QUEUED, Ordering::Release);
    }

    /// A claimed item was dispatched; the dispatcher hands its capacity back (`band`) and counts
    /// it out of its gauge (`gauge`), in a batch.
    pub(crate) fn finish_dispatched(&self) {
        self.state.store(DONE, Ordering::Release);
    }

    pub(crate) fn band(&self) -> &Arc<BandShared> {
        self.gauge.band()
    }

    pub(crate) fn gauge(&self) -> &Arc<FlowGauge> {
        &self.gauge
    }

    /// End a queued item (expiry, eviction); false when someone else ended it first.
    pub(crate) fn finish_queued(&self) -> bool {
        let won = self
            .state
            .compare_exchange(QUEUED, DONE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if won {
            self.leave();
        }
        won
    }

    /// Remove the request if it is still queued; false when it is being or was dispatched
    /// or otherwise ended (its outcome is then delivered as usual).
    pub fn cancel(&self) -> bool {
        let won = self
            .state
            .compare_exchange(QUEUED, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if won {
            self.leave();
            self.ledger().cancelled.fetch_add(1, Ordering::Relaxed);
        }
        won
    }

    pub(crate) fn ledger(&self) -> &Ledger {
        &self.band().ledger
    }

    fn leave(&self) {
        self.band().release(self.size);
        self.gauge.leave(self.size);
    }
}
