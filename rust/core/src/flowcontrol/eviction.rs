//! In-flight eviction (`flowControl.enableEviction: true`), upstream's demand-driven
//! reclamation: when a band is held back by saturation while requests wait in it, dispatched
//! requests of strictly lower priority are revoked to make room.
//!
//! - Tracking: every request flow control dispatched is tracked while it runs (`track` /
//!   `untrack`); `sheddable-eviction-filter` admits only sheddable ones (priority < 0) as victims,
//!   and `priority-then-time-eviction-order-policy` orders them lowest priority first, then the
//!   most recently dispatched first (least sunk KV-cache work). Upstream wires exactly these two
//!   policies; declaring them under `plugins:` changes nothing, as there.
//! - Trigger: on a head-of-line block, a band at or below the blocked one whose priority is above
//!   the next victim's, whose ceiling is above 0 and reached, and which holds queued requests, is
//!   demand; the first such band drives one decision.
//! - Sizing: `n = max(1, ceil((saturation - ceiling - pending) / credit))` with
//!   `credit = saturation / tracked`, capped at 2 per decision and at the evictable count; no
//!   victim at or above the demand band's priority is taken.
//! - Pacing: stop-and-wait. A new decision may run only when every revocation is confirmed (its
//!   stream ended) and a grace has passed since (the gauge's lag: 10 ms for the concurrency
//!   detector, refresh + staleness + 250 ms for scraped metrics); a revocation unconfirmed after
//!   10 s counts as timed out.
//!
//! A victim's `revoke` callback ends its stream: the ext_proc server answers it 429 with
//! `x-llm-d-request-dropped-reason: evicted`, and its end (`untrack`) confirms the revocation.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::stats::Histogram;

/// Ends a victim's stream; called once, outside the tracker's lock.
pub type Revoke = Box<dyn FnOnce() + Send>;

/// Upstream's fixed revocation cap per decision.
pub const MAX_REVOCATIONS_PER_DECISION: usize = 2;
/// Upstream's confirmation timeout.
pub const CONFIRMATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Confirmation-to-visibility lag of the concurrency detector (its count drops with the stream).
pub const LEADING_SENSOR_GRACE: Duration = Duration::from_millis(10);
/// Engine abort and KV release before scraped metrics can show freed room.
pub const ENGINE_RECLAIM_BUDGET: Duration = Duration::from_millis(250);
/// Upstream's revocation confirmation histogram buckets (seconds): Prometheus' defaults.
pub const CONFIRMATION_BUCKETS: &[f64] = crate::stats::DEFAULT_BUCKETS;

/// The reason header value of an evicted request, as upstream's ImmediateResponse evictor sets it.
pub const EVICTED_REASON: &str = "evicted";
/// The body upstream answers an evicted request with (status 429).
pub const EVICTED_MESSAGE: &str = "request evicted by flow control";

/// `sheddable-eviction-filter`: only sheddable requests (priority < 0) may be evicted.
pub fn sheddable(priority: i32) -> bool {
    priority < 0
}

/// The reclamation counters, for metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct EvictionStats {
    /// Revocations issued, by the demand band's priority.
    pub issued: Vec<(i32, u64)>,
    pub confirmed: u64,
    pub timed_out: u64,
    /// Last computed deficit, in saturation units.
    pub reclaim_target: f64,
    /// Outstanding and cooling debits.
    pub pending_reclaim: f64,
    pub confirmation: Histogram,
    /// Tracked requests, and how many of them may be evicted.
    pub tracked: u64,
    pub evictable: u64,
}

struct Tracked {
    priority: i32,
    revoke: Option<Revoke>,
}

struct Revocation {
    credit: f64,
    issued_at: Instant,
}

struct State {
    next: u64,
    tracked: HashMap<u64, Tracked>,
    /// Victims in eviction order: lowest priority, then newest dispatch first (tokens grow
    /// with dispatch order).
    victims: BTreeSet<(i32, Reverse<u64>)>,
    outstanding: HashMap<u64, Revocation>,
    /// Confirmed revocations' debits, until their grace ends.
    cooling: Vec<(f64, Instant)>,
    pending_reclaim: f64,
    reclaim_target: f64,
    issued: BTreeMap<i32, u64>,
    confirmed: u64,
    timed_out: u64,
    confirmation: Histogram,
}

/// Tracks dispatched requests and decides when, and which, to revoke.
pub struct Eviction {
    grace: Duration,
    timeout: Duration,
    state: Mutex<State>,
}

impl Eviction {
    pub fn new(grace: Duration, timeout: Duration) -> Eviction {
        Eviction {
            grace,
            timeout,
            state: Mutex::new(State {
                next: 1,
                tracked: HashMap::new(),
                victims: BTreeSet::new(),
                outstanding: HashMap::new(),
                cooling: Vec::new(),
                pending_reclaim: 0.0,
                reclaim_target: 0.0,
                issued: BTreeMap::new(),
                confirmed: 0,
                timed_out: 0,
                confirmation: Histogram::new(CONFIRMATION_BUCKETS),
            }),
        }
    }

    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// A request was dispatched: track it; `revoke` ends it if it is chosen. Returns its token.
    pub fn track(&self, priority: i32, revoke: Revoke) -> u64 {
        let mut s = self.state.lock();
        let token = s.next;
        s.next += 1;
        if sheddable(priority) {
            s.victims.insert((priority, Reverse(token)));
        }
        s.tracked.insert(
            token,
            Tracked {
                priority,
                revoke: Some(revoke),
            },
        );
        token
    }

