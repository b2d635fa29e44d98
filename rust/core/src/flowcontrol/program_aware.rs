//! `program-aware-fairness` (llm-d), strategy `las` (least attained service): a band serves the
//! flow ("program", its fairness id) that has consumed the least service, where service is the
//! weighted tokens of its finished requests (prompt + 2 × completion, from the response's
//! `usage`), decayed in wall-clock time with a half-life so an idle program returns on
//! near-equal footing. Each backlogged flow scores
//! `lasWeightService · (1 − norm(service)) + lasWeightHeadWait · norm(head wait)` (min-max
//! normalised over the band's backlogged flows, 0.5 when all equal); the highest goes next, the
//! oldest head on a tie. Programs with no activity for `evictionTtlSeconds` are forgotten at the
//! next sweep (every `evictionSweepSeconds`).
//!
//! One instance per flow controller: every band naming the policy shares the programs' service,
//! as upstream's plugin instance does.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Deserialize;

/// Weights of a token's cost: output tokens cost about twice input ones.
const INPUT_WEIGHT: f64 = 1.0;
const OUTPUT_WEIGHT: f64 = 2.0;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ProgramAwareConfig {
    pub strategy: String,
    pub las_weight_service: f64,
    pub las_weight_head_wait: f64,
    pub las_half_life_seconds: f64,
    pub eviction_ttl_seconds: f64,
    pub eviction_sweep_seconds: f64,
}

impl Default for ProgramAwareConfig {
    fn default() -> Self {
        ProgramAwareConfig {
            strategy: "las".into(),
            las_weight_service: 0.8,
            las_weight_head_wait: 0.2,
            las_half_life_seconds: 60.0,
            eviction_ttl_seconds: 3600.0,
            eviction_sweep_seconds: 300.0,
        }
    }
}

impl ProgramAwareConfig {
    /// Upstream's bounds.
    pub fn validate(&self) -> Result<(), String> {
        if self.strategy != "las" && !self.strategy.is_empty() {
            return Err(format!(
                "program-aware-fairness: strategy '{}' is not supported (only 'las')",
                self.strategy
            ));
        }
        let non_negative = [
            ("lasWeightService", self.las_weight_service),
            ("lasWeightHeadWait", self.las_weight_head_wait),
            ("lasHalfLifeSeconds", self.las_half_life_seconds),
            ("evictionTtlSeconds", self.eviction_ttl_seconds),
        ];
        if let Some((k, v)) = non_negative.iter().find(|(_, v)| v.is_nan() || *v < 0.0) {
            return Err(format!("program-aware-fairness: {k} must be >= 0, got {v}"));
        }
        if self.eviction_sweep_seconds.is_nan() || self.eviction_sweep_seconds <= 0.0 {
            return Err(format!(
                "program-aware-fairness: evictionSweepSeconds must be > 0, got {}",
                self.eviction_sweep_seconds
            ));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Program {
    /// Attained service with decay folded in up to `anchor`.
    service: f64,
    anchor: Instant,
    /// Last pick or completion: idle programs past the TTL are forgotten.
    active: Instant,
}

impl Program {
    fn decayed(&mut self, now: Instant, half_life: f64) -> f64 {
        let elapsed = now.saturating_duration_since(self.anchor).as_secs_f64();
        if elapsed > 0.0 && half_life > 0.0 {
            self.service *= (-elapsed / half_life).exp2();
        }
        self.anchor = self.anchor.max(now);
        self.service
    }
}

/// One backlogged flow as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub flow: &'a str,
    /// When the flow's head was enqueued.
    pub head_enqueued: Instant,
    /// The head's id (arrival order), for ties.
    pub head_id: u64,
}

#[derive(Debug)]
pub struct ProgramAware {
    config: ProgramAwareConfig,
    programs: Mutex<Programs>,
}

#[derive(Debug)]
struct Programs {
    by_id: HashMap<Arc<str>, Program>,
    last_sweep: Instant,
}

impl PartialEq for ProgramAware {
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config
    }
}

impl ProgramAware {
    pub fn new(config: ProgramAwareConfig) -> ProgramAware {
        ProgramAware {
            config,
            programs: Mutex::new(Programs {
                by_id: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        }
    }

    /// The attained service of `flow` now (0 for a program not seen).
    pub fn service(&self, flow: &str, now: Instant) -> f64 {
        let half_life = self.config.las_half_life_seconds;
        let mut p = self.programs.lock();
        p.by_id
            .get_mut(flow)
            .map_or(0.0, |prog| prog.decayed(now, half_life))
    }

    /// Index into `flows` of the flow to serve next; None when `flows` is empty.
    pub fn pick(&self, flows: &[Candidate<'_>], now: Instant) -> Option<usize> {
        if flows.is_empty() {
            return None;
        }
        let half_life = self.config.las_half_life_seconds;
        let mut programs = self.programs.lock();
        self.sweep(&mut programs, now);
        let scored: Vec<(f64, f64)> = flows
            .iter()
            .map(|c| {
                let service = programs
                    .by_id
                    .get_mut(c.flow)
                    .map_or(0.0, |p| p.decayed(now, half_life));
                let wait_ms = now.saturating_duration_since(c.head_enqueued).as_millis() as f64;
                (service, wait_ms)
            })
            .collect();
        drop(programs);
        let range = |f: fn(&(f64, f64)) -> f64| {
            scored
                .iter()
                .map(f)
                .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)))
        };
        let (s_lo, s_hi) = range(|s| s.0);
        let (w_lo, w_hi) = range(|s| s.1);
        let norm = |v: f64, lo: f64, hi: f64| if hi == lo { 0.5 } else { (v - lo) / (hi - lo) };
        let score = |i: usize| {
            let (s, w) = scored[i];
            self.config.las_weight_service * (1.0 - norm(s, s_lo, s_hi))
                + self.config.las_weight_head_wait * norm(w, w_lo, w_hi)
        };
        (0..flows.len()).max_by(|&a, &b| {
            score(a)
                .total_cmp(&score(b))
                .then(flows[b].head_id.cmp(&flows[a].head_id))
        })
    }

