//! Usage-limit policies (upstream's `UsageLimitPolicy`): one dispatch ceiling per priority band,
//! compared with pool saturation; a band whose ceiling is at or below saturation waits.
//!
//! - `static-usage-limit-policy`: one `threshold` for every band.
//! - `priority-holdback-policy`: ceilings from `maxCeiling` (highest band) down to `minCeiling`
//!   (lowest), linearly by rank (`domain: rank`) or by priority value (`domain: value`); one band
//!   alone gets `maxCeiling`.
//! - `soft-reflective-ceiling-policy`: the highest band is never gated below saturation 1.0;
//!   band i of N reflects at `1 - i·saturation/(N-1)`. A band past its reflective ceiling is open
//!   on one dispatch cycle in `round(saturation/(1-saturation))` (one tick shared by every band, so
//!   gating stays monotone across ranks), and closed for good at saturation ≥ 1.
//!
//! The dispatch loop asks [`UsageLimiter::cycle`] once per dispatch cycle (that advances the
//! soft-reflective tick); the caller-thread fast path asks [`UsageLimiter::peek`], which never
//! advances it and counts an alternating band as closed (such a request queues and the loop
//! spreads it).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;

/// How holdback maps a band to its place between `maxCeiling` and `minCeiling`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HoldbackDomain {
    /// Equal steps by rank: `c_i = max - i·(max-min)/(N-1)`.
    #[default]
    Rank,
    /// Proportional to the priority value within the active range.
    Value,
}

/// When a band may dispatch: while pool saturation is below its ceiling.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum UsageLimit {
    /// One ceiling for every band.
    #[serde(rename = "static-usage-limit-policy")]
    Static {
        #[serde(default = "one")]
        ceiling: f64,
    },
    #[serde(rename = "priority-holdback-policy", rename_all = "camelCase")]
    PriorityHoldback {
        min_ceiling: f64,
        #[serde(default = "one")]
        max_ceiling: f64,
        #[serde(default)]
        domain: HoldbackDomain,
    },
    #[serde(rename = "soft-reflective-ceiling-policy")]
    SoftReflectiveCeiling,
}

impl Default for UsageLimit {
    fn default() -> Self {
        UsageLimit::Static { ceiling: 1.0 }
    }
}

impl UsageLimit {
    /// Upstream's bounds, checked when the config loads.
    pub fn validate(&self) -> Result<(), String> {
        if let UsageLimit::PriorityHoldback {
            min_ceiling,
            max_ceiling,
            ..
        } = *self
        {
            if !(0.0..1.0).contains(&min_ceiling) {
                return Err(format!(
                    "priority-holdback-policy: minCeiling must be in [0.0, 1.0), got {min_ceiling}"
                ));
            }
            if !(max_ceiling > 0.0 && max_ceiling <= 1.0) {
                return Err(format!(
                    "priority-holdback-policy: maxCeiling must be in (0.0, 1.0], got {max_ceiling}"
                ));
            }
            if min_ceiling >= max_ceiling {
                return Err(format!(
                    "priority-holdback-policy: minCeiling ({min_ceiling}) must be below maxCeiling ({max_ceiling})"
                ));
            }
        }
        Ok(())
    }
}

fn one() -> f64 {
    1.0
}

/// Where a band stands among the bands ranked together (0 = the highest priority).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BandPosition {
    pub rank: usize,
    pub bands: usize,
    pub priority: i32,
    pub highest: i32,
    pub lowest: i32,
}

impl BandPosition {
    /// `priority`'s position among `others` (its own band may or may not be among them).
    pub fn among(priority: i32, others: impl Iterator<Item = i32>) -> BandPosition {
        let mut p = BandPosition {
            rank: 0,
            bands: 1,
            priority,
            highest: priority,
            lowest: priority,
        };
        for o in others.filter(|&o| o != priority) {
            p.bands += 1;
            p.rank += usize::from(o > priority);
            p.highest = p.highest.max(o);
            p.lowest = p.lowest.min(o);
        }
        p
    }
}

