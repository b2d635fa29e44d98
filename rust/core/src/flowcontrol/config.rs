//! Flow-control settings as the Rust core takes them (JSON, milliseconds, upstream policy names).
//! The Python side translates the upstream `flowControl:` YAML block into this shape.

use std::time::Duration;

use std::sync::Arc;

use serde::Deserialize;

use super::program_aware::{ProgramAware, ProgramAwareConfig};

pub use super::usage_limits::{HoldbackDomain, UsageLimit};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("flow control config: {0}")]
pub struct FlowConfigError(pub String);

/// How a band picks the next flow to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum FairnessPolicy {
    /// Oldest head across every flow of the band (FCFS across the band).
    #[default]
    #[serde(rename = "global-strict-fairness-policy")]
    GlobalStrict,
    #[serde(rename = "round-robin-fairness-policy")]
    RoundRobin,
    /// Least attained service per program (fairness id); see `program_aware`.
    #[serde(rename = "program-aware-fairness")]
    ProgramAware,
}

/// The controller's one program-aware-fairness instance, shared by the bands that use it.
#[derive(Debug, Clone, Default)]
pub struct SharedProgramAware(pub Option<Arc<ProgramAware>>);

impl PartialEq for SharedProgramAware {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
            (a, b) => a.is_none() && b.is_none(),
        }
    }
}

/// How a flow orders its own requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum OrderingPolicy {
    #[default]
    #[serde(rename = "fcfs-ordering-policy")]
    Fcfs,
    /// Earliest deadline (enqueue + TTL) first.
    #[serde(rename = "edf-ordering-policy")]
    Edf,
    /// Earliest SLO deadline (enqueue + TTFT objective) first; TTL deadline when none given.
    #[serde(rename = "slo-deadline-ordering-policy")]
    SloDeadline,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BandConfig {
    #[serde(default)]
    pub priority: i32,
    #[serde(default = "default_band_requests")]
    pub max_requests: u64,
    #[serde(default = "default_band_bytes")]
    pub max_bytes: u64,
    #[serde(default)]
    pub fairness_policy: FairnessPolicy,
    #[serde(default)]
    pub ordering_policy: OrderingPolicy,
    /// Set by `FlowControlConfig::band` for program-aware bands.
    #[serde(skip)]
    pub program_aware: SharedProgramAware,
}

impl Default for BandConfig {
    fn default() -> Self {
        BandConfig {
            priority: 0,
            max_requests: default_band_requests(),
            max_bytes: default_band_bytes(),
            fairness_policy: FairnessPolicy::default(),
            ordering_policy: OrderingPolicy::default(),
            program_aware: SharedProgramAware::default(),
        }
    }
}

/// Which signal says the pool is full.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum SaturationConfig {
    /// Per endpoint max(waiting/queueDepthThreshold, kv/kvCacheUtilThreshold); pool = mean.
    #[serde(rename = "utilization-detector", rename_all = "camelCase")]
    Utilization {
        #[serde(default = "queue_depth")]
        queue_depth_threshold: f64,
        #[serde(default = "kv_util")]
        kv_cache_util_threshold: f64,
        #[serde(default = "staleness_ms")]
        metrics_staleness_ms: u64,
    },
    /// Requests this controller dispatched and not yet released / (maxConcurrency × endpoints).
    #[serde(rename = "concurrency-detector", rename_all = "camelCase")]
    Concurrency { max_concurrency: u64 },
}

