//! The scraper against real HTTP servers on 127.0.0.1.

use std::time::{Duration, Instant};

use super::*;
use crate::datalayer::endpoints::EndpointSpec;
use crate::datalayer::test_server::MetricsServer;

const FAST: ScrapeConfig = ScrapeConfig {
    interval: Duration::from_millis(10),
    timeout: Duration::from_millis(500),
};

fn vllm_text(waiting: u32) -> String {
    format!(
        "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{{model_name=\"m\"}} {waiting}.0\n\
         vllm:num_requests_running{{model_name=\"m\"}} 1.0\nvllm:kv_cache_usage_perc{{model_name=\"m\"}} 0.25\n"
    )
}

fn spec(address: &str) -> EndpointSpec {
    EndpointSpec {
        name: address.into(),
        address: address.into(),
        labels: vec![],
    }
}

/// Poll `cond` for up to 10 s; the bound keeps a broken scraper from hanging the suite.
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

fn waiting_of(store: &EndpointStore, address: &str) -> Option<u32> {
    let snap = store.snapshot();
    let ep = snap.get(address)?;
    ep.scraped_at.map(|_| ep.metrics.waiting)
}

#[test]
fn scraped_metrics_reach_the_snapshot_and_follow_changes() {
    let server = MetricsServer::start(&vllm_text(3));
    let store = Arc::new(EndpointStore::default());
    store.set_endpoints(&[spec(&server.address)]);
    let scraper = Scraper::start(store.clone(), FAST).unwrap();
    assert!(eventually(|| waiting_of(&store, &server.address) == Some(3)));
    server.set_body(&vllm_text(8));
    assert!(eventually(|| waiting_of(&store, &server.address) == Some(8)));
    scraper.stop();
}

#[test]
fn one_kept_alive_connection_serves_many_scrapes() {
    let server = MetricsServer::start(&vllm_text(1));
    let store = Arc::new(EndpointStore::default());
    store.set_endpoints(&[spec(&server.address)]);
    let scraper = Scraper::start(store.clone(), FAST).unwrap();
    let mut seen = std::collections::HashSet::new();
    assert!(eventually(|| {
        let snap = store.snapshot();
        seen.insert(snap.endpoints[0].scraped_at);
        seen.len() > 5
    }));
    scraper.stop();
    assert_eq!(server.connections(), 1);
}

#[test]
fn endpoints_added_while_running_are_scraped() {
    let first = MetricsServer::start(&vllm_text(1));
    let second = MetricsServer::start(&vllm_text(2));
    let store = Arc::new(EndpointStore::default());
    store.set_endpoints(&[spec(&first.address)]);
    let scraper = Scraper::start(store.clone(), FAST).unwrap();
    assert!(eventually(|| waiting_of(&store, &first.address) == Some(1)));
    store.set_endpoints(&[spec(&first.address), spec(&second.address)]);
    assert!(eventually(|| waiting_of(&store, &second.address) == Some(2)));
    scraper.stop();
}

#[test]
fn unreachable_endpoints_count_errors_and_stay_unscraped() {
    // Bind then drop a listener to get a port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let store = Arc::new(EndpointStore::default());
    store.set_endpoints(&[spec(&dead)]);
    let scraper = Scraper::start(store.clone(), FAST).unwrap();
    assert!(eventually(
        || store.snapshot().endpoints[0].scrape_errors >= 3
    ));
    scraper.stop();
    assert!(store.snapshot().endpoints[0].scraped_at.is_none());
}

#[test]
fn a_response_without_engine_metrics_is_an_error_not_a_scrape() {
    let server = MetricsServer::start("<html>not metrics</html>\n");
    let store = Arc::new(EndpointStore::default());
    store.set_endpoints(&[spec(&server.address)]);
    let scraper = Scraper::start(store.clone(), FAST).unwrap();
    assert!(eventually(
        || store.snapshot().endpoints[0].scrape_errors >= 2
    ));
    scraper.stop();
    assert!(store.snapshot().endpoints[0].scraped_at.is_none());
}

fn model_ids(store: &EndpointStore) -> Option<Vec<String>> {
    let snap = store.snapshot();
    let models = snap.endpoints[0].info.attributes.models()?;
    Some(models.iter().map(|m| m.id.clone()).collect())
}

#[test]
fn model_lists_reach_the_endpoint_attributes_and_a_bad_answer_keeps_the_last() {
    let list = |ids: &[&str]| {
        let data: Vec<_> = ids
            .iter()
            .map(|id| serde_json::json!({"id": id, "object": "model", "parent": null}))
            .collect();
        serde_json::json!({"object": "list", "data": data}).to_string()
    };
    let server = MetricsServer::start(&list(&["llama"]));
    let store = Arc::new(EndpointStore::default());
    store.set_endpoints(&[spec(&server.address)]);
    let scraper = Scraper::start_models(store.clone(), FAST, "/v1/models", None).unwrap();
    assert!(eventually(
        || model_ids(&store) == Some(vec!["llama".into()])
    ));
    server.set_body(&list(&["llama", "sql-lora"]));
    assert!(eventually(
        || model_ids(&store).is_some_and(|m| m.len() == 2)
    ));
    server.set_body("not json");
    // Several polls of the bad answer later the last good list is still there.
    let connections = server.connections();
    std::thread::sleep(FAST.interval * 10);
    assert_eq!(connections, server.connections());
    assert_eq!(model_ids(&store).map(|m| m.len()), Some(2));
    scraper.stop();
}