/// A usage-limit policy with its state (the soft-reflective tick).
#[derive(Debug, Default)]
pub struct UsageLimiter {
    policy: UsageLimit,
    tick: AtomicU64,
}

/// The ceilings of one dispatch cycle at one saturation reading.
#[derive(Debug, Clone, Copy)]
pub struct Ceilings<'a> {
    policy: &'a UsageLimit,
    saturation: f64,
    /// Soft-reflective: whether bands past their reflective ceiling are open this cycle.
    open: bool,
}

impl UsageLimiter {
    pub fn new(policy: UsageLimit) -> UsageLimiter {
        UsageLimiter {
            policy,
            tick: AtomicU64::new(0),
        }
    }

    pub fn policy(&self) -> &UsageLimit {
        &self.policy
    }

    /// Whether a ceiling depends on the band's place; the static policy's callers skip ranking.
    pub fn ranks(&self) -> bool {
        !matches!(self.policy, UsageLimit::Static { .. })
    }

    /// One dispatch cycle's ceilings; advances the shared tick when some band alternates.
    pub fn cycle(&self, saturation: f64) -> Ceilings<'_> {
        let mut open = false;
        if matches!(self.policy, UsageLimit::SoftReflectiveCeiling) && alternating(saturation) {
            // The 1e-9 keeps the period finite just below saturation 1.0.
            let period = (saturation / (1.0 - saturation + 1e-9)).round().max(1.0) as u64;
            open = (self.tick.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(period);
        }
        Ceilings {
            policy: &self.policy,
            saturation,
            open,
        }
    }

    /// Ceilings without advancing any state: alternating bands count as closed.
    pub fn peek(&self, saturation: f64) -> Ceilings<'_> {
        Ceilings {
            policy: &self.policy,
            saturation,
            open: false,
        }
    }

    /// Whether a band may be held by the alternation alone (then waiting must be retried even
    /// when nothing else changes).
    pub fn alternates(&self, saturation: f64) -> bool {
        matches!(self.policy, UsageLimit::SoftReflectiveCeiling) && alternating(saturation)
    }
}

/// Some band is at or past its reflective ceiling (the lowest band's is `1 - saturation`).
fn alternating(saturation: f64) -> bool {
    saturation >= 1.0 - saturation && saturation < 1.0
}

