//! Admitters: plugins that may refuse a request before any profile runs (see
//! `contracts::admitter`).

pub mod latency_slo_admitter;
pub mod probabilistic_admitter;

/// Upstream's `IsSheddable`: only requests of negative priority are ever refused.
fn sheddable(priority: i32) -> bool {
    priority < 0
}
