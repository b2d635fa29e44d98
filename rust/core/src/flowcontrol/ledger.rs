//! Capacity accounting and outcome counters, shared by producers, cancellers and the
//! dispatcher as atomics (no lock): per band and global queued requests/bytes. Counters one
//! side writes and the other reads sit on cache lines of their own (no false sharing between a
//! producer's reservation and the dispatcher's counts).

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A value alone on its cache lines (128 bytes: adjacent-line prefetch pairs them on x86).
#[derive(Default, Debug)]
#[repr(align(128))]
pub struct Padded<T>(pub T);

impl<T> Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

use super::config::OrderingPolicy;

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
        self.sub_many(1, size);
    }

    fn sub_many(&self, requests: u64, bytes: u64) {
        self.requests.fetch_sub(requests, Ordering::AcqRel);
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// Counters of the whole controller; `stats()` reads them.
#[derive(Default, Debug)]
pub struct Ledger {
    /// Producers add, the dispatcher and cancellers subtract.
    pub queued: Padded<Counters>,
    pub max_requests: u64,
    pub max_bytes: u64,
    /// Producers only.
    pub enqueued: Padded<AtomicU64>,
    /// Dispatched and not yet released by the caller.
    pub in_flight: Padded<AtomicU64>,
    // The rest: the dispatcher's (and cancellers'), rarely written by producers.
    pub dispatched: AtomicU64,
    pub rejected_capacity: AtomicU64,
    pub expired_ttl: AtomicU64,
    pub expired_no_endpoints: AtomicU64,
    pub cancelled: AtomicU64,
    pub evicted: AtomicU64,
    pub dispatch_cycles: AtomicU64,
    pub dispatch_cycle_nanos: AtomicU64,
    pub queue_wait_nanos: AtomicU64,
}

/// The producer-visible half of a band: its limits and counters.
#[derive(Debug)]
pub struct BandShared {
    pub priority: i32,
    pub max_requests: u64,
    pub max_bytes: u64,
    pub ordering: OrderingPolicy,
    pub counters: Padded<Counters>,
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
        self.release_many(1, size);
    }

    /// `requests` requests of `bytes` in all left the band's queues.
    pub fn release_many(&self, requests: u64, bytes: u64) {
        if requests > 0 {
            self.counters.sub_many(requests, bytes);
            self.ledger.queued.sub_many(requests, bytes);
        }
    }
}