impl Ceilings<'_> {
    pub fn ceiling(&self, at: BandPosition) -> f64 {
        match *self.policy {
            UsageLimit::Static { ceiling } => ceiling,
            UsageLimit::PriorityHoldback {
                min_ceiling,
                max_ceiling,
                domain,
            } => {
                if at.bands <= 1 {
                    return max_ceiling;
                }
                match domain {
                    HoldbackDomain::Rank => {
                        let step = (max_ceiling - min_ceiling) / (at.bands - 1) as f64;
                        max_ceiling - at.rank as f64 * step
                    }
                    HoldbackDomain::Value => {
                        let range = f64::from(at.highest) - f64::from(at.lowest);
                        if range == 0.0 {
                            return max_ceiling;
                        }
                        let r = (f64::from(at.priority) - f64::from(at.lowest)) / range;
                        min_ceiling + r * (max_ceiling - min_ceiling)
                    }
                }
            }
            UsageLimit::SoftReflectiveCeiling => {
                if at.rank == 0 || at.bands <= 1 {
                    return 1.0;
                }
                let s = self.saturation;
                let reflective = 1.0 - at.rank as f64 * s / (at.bands - 1) as f64;
                if s < reflective || (s < 1.0 && self.open) {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(rank: usize, bands: usize) -> BandPosition {
        BandPosition {
            rank,
            bands,
            priority: -(rank as i32),
            highest: 0,
            lowest: -(bands as i32 - 1),
        }
    }

    fn holdback(min: f64, max: f64, domain: HoldbackDomain) -> UsageLimiter {
        UsageLimiter::new(UsageLimit::PriorityHoldback {
            min_ceiling: min,
            max_ceiling: max,
            domain,
        })
    }

    #[test]
    fn holdback_by_rank_steps_evenly_from_max_to_min() {
        let l = holdback(0.4, 0.9, HoldbackDomain::Rank);
        let c = l.cycle(0.0);
        let got: Vec<f64> = (0..3).map(|r| c.ceiling(pos(r, 3))).collect();
        for (g, want) in got.iter().zip([0.9, 0.65, 0.4]) {
            assert!((g - want).abs() < 1e-9, "{got:?}");
        }
        assert_eq!(c.ceiling(pos(0, 1)), 0.9, "one band: no holdback");
    }

    #[test]
    fn holdback_by_value_follows_priority_spacing() {
        let l = holdback(0.2, 1.0, HoldbackDomain::Value);
        let c = l.cycle(0.5);
        let at = |priority, rank| BandPosition {
            rank,
            bands: 3,
            priority,
            highest: 10,
            lowest: 0,
        };
        assert!((c.ceiling(at(10, 0)) - 1.0).abs() < 1e-9);
        // 9 of 10 up the range: close to the top, unlike rank's midpoint.
        assert!((c.ceiling(at(9, 1)) - 0.92).abs() < 1e-9);
        assert!((c.ceiling(at(0, 2)) - 0.2).abs() < 1e-9);
        let same = BandPosition {
            highest: 3,
            lowest: 3,
            ..at(3, 0)
        };
        assert_eq!(c.ceiling(same), 1.0);
    }

    #[test]
    fn holdback_position_among_provisioned_bands() {
        let p = BandPosition::among(0, [5, -3, 0].into_iter());
        assert_eq!(
            p,
            BandPosition {
                rank: 1,
                bands: 3,
                priority: 0,
                highest: 5,
                lowest: -3
            }
        );
        assert_eq!(BandPosition::among(7, std::iter::empty()).bands, 1);
    }

    #[test]
    fn holdback_bounds_are_upstreams() {
        let bad = |min, max| {
            UsageLimit::PriorityHoldback {
                min_ceiling: min,
                max_ceiling: max,
                domain: HoldbackDomain::Rank,
            }
            .validate()
            .unwrap_err()
        };
        assert!(bad(1.0, 1.0).contains("minCeiling"));
        assert!(bad(0.5, 1.5).contains("maxCeiling"));
        assert!(bad(0.6, 0.5).contains("below maxCeiling"));
    }

    #[test]
    fn soft_reflective_opens_below_the_reflection_and_never_gates_the_top_band() {
        let l = UsageLimiter::new(UsageLimit::SoftReflectiveCeiling);
        // N=3, saturation 0.3: reflections 0.85 and 0.7, both above: everything open.
        let c = l.cycle(0.3);
        assert!((0..3).all(|r| c.ceiling(pos(r, 3)) == 1.0));
        // Saturation 1.0 or more: every lower band closed, the top one gated by the loop (1.0).
        let c = l.cycle(1.2);
        assert_eq!(c.ceiling(pos(0, 3)), 1.0);
        assert_eq!(c.ceiling(pos(1, 3)), 0.0);
        assert_eq!(c.ceiling(pos(2, 3)), 0.0);
    }

    #[test]
    fn soft_reflective_alternates_one_cycle_in_period() {
        let l = UsageLimiter::new(UsageLimit::SoftReflectiveCeiling);
        // saturation 0.75: period round(0.75/0.25) = 3; the lowest of 2 bands reflects at 0.25.
        let open: Vec<bool> = (0..9)
            .map(|_| l.cycle(0.75).ceiling(pos(1, 2)) == 1.0)
            .collect();
        assert_eq!(open.iter().filter(|o| **o).count(), 3, "{open:?}");
        assert_eq!(&open[..3], &[false, false, true]);
        // Below the alternating regime the tick stands still and all is open.
        let before = l.tick.load(Ordering::Relaxed);
        assert_eq!(l.cycle(0.4).ceiling(pos(1, 2)), 1.0);
        assert_eq!(l.tick.load(Ordering::Relaxed), before);
        // The fast path never opens an alternating band.
        assert_eq!(l.peek(0.75).ceiling(pos(1, 2)), 0.0);
    }
}