    /// A request of `flow` was dispatched: the program is active.
    pub fn dispatched(&self, flow: &Arc<str>, now: Instant) {
        let mut programs = self.programs.lock();
        programs
            .by_id
            .entry(flow.clone())
            .or_insert(Program {
                service: 0.0,
                anchor: now,
                active: now,
            })
            .active = now;
    }

    /// A request of `flow` finished having used these tokens: its service grows.
    pub fn completed(&self, flow: &str, prompt_tokens: u64, completion_tokens: u64, now: Instant) {
        let cost = INPUT_WEIGHT * prompt_tokens as f64 + OUTPUT_WEIGHT * completion_tokens as f64;
        let half_life = self.config.las_half_life_seconds;
        let mut programs = self.programs.lock();
        self.sweep(&mut programs, now);
        let p = match programs.by_id.get_mut(flow) {
            Some(p) => p,
            None => programs.by_id.entry(Arc::from(flow)).or_insert(Program {
                service: 0.0,
                anchor: now,
                active: now,
            }),
        };
        p.decayed(now, half_life);
        p.service += cost;
        p.active = now;
    }

    /// How many programs are remembered.
    pub fn programs(&self) -> usize {
        self.programs.lock().by_id.len()
    }

    fn sweep(&self, programs: &mut Programs, now: Instant) {
        let ttl = self.config.eviction_ttl_seconds;
        let every = Duration::from_secs_f64(self.config.eviction_sweep_seconds);
        if ttl <= 0.0 || now.saturating_duration_since(programs.last_sweep) < every {
            return;
        }
        programs.last_sweep = now;
        let ttl = Duration::from_secs_f64(ttl);
        programs
            .by_id
            .retain(|_, p| now.saturating_duration_since(p.active) <= ttl);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pa(half_life: f64) -> ProgramAware {
        ProgramAware::new(ProgramAwareConfig {
            las_half_life_seconds: half_life,
            ..Default::default()
        })
    }

    #[test]
    fn the_least_served_program_goes_first_even_with_the_younger_head() {
        let p = pa(60.0);
        let t0 = Instant::now();
        p.completed("heavy", 1000, 500, t0);
        p.completed("light", 10, 5, t0);
        let now = t0 + Duration::from_millis(100);
        let flows = [
            Candidate {
                flow: "heavy",
                head_enqueued: t0,
                head_id: 1,
            },
            Candidate {
                flow: "light",
                head_enqueued: t0 + Duration::from_millis(50),
                head_id: 2,
            },
        ];
        // light: 0.8·1 + 0.2·0 = 0.8; heavy: 0.8·0 + 0.2·1 = 0.2.
        assert_eq!(p.pick(&flows, now), Some(1));
        // Equal service: the head wait decides (oldest head), then arrival order.
        let fresh = pa(60.0);
        assert_eq!(fresh.pick(&flows, now), Some(0));
    }

    #[test]
    fn service_decays_with_the_half_life_and_zero_disables_it() {
        let t0 = Instant::now();
        let p = pa(10.0);
        p.completed("a", 100, 50, t0); // 100 + 2·50 = 200
        assert!((p.service("a", t0) - 200.0).abs() < 1e-9);
        assert!((p.service("a", t0 + Duration::from_secs(10)) - 100.0).abs() < 1e-6);
        assert!((p.service("a", t0 + Duration::from_secs(20)) - 50.0).abs() < 1e-6);
        let kept = pa(0.0);
        kept.completed("a", 100, 50, t0);
        assert!((kept.service("a", t0 + Duration::from_secs(3600)) - 200.0).abs() < 1e-9);
    }

    #[test]
    fn idle_programs_are_forgotten_after_the_ttl_at_a_sweep() {
        let p = ProgramAware::new(ProgramAwareConfig {
            eviction_ttl_seconds: 10.0,
            eviction_sweep_seconds: 5.0,
            ..Default::default()
        });
        let t0 = Instant::now();
        p.completed("old", 1, 1, t0);
        p.completed("new", 1, 1, t0 + Duration::from_secs(9));
        assert_eq!(p.programs(), 2, "old was active 9 s ago, within the TTL");
        p.completed("new", 1, 1, t0 + Duration::from_secs(15));
        assert_eq!(p.programs(), 1);
        assert_eq!(p.service("old", t0 + Duration::from_secs(15)), 0.0);
    }

    #[test]
    fn bounds_are_upstreams() {
        let bad = |c: ProgramAwareConfig| c.validate().unwrap_err();
        assert!(bad(ProgramAwareConfig {
            strategy: "wfq".into(),
            ..Default::default()
        })
        .contains("strategy 'wfq'"));
        assert!(bad(ProgramAwareConfig {
            eviction_sweep_seconds: 0.0,
            ..Default::default()
        })
        .contains("evictionSweepSeconds"));
        assert!(bad(ProgramAwareConfig {
            las_weight_service: -1.0,
            ..Default::default()
        })
        .contains("lasWeightService"));
    }
}
