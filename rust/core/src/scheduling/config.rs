//! The router's JSON configuration: scorer weights, fallbacks, staleness and scrape timing.
//! Parsed once; unknown keys and bad values are errors naming the key.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::scorer::SCORER_NAMES;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("router config: {0}")]
pub struct ConfigError(pub String);

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct RouterConfig {
    /// Scorer name -> weight. When given it replaces the defaults (omit a scorer to turn it off).
    pub scorers: BTreeMap<String, f64>,
    /// How many endpoints a decision names: the primary plus fallbacks.
    pub max_num_of_endpoints: usize,
    /// Metrics older than this make an endpoint stale (treated as saturated).
    pub staleness_ms: u64,
    pub scrape_interval_ms: u64,
    pub scrape_timeout_ms: u64,
    pub prefix_block_bytes: usize,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            scorers: [
                ("queue-scorer", 2.0),
                ("kv-cache-utilization-scorer", 2.0),
                ("active-request-scorer", 1.0),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
            max_num_of_endpoints: 1,
            staleness_ms: 2000,
            scrape_interval_ms: 50,
            scrape_timeout_ms: 1000,
            prefix_block_bytes: 256,
        }
    }
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
        for (name, weight) in &self.scorers {
            if !SCORER_NAMES.contains(&name.as_str()) {
                return Err(ConfigError(format!(
                    "unknown scorer '{name}' in 'scorers': expected one of {}",
                    SCORER_NAMES.join(", ")
                )));
            }
            if !weight.is_finite() || *weight < 0.0 {
                return Err(ConfigError(format!(
                    "weight of scorer '{name}' must be a finite number >= 0, got {weight}"
                )));
            }
        }
        let positive = [
            ("maxNumOfEndpoints", self.max_num_of_endpoints as u64),
            ("scrapeIntervalMs", self.scrape_interval_ms),
            ("scrapeTimeoutMs", self.scrape_timeout_ms),
            ("prefixBlockBytes", self.prefix_block_bytes as u64),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError(format!("'{key}' must be >= 1, got 0")));
            }
        }
        Ok(())
    }

    pub fn staleness(&self) -> Duration {
        Duration::from_millis(self.staleness_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_gives_the_upstream_defaults() {
        let c = RouterConfig::from_json("{}").unwrap();
        assert_eq!(c, RouterConfig::default());
        assert_eq!(c.scorers["queue-scorer"], 2.0);
        assert_eq!(
            (c.staleness_ms, c.scrape_interval_ms, c.max_num_of_endpoints),
            (2000, 50, 1)
        );
    }

    #[test]
    fn given_keys_override_defaults() {
        let c =
            RouterConfig::from_json(r#"{"scorers": {"queue-scorer": 1}, "maxNumOfEndpoints": 3}"#)
                .unwrap();
        assert_eq!(c.scorers.len(), 1);
        assert_eq!(c.max_num_of_endpoints, 3);
    }

    #[test]
    fn unknown_keys_are_named_in_the_error() {
        let e = RouterConfig::from_json(r#"{"stalenesMs": 5}"#).unwrap_err();
        assert!(e.0.contains("stalenesMs"), "{e}");
    }

    #[test]
    fn unknown_scorers_and_bad_values_are_named() {
        let e = RouterConfig::from_json(r#"{"scorers": {"magic-scorer": 1}}"#).unwrap_err();
        assert!(e.0.contains("magic-scorer"), "{e}");
        let e = RouterConfig::from_json(r#"{"maxNumOfEndpoints": 0}"#).unwrap_err();
        assert!(e.0.contains("maxNumOfEndpoints"), "{e}");
        let e = RouterConfig::from_json(r#"{"scorers": {"queue-scorer": -1}}"#).unwrap_err();
        assert!(e.0.contains("queue-scorer"), "{e}");
    }
}
