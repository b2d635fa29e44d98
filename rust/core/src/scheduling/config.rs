//! The Router's JSON configuration: the scheduling part of the upstream EndpointPickerConfig
//! (`plugins`, `schedulingProfiles`) plus the EPP's data-layer timing. Parsed once, strictly;
//! errors name the field. Defaults follow upstream: no plugins and no profiles gives
//! queue-scorer ×2, kv-cache-utilization-scorer ×2, prefix-cache-scorer ×3, max-score-picker.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::datalayer::metrics::{Engine, ENGINE_LABEL};
use crate::datalayer::pool_metrics::{MetricSpec, PoolProbe};
use crate::datalayer::tls::{TlsClient, TlsOptions};
use crate::datalayer::EndpointSpec;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("router config: {0}")]
pub struct ConfigError(pub String);

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct RouterConfig {
    pub plugins: Option<Vec<PluginSpec>>,
    pub scheduling_profiles: Option<Vec<ProfileSpec>>,
    /// `requestHandler.parsers` resolved to parser types, in order; None = upstream's defaults.
    pub parsers: Option<Vec<String>>,
    /// False when the data layer has no metrics source (`injectDefaults: false` and none listed):
    /// endpoints are then never scraped.
    pub scrape_metrics: bool,
    /// The metrics source's own `interval`; wins over `scrapeIntervalMs` (the flag's default).
    pub metrics_interval_ms: Option<u64>,
    /// The metrics source's `scheme: https` and upstream's TLS options; None: plain http.
    pub metrics_tls: Option<TlsOptions>,
    /// core-metrics-extractor: the label naming an endpoint's engine, and the engine of
    /// endpoints without it.
    pub engine_label_key: Option<String>,
    pub default_engine: Option<String>,
    /// dcgm-data-source wired to a dcgm-extractor: poll each endpoint's DCGM exporter.
    pub gpu_telemetry: Option<GpuTelemetry>,
    /// multicluster-metrics-data-source wired to a multicluster-metrics-extractor: poll each
    /// (cluster) endpoint's published pool averages.
    pub pool_metrics: Option<PoolMetrics>,
    /// models-data-source wired to a models-data-extractor: poll each endpoint's model list.
    pub models_source: Option<ModelsSource>,
    /// Metrics older than this make an endpoint stale (treated as saturated).
    pub staleness_ms: u64,
    pub scrape_interval_ms: u64,
    pub scrape_timeout_ms: u64,
    /// Cap on distinct request-metric label sets; the rest count under `__other__`.
    pub max_metric_series: usize,
    /// Upstream's --disable-endpoint-subset-filter: schedule over every endpoint even when the
    /// proxy sent a subset hint.
    pub ignore_subset_hint: bool,
    /// Upstream's --emit-endpoint-scores: decisions carry the primary profile's weighted scores.
    pub emit_endpoint_scores: bool,
}

/// Where each cluster endpoint's pool averages are polled, and which metrics carry them
/// (upstream's spec strings: `name` or `name{label="value"}`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PoolMetrics {
    pub path: String,
    /// Present for https: upstream's TLS options (insecureSkipVerify, caCertPath, client certs).
    #[serde(default)]
    pub tls: Option<TlsOptions>,
    pub kv_cache_utilization_metric: String,
    pub queue_size_metric: String,
    /// None: every scrape tick.
    pub interval_ms: Option<u64>,
}

/// Where and how often the DCGM exporter next to each endpoint is polled.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GpuTelemetry {
    pub port: u16,
    pub path: String,
    /// Poll the node's exporter (the Pod's `status.hostIP`) instead of the endpoint's IP.
    #[serde(default)]
    pub use_node_address: bool,
    /// Present for https: upstream's TLS options (insecureSkipVerify, caCertPath, client certs).
    #[serde(default)]
    pub tls: Option<TlsOptions>,
    /// None: every scrape tick, as upstream's `interval` when omitted.
    pub interval_ms: Option<u64>,
}

/// Where and how often each endpoint's model list is polled.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ModelsSource {
    pub path: String,
    /// Present for https: upstream's TLS options (insecureSkipVerify, caCertPath, client certs).
    #[serde(default)]
    pub tls: Option<TlsOptions>,
    /// None: every scrape tick, as upstream's `interval` when omitted.
    pub interval_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSpec {
    /// Defaults to the type.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub parameters: Option<Value>,
}

