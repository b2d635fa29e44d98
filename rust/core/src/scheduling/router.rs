//! The per-pool Router: parses a request, schedules it over the current endpoint snapshot and
//! counts it in flight on the chosen endpoint; owns the store and the optional scraper.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use super::config::{ConfigError, RouterConfig};
use super::cycle::{Cycle, ScheduleError};
use super::profile::SchedulingProfile;
use crate::datalayer::{parse_metrics, EndpointSpec, EndpointStore, Engine, ScrapeConfig, Scraper};
use crate::parse::{self, ApiKind, ParseError};

/// Where a request goes, and what the request path must change on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// "ip:port[,ip:port...]": primary first, then fallbacks.
    pub endpoints: String,
    primary_len: usize,
    pub model: Option<String>,
    /// The model after rewrite; None when not rewritten.
    pub target_model: Option<String>,
    /// The rewritten body; None when the model was not rewritten.
    pub body: Option<Vec<u8>>,
    pub stream: bool,
    pub kind: ApiKind,
}

impl Decision {
    pub fn primary(&self) -> &str {
        &self.endpoints[..self.primary_len]
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    BadRequest(#[from] ParseError),
    #[error(transparent)]
    NoEndpoints(#[from] ScheduleError),
}

/// One endpoint as operators see it.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointStatus {
    pub name: String,
    pub address: String,
    pub waiting: u32,
    pub running: u32,
    pub kv_usage: f64,
    pub in_flight: u32,
    /// Since the last good scrape; None when never scraped.
    pub age_ms: Option<u64>,
    pub stale: bool,
    pub scrape_errors: u64,
}

pub struct Router {
    config: RouterConfig,
    store: Arc<EndpointStore>,
    profile: SchedulingProfile,
    scraper: Mutex<Option<Scraper>>,
}

thread_local! {
    static PICKED: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Router {
    pub fn new(config: RouterConfig) -> Result<Router, ConfigError> {
        let profile = SchedulingProfile::from_config(&config)?;
        Ok(Router {
            config,
            store: Arc::new(EndpointStore::default()),
            profile,
            scraper: Mutex::new(None),
        })
    }

    pub fn from_json(config_json: &str) -> Result<Router, ConfigError> {
        Router::new(RouterConfig::from_json(config_json)?)
    }

    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    pub fn store(&self) -> &Arc<EndpointStore> {
        &self.store
    }

    pub fn set_endpoints(&self, specs: &[EndpointSpec]) {
        self.store.set_endpoints(specs);
    }

    /// Feed one scrape by hand; false when no endpoint has that address.
    pub fn ingest_metrics(&self, address: &str, text: &str, engine: Engine) -> bool {
        self.store
            .ingest(address, &parse_metrics(text, engine), Instant::now())
    }

    /// Start the scrape thread (no-op when it runs already).
    pub fn start_scraper(&self) -> std::io::Result<()> {
        let mut slot = self.scraper.lock();
        if slot.is_none() {
            let config = ScrapeConfig {
                interval: std::time::Duration::from_millis(self.config.scrape_interval_ms),
                timeout: std::time::Duration::from_millis(self.config.scrape_timeout_ms),
            };
            *slot = Some(Scraper::start(self.store.clone(), config)?);
        }
        Ok(())
    }

    pub fn stop_scraper(&self) {
        let running = self.scraper.lock().take();
        if let Some(s) = running {
            s.stop();
        }
    }

    /// Parse, rewrite the model if asked, schedule, and count the request on the primary.
    pub fn route(
        &self,
        path: &str,
        body: &[u8],
        model_rewrite: Option<&str>,
        subset: Option<&[String]>,
    ) -> Result<Decision, RouteError> {
        let request = parse::parse_request(path, body)?;
        let rewritten = match model_rewrite {
            Some(target) if request.model.as_deref() != Some(target) => {
                Some(parse::rewrite_model(body, target)?)
            }
            _ => None,
        };
        let snapshot = self.store.snapshot();
        let cycle = Cycle {
            snapshot: &snapshot,
            now: Instant::now(),
            staleness: self.config.staleness(),
            subset,
        };
        let endpoints = PICKED.with_borrow_mut(|picked| -> Result<String, ScheduleError> {
            self.profile.schedule(&cycle, picked)?;
            let mut joined = String::with_capacity(picked.len() * 22);
            for (i, &p) in picked.iter().enumerate() {
                if i > 0 {
                    joined.push(',');
                }
                joined.push_str(cycle.endpoint(p).address());
            }
            cycle
                .endpoint(picked[0])
                .info
                .in_flight
                .fetch_add(1, Ordering::Relaxed);
            Ok(joined)
        })?;
        let primary_len = endpoints.find(',').unwrap_or(endpoints.len());
        Ok(Decision {
            endpoints,
            primary_len,
            model: request.model,
            target_model: rewritten.as_ref().and(model_rewrite.map(str::to_owned)),
            body: rewritten,
            stream: request.stream,
            kind: request.kind,
        })
    }

    /// The request sent to `address` finished; false when the address is not in the pool.
    pub fn release(&self, address: &str) -> bool {
        let snapshot = self.store.snapshot();
        let Some(ep) = snapshot.get(address) else {
            return false;
        };
        let _ = ep
            .info
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
        true
    }

    pub fn status(&self) -> Vec<EndpointStatus> {
        let snapshot = self.store.snapshot();
        let now = Instant::now();
        let staleness = self.config.staleness();
        snapshot
            .endpoints
            .iter()
            .map(|ep| EndpointStatus {
                name: ep.info.name.clone(),
                address: ep.info.address.clone(),
                waiting: ep.metrics.waiting,
                running: ep.metrics.running,
                kv_usage: ep.metrics.kv_usage,
                in_flight: ep.in_flight(),
                age_ms: ep
                    .scraped_at
                    .map(|t| now.saturating_duration_since(t).as_millis() as u64),
                stale: !ep.is_fresh(now, staleness),
                scrape_errors: ep.scrape_errors,
            })
            .collect()
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.stop_scraper();
    }
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;
