//! A pool's scale-from-zero grace period as the request path applies it: while the activator
//! manages the pool, a request that has nothing to go to waits for exactly the grace period
//! (its TTL; flow control's global TTLs do not cut it short) and then fails with the
//! activator's message. Counts what the activator decides on, without a call per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;

#[derive(Debug)]
struct Grace {
    period: Duration,
    message: Arc<str>,
}

#[derive(Debug, Default)]
pub struct ScaleFromZero {
    grace: ArcSwapOption<Grace>,
    counts: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    holding: AtomicU64,
    held: AtomicU64,
    expired: AtomicU64,
}

/// One request held for the grace period; dropping it ends the hold.
#[derive(Debug)]
pub struct Hold {
    counts: Arc<Counts>,
    pub period: Duration,
    pub message: Arc<str>,
}

impl Hold {
    /// The request failed at the end of its grace period.
    pub fn expired(self) {
        self.counts.expired.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.counts.holding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// (requests held now, held in total, failed at the grace period in total).
pub type HoldCounts = (u64, u64, u64);

impl ScaleFromZero {
    /// Managed: hold requests for `period`, failing them with `message`; None: not managed.
    pub fn set(&self, grace: Option<(Duration, String)>) {
        self.grace.store(grace.map(|(period, message)| {
            Arc::new(Grace {
                period,
                message: Arc::from(message),
            })
        }));
    }

    /// A hold for a request with nothing to go to, when the pool is managed.
    pub fn hold(&self) -> Option<Hold> {
        let grace = self.grace.load_full()?;
        self.counts.holding.fetch_add(1, Ordering::Relaxed);
        self.counts.held.fetch_add(1, Ordering::Relaxed);
        Some(Hold {
            counts: self.counts.clone(),
            period: grace.period,
            message: grace.message.clone(),
        })
    }

    pub fn counts(&self) -> HoldCounts {
        let c = &self.counts;
        (
            c.holding.load(Ordering::Relaxed),
            c.held.load(Ordering::Relaxed),
            c.expired.load(Ordering::Relaxed),
        )
    }
}