impl PluginSpec {
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.kind)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSpec {
    pub name: String,
    #[serde(default)]
    pub plugins: Vec<PluginRef>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PluginRef {
    pub plugin_ref: String,
    /// Scorers only; defaults to 1.
    #[serde(default)]
    pub weight: Option<f64>,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            plugins: None,
            scheduling_profiles: None,
            parsers: None,
            scrape_metrics: true,
            metrics_interval_ms: None,
            metrics_tls: None,
            engine_label_key: None,
            default_engine: None,
            gpu_telemetry: None,
            pool_metrics: None,
            models_source: None,
            staleness_ms: 2000,
            scrape_interval_ms: 50,
            scrape_timeout_ms: 1000,
            max_metric_series: 1000,
            ignore_subset_hint: false,
            emit_endpoint_scores: false,
        }
    }
}

/// Upstream's configuration when none is given.
fn default_plugins_and_profile() -> (Vec<PluginSpec>, Vec<ProfileSpec>) {
    let weighted = [
        ("queue-scorer", 2.0),
        ("kv-cache-utilization-scorer", 2.0),
        ("prefix-cache-scorer", 3.0),
    ];
    let plugins = weighted
        .iter()
        .map(|(t, _)| PluginSpec {
            name: None,
            kind: (*t).into(),
            parameters: None,
        })
        .collect();
    let profile = ProfileSpec {
        name: "default".into(),
        plugins: weighted
            .iter()
            .map(|(t, w)| PluginRef {
                plugin_ref: (*t).into(),
                weight: Some(*w),
            })
            .collect(),
    };
    (plugins, vec![profile])
}

fn build_tls(options: Option<&TlsOptions>, key: &str) -> Result<Option<TlsClient>, ConfigError> {
    options
        .map(|o| o.build().map_err(|e| ConfigError(format!("'{key}': {e}"))))
        .transpose()
}

impl RouterConfig {
    pub fn from_json(text: &str) -> Result<RouterConfig, ConfigError> {
        let text = if text.trim().is_empty() { "{}" } else { text };
        let config: RouterConfig =
            serde_json::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("scrapeIntervalMs", self.scrape_interval_ms),
            ("scrapeTimeoutMs", self.scrape_timeout_ms),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError(format!("'{key}' must be >= 1, got 0")));
            }
        }
        if self.metrics_interval_ms == Some(0) {
            return Err(ConfigError(
                "'metricsIntervalMs' must be >= 1, got 0".into(),
            ));
        }
        if let Some(gpu) = &self.gpu_telemetry {
            if gpu.port == 0 || gpu.interval_ms == Some(0) || !gpu.path.starts_with('/') {
                return Err(ConfigError(format!(
                    "'gpuTelemetry': port and intervalMs must be >= 1 and path absolute, got {gpu:?}"
                )));
            }
        }
        if let Some(pool) = &self.pool_metrics {
            if pool.interval_ms == Some(0) || !pool.path.starts_with('/') {
                return Err(ConfigError(format!(
                    "'poolMetrics': intervalMs must be >= 1 and path absolute, got {pool:?}"
                )));
            }
            self.pool_probe()?;
        }
        if let Some(models) = &self.models_source {
            if models.interval_ms == Some(0) || !models.path.starts_with('/') {
                return Err(ConfigError(format!(
                    "'modelsSource': intervalMs must be >= 1 and path absolute, got {models:?}"
                )));
            }
        }
        self.metrics_tls()?;
        self.models_tls()?;
        self.gpu_tls()?;
        if let Some(engine) = &self.default_engine {
            Engine::from_name(engine).map_err(|e| ConfigError(format!("'defaultEngine': {e}")))?;
        }
        Ok(())
    }

    /// The plugins and profiles to build, upstream defaults applied. Plugins without profiles
    /// make one profile "default" of every plugin that can sit in a profile (decided by the
    /// scheduler, which knows each plugin's kind); `None` profiles signal that case.
    pub fn resolved(&self) -> Result<(Vec<PluginSpec>, Option<Vec<ProfileSpec>>), ConfigError> {
        Ok(match (&self.plugins, &self.scheduling_profiles) {
            (None, None) => {
                let (plugins, profiles) = default_plugins_and_profile();
                (plugins, Some(profiles))
            }
            (plugins, profiles) => (
                expand_precise_scorers(plugins.clone().unwrap_or_default())?,
                profiles.clone(),
            ),
        })
    }

    /// The multicluster extractor's probe, its metric specs parsed.
    pub fn pool_probe(&self) -> Result<Option<PoolProbe>, ConfigError> {
        let Some(pool) = &self.pool_metrics else {
            return Ok(None);
        };
        let spec = |field: &str, text: &str| {
            MetricSpec::parse(text).map_err(|e| ConfigError(format!("'poolMetrics.{field}': {e}")))
        };
        let tls = build_tls(pool.tls.as_ref(), "poolMetrics.tls")?;
        Ok(Some(PoolProbe {
            path: pool.path.clone(),
            tls,
            kv_cache_utilization: spec(
                "kvCacheUtilizationMetric",
                &pool.kv_cache_utilization_metric,
            )?,
            queue_size: spec("queueSizeMetric", &pool.queue_size_metric)?,
        }))
    }

    /// The metrics source's TLS client (its files read); None for plain http.
    pub fn metrics_tls(&self) -> Result<Option<TlsClient>, ConfigError> {
        build_tls(self.metrics_tls.as_ref(), "metricsTls")
    }

    /// The DCGM source's TLS client (its files read); None for plain http or no source.
    pub fn gpu_tls(&self) -> Result<Option<TlsClient>, ConfigError> {
        let options = self.gpu_telemetry.as_ref().and_then(|g| g.tls.as_ref());
        build_tls(options, "gpuTelemetry.tls")
    }

    /// The models source's TLS client (its files read); None for plain http or no source.
    pub fn models_tls(&self) -> Result<Option<TlsClient>, ConfigError> {
        let options = self.models_source.as_ref().and_then(|m| m.tls.as_ref());
        build_tls(options, "modelsSource.tls")
    }

    pub fn staleness(&self) -> Duration {
        Duration::from_millis(self.staleness_ms)
    }

    /// The core-metrics-extractor's engine label key and default engine, applied to the specs
    /// as the label the store reads; None when neither is configured.
    pub fn relabel(&self, specs: &[EndpointSpec]) -> Option<Vec<EndpointSpec>> {
        if self.engine_label_key.is_none() && self.default_engine.is_none() {
            return None;
        }
        Some(
            specs
                .iter()
                .map(|spec| {
                    let mut spec = spec.clone();
                    let engine = self.engine_of(&spec.labels);
                    // Only the configured key names the engine.
                    spec.labels.retain(|(k, _)| k != ENGINE_LABEL);
                    if let Some(engine) = engine {
                        spec.labels.push((ENGINE_LABEL.to_owned(), engine));
                    }
                    spec
                })
                .collect(),
        )
    }

    /// The engine label every endpoint gets when the extractor reads another key, or gives a
    /// default for endpoints without one; None = the spec's own labels decide.
    pub fn engine_of(&self, labels: &[(String, String)]) -> Option<String> {
        if self.engine_label_key.is_none() && self.default_engine.is_none() {
            return None;
        }
        let key = self.engine_label_key.as_deref().unwrap_or(ENGINE_LABEL);
        labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .or_else(|| self.default_engine.clone())
    }
}