impl Default for SaturationConfig {
    fn default() -> Self {
        SaturationConfig::Utilization {
            queue_depth_threshold: queue_depth(),
            kv_cache_util_threshold: kv_util(),
            metrics_staleness_ms: staleness_ms(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlowControlConfig {
    /// Global ceilings over every band; 0 = no global limit.
    #[serde(default)]
    pub max_requests: u64,
    #[serde(default)]
    pub max_bytes: u64,
    /// 0 = no TTL: requests wait until dispatched, cancelled or evicted.
    #[serde(default = "default_ttl_ms")]
    pub default_request_ttl_ms: u64,
    /// How long a request may wait while the pool has no endpoints; defaults to the TTL.
    #[serde(default)]
    pub no_endpoint_request_ttl_ms: Option<u64>,
    /// Settings for bands provisioned on demand (any priority not listed in `priorityBands`).
    #[serde(default)]
    pub default_priority_band: BandConfig,
    /// Template for priorities below zero not listed in `priorityBands`; defaults to
    /// `defaultPriorityBand`.
    #[serde(default)]
    pub default_negative_priority_band: Option<BandConfig>,
    #[serde(default)]
    pub priority_bands: Vec<BandConfig>,
    #[serde(default)]
    pub usage_limit_policy: UsageLimit,
    #[serde(default)]
    pub saturation_detector: SaturationConfig,
    /// program-aware-fairness's parameters (one instance per controller); defaults when a band
    /// names the policy without them.
    #[serde(default)]
    pub program_aware: Option<ProgramAwareConfig>,
    #[serde(skip)]
    pub program_aware_policy: SharedProgramAware,
    /// `enableEviction`: revoke dispatched sheddable requests for higher-priority waiting ones
    /// (see `eviction`).
    #[serde(default)]
    pub enable_eviction: bool,
    /// The pause after a confirmed revocation; None = derived from the detector, as upstream.
    #[serde(default)]
    pub eviction_confirmation_grace_ms: Option<u64>,
    /// How long a revocation may stay unconfirmed; None = upstream's 10 s.
    #[serde(default)]
    pub eviction_confirmation_timeout_ms: Option<u64>,
}

impl Default for FlowControlConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("defaults parse")
    }
}

impl FlowControlConfig {
    pub fn from_json(text: &str) -> Result<Self, FlowConfigError> {
        let mut c: FlowControlConfig =
            serde_json::from_str(text).map_err(|e| FlowConfigError(e.to_string()))?;
        c.validate()?;
        let bands = std::iter::once(&c.default_priority_band)
            .chain(&c.default_negative_priority_band)
            .chain(&c.priority_bands);
        if bands
            .into_iter()
            .any(|b| b.fairness_policy == FairnessPolicy::ProgramAware)
        {
            let params = c.program_aware.clone().unwrap_or_default();
            params.validate().map_err(FlowConfigError)?;
            c.program_aware_policy = SharedProgramAware(Some(Arc::new(ProgramAware::new(params))));
        }
        Ok(c)
    }

    fn validate(&self) -> Result<(), FlowConfigError> {
        self.usage_limit_policy
            .validate()
            .map_err(FlowConfigError)?;
        if self.eviction_confirmation_timeout_ms == Some(0) {
            return Err(FlowConfigError(
                "evictionConfirmationTimeoutMs must be > 0".into(),
            ));
        }
        if let SaturationConfig::Concurrency { max_concurrency: 0 } = self.saturation_detector {
            return Err(FlowConfigError("maxConcurrency must be > 0".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for b in &self.priority_bands {
            if !seen.insert(b.priority) {
                return Err(FlowConfigError(format!(
                    "priorityBands: priority {} listed twice",
                    b.priority
                )));
            }
        }
        Ok(())
    }

    /// The eviction tracker when `enableEviction` is on, its grace derived from the detector
    /// as upstream's: a `leading` sensor (the concurrency count) drops with the stream; scraped
    /// metrics show freed room only after the engine reclaims it and a fresh scrape (50 ms
    /// refresh, the staleness bound) lands.
    pub fn eviction(&self, leading: bool) -> Option<super::eviction::Eviction> {
        use super::eviction::{
            Eviction, CONFIRMATION_TIMEOUT, ENGINE_RECLAIM_BUDGET, LEADING_SENSOR_GRACE,
        };
        if !self.enable_eviction {
            return None;
        }
        let staleness_ms = match &self.saturation_detector {
            SaturationConfig::Utilization {
                metrics_staleness_ms,
                ..
            } => *metrics_staleness_ms,
            SaturationConfig::Concurrency { .. } => staleness_ms(),
        };
        let derived = if leading {
            LEADING_SENSOR_GRACE
        } else {
            Duration::from_millis(50 + staleness_ms) + ENGINE_RECLAIM_BUDGET
        };
        let grace = self
            .eviction_confirmation_grace_ms
            .map_or(derived, Duration::from_millis);
        let timeout = self
            .eviction_confirmation_timeout_ms
            .map_or(CONFIRMATION_TIMEOUT, Duration::from_millis);
        Some(Eviction::new(grace, timeout))
    }

    pub fn default_ttl(&self) -> Duration {
        ttl(self.default_request_ttl_ms)
    }

    pub fn no_endpoint_ttl(&self) -> Duration {
        ttl(self
            .no_endpoint_request_ttl_ms
            .unwrap_or(self.default_request_ttl_ms))
    }

    /// The settings of the band serving `priority`.
    pub fn band(&self, priority: i32) -> BandConfig {
        let mut band = self.band_template(priority);
        if band.fairness_policy == FairnessPolicy::ProgramAware {
            band.program_aware = self.program_aware_policy.clone();
        }
        band
    }

    fn band_template(&self, priority: i32) -> BandConfig {
        self.priority_bands
            .iter()
            .find(|b| b.priority == priority)
            .cloned()
            .unwrap_or_else(|| {
                let template = match &self.default_negative_priority_band {
                    Some(negative) if priority < 0 => negative,
                    _ => &self.default_priority_band,
                };
                BandConfig {
                    priority,
                    ..template.clone()
                }
            })
    }
}

/// A TTL of 0 means none: a deadline far enough away never to fire (and never to overflow).
fn ttl(ms: u64) -> Duration {
    const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    if ms == 0 {
        NEVER
    } else {
        Duration::from_millis(ms).min(NEVER)
    }
}

fn default_band_requests() -> u64 {
    5000
}
fn default_band_bytes() -> u64 {
    1_000_000_000
}
fn default_ttl_ms() -> u64 {
    60_000
}
fn queue_depth() -> f64 {
    5.0
}
fn kv_util() -> f64 {
    0.8
}
fn staleness_ms() -> u64 {
    200
}
