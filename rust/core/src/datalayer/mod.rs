//! Endpoint state: metrics parsing, the endpoint store and its snapshots, the scraper.

pub mod dcgm;
pub mod endpoints;
mod exposition;
mod http_get;
pub mod metrics;
pub mod models;
pub mod pool_metrics;
pub mod scrape;
#[cfg(test)]
pub(crate) mod test_server;
pub mod tls;

pub use endpoints::{
    Endpoint, EndpointAttributes, EndpointSpec, EndpointStore, ModelData, PodFacts, Snapshot,
};
pub use metrics::{parse_metrics, EndpointMetrics, Engine, MetricsUpdate};
pub use scrape::{ScrapeConfig, Scraper};