/// upstream's deprecated `precise-prefix-cache-scorer`: a prefix-cache-scorer (same name) bound
/// to the configured precise-prefix-cache-producer, or, when none is configured, to one made from
/// the scorer's own parameters (named `<scorer>-producer`), as upstream composes it. Parameters
/// beside a configured producer (upstream ignores them with a warning) are refused.
fn expand_precise_scorers(mut plugins: Vec<PluginSpec>) -> Result<Vec<PluginSpec>, ConfigError> {
    const DEPRECATED: &str = "precise-prefix-cache-scorer";
    const PRODUCER: &str = "precise-prefix-cache-producer";
    for i in 0..plugins.len() {
        if plugins[i].kind != DEPRECATED {
            continue;
        }
        let scorer = plugins[i].clone();
        let producer = match plugins.iter().find(|p| p.kind == PRODUCER) {
            Some(p) if scorer.parameters.is_some() => {
                return Err(ConfigError(format!(
                    "plugins[{i}] ('{}', {DEPRECATED}).parameters: a {PRODUCER} ('{}') is configured, \
                     so these would be ignored; remove them (or the producer)",
                    scorer.name(),
                    p.name()
                )));
            }
            Some(p) => p.name().to_owned(),
            None => {
                let name = format!("{}-producer", scorer.name());
                plugins.push(PluginSpec {
                    name: Some(name.clone()),
                    kind: PRODUCER.into(),
                    parameters: scorer.parameters.clone(),
                });
                name
            }
        };
        plugins[i] = PluginSpec {
            name: Some(scorer.name().to_owned()),
            kind: "prefix-cache-scorer".into(),
            parameters: Some(serde_json::json!({ "prefixMatchInfoProducerName": producer })),
        };
    }
    Ok(plugins)
}