    /// The tracked request ended (normally, by error, by eviction): a revocation of it is
    /// confirmed now.
    pub fn untrack(&self, token: u64, now: Instant) {
        let mut s = self.state.lock();
        if let Some(t) = s.tracked.remove(&token) {
            s.victims.remove(&(t.priority, Reverse(token)));
        }
        if let Some(r) = s.outstanding.remove(&token) {
            s.confirmed += 1;
            let took = now.saturating_duration_since(r.issued_at).as_secs_f64();
            s.confirmation.observe(took);
            s.cooling.push((r.credit, now + self.grace));
        }
    }

    /// Revocations outstanding or cooling: the dispatcher must look again by itself (a grace
    /// ends, a timeout passes) while it is blocked.
    pub fn busy(&self) -> bool {
        let s = self.state.lock();
        !s.outstanding.is_empty() || !s.cooling.is_empty()
    }

    /// Upstream's trigger on a head-of-line block. `bands` are the bands from the blocked one
    /// down, highest first, that hold queued requests, with their ceilings. Returns how many
    /// revocations were issued.
    pub fn on_blocked(
        &self,
        now: Instant,
        saturation: f64,
        bands: impl IntoIterator<Item = (i32, f64)>,
    ) -> usize {
        let mut revoked = Vec::new();
        {
            let mut s = self.state.lock();
            if !self.gate_open(&mut s, now) {
                return 0;
            }
            let Some(&(victim, _)) = s.victims.first() else {
                return 0;
            };
            for (priority, ceiling) in bands {
                if priority <= victim {
                    break;
                }
                // A zero ceiling never dispatches, however much is reclaimed.
                if ceiling <= 0.0 || saturation < ceiling {
                    continue;
                }
                self.reclaim(&mut s, now, saturation, ceiling, priority, &mut revoked);
                break;
            }
        }
        let n = revoked.len();
        for revoke in revoked {
            revoke();
        }
        n
    }

    /// Stop-and-wait: open once nothing is outstanding or cooling (timeouts and ended graces
    /// retired first).
    fn gate_open(&self, s: &mut State, now: Instant) -> bool {
        let timeout = self.timeout;
        let expired: Vec<u64> = s
            .outstanding
            .iter()
            .filter(|(_, r)| now.saturating_duration_since(r.issued_at) >= timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let r = s.outstanding.remove(&id).expect("listed");
            s.timed_out += 1;
            s.cooling.push((r.credit, now + self.grace));
        }
        let mut released = 0.0;
        s.cooling.retain(|&(credit, until)| {
            let keep = now < until;
            if !keep {
                released += credit;
            }
            keep
        });
        s.pending_reclaim = (s.pending_reclaim - released).max(0.0);
        s.outstanding.is_empty() && s.cooling.is_empty()
    }

    fn reclaim(
        &self,
        s: &mut State,
        now: Instant,
        saturation: f64,
        ceiling: f64,
        demand: i32,
        revoked: &mut Vec<Revoke>,
    ) {
        let (tracked, evictable) = (s.tracked.len(), s.victims.len());
        if tracked == 0 || evictable == 0 {
            return;
        }
        let credit = saturation / tracked as f64;
        if !(credit.is_finite() && credit > 0.0) {
            return;
        }
        let target = saturation - ceiling;
        s.reclaim_target = target;
        let net = target - s.pending_reclaim;
        if net < 0.0 || (net == 0.0 && s.pending_reclaim > 0.0) {
            return;
        }
        // Blocked at saturation >= ceiling: at the boundary (net 0) one revocation unblocks.
        let n = ((net / credit).ceil() as usize)
            .clamp(1, MAX_REVOCATIONS_PER_DECISION)
            .min(evictable);
        for _ in 0..n {
            let Some(&(priority, Reverse(token))) = s.victims.first() else {
                break;
            };
            if priority >= demand {
                break; // no victim at or above the band it makes room for
            }
            s.victims.pop_first();
            let Some(revoke) = s.tracked.get_mut(&token).and_then(|t| t.revoke.take()) else {
                continue;
            };
            s.outstanding.insert(
                token,
                Revocation {
                    credit,
                    issued_at: now,
                },
            );
            s.pending_reclaim += credit;
            *s.issued.entry(demand).or_default() += 1;
            revoked.push(revoke);
        }
    }

    pub fn stats(&self) -> EvictionStats {
        let s = self.state.lock();
        EvictionStats {
            issued: s.issued.iter().map(|(p, n)| (*p, *n)).collect(),
            confirmed: s.confirmed,
            timed_out: s.timed_out,
            reclaim_target: s.reclaim_target,
            pending_reclaim: s.pending_reclaim,
            confirmation: s.confirmation.clone(),
            tracked: s.tracked.len() as u64,
            evictable: s.victims.len() as u64,
        }
    }
}

#[cfg(test)]
#[path = "eviction_tests.rs"]
mod tests;
