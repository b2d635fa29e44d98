//! Capacity accounting and outcome counters, shared by producers, cancellers and the
//! dispatcher as atomics (no lock): per band and global queued requests/bytes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::config::OrderingPolicy;
use super::outcomes::FlowMetrics;

#[derive(Default, Debug)]
pub struct Counters {
    pub requests: AtomicU64,
    pub bytes: AtomicU64,
}

impl Counters {
    /// Add one request of `size`; undo and return false when a limit (0 = none) is passed.
    fn try_add(&self, size: u64, max_requests: u64, max_bytes: u64) -> bool {
        let n = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        let b = self.bytes.fetch_add(size, Ordering::AcqRel) + size;
        if (max_requests > 0 && n > max_requests) || (max_bytes > 0 && b > max_bytes) {
            self.sub(size);
            return false;
        }
        true
    }

    fn sub(&self, size: u64) {
        self.requests.fetch_sub(1, Ordering::AcqRel);
        self.bytes.fetch_sub(size, Ordering::AcqRel);
    }
}

/// Counters of the whole controller; `stats()` reads them.
#[derive(Default, Debug)]
pub struct Ledger {
    pub queued: Counters,
    pub max_requests: u64,
    pub max_bytes: u64,
    pub enqueued: AtomicU64,
    pub dispatched: AtomicU64,
    pub rejected_capacity: AtomicU64,
    pub expired_ttl: AtomicU64,
    pub expired_no_endpoints: AtomicU64,
    pub cancelled: AtomicU64,
    pub evicted: AtomicU64,
    /// Dispatched and not yet released by the caller.
    pub in_flight: AtomicU64,
    pub dispatch_cycles: AtomicU64,
    pub dispatch_cycle_nanos: AtomicU64,
    pub queue_wait_nanos: AtomicU64,
    /// Per-flow gauges, enqueue and dispatch-cycle durations (upstream's families).
    pub metrics: FlowMetrics,
}

/// The producer-visible half of a band: its limits and counters.
#[derive(Debug)]
pub struct BandShared {
    pub priority: i32,
    pub max_requests: u64,
    pub max_bytes: u64,
    pub ordering: OrderingPolicy,
    pub counters: Counters,
    pub ledger: Arc<Ledger>,
}

impl BandShared {
    /// Reserve room for one request in the band and globally.
    pub fn try_reserve(&self, size: u64) -> bool {
        if !self
            .counters
            .try_add(size, self.max_requests, self.max_bytes)
        {
            return false;
        }
        let l = &self.ledger;
        if !l.queued.try_add(size, l.max_requests, l.max_bytes) {
            self.counters.sub(size);
            return false;
        }
        true
    }

    pub fn release(&self, size: u64) {
        self.counters.sub(size);
        self.ledger.queued.sub(size);
    }
}
