//! The multicluster scorers through the Router: cluster endpoints are real HTTP servers on
//! 127.0.0.1 serving the pool averages in the exposition format an EPP publishes; the pool
//! poller reads them and the scorers route by them.

use std::time::{Duration, Instant};

use crate::datalayer::test_server::MetricsServer;
use crate::datalayer::EndpointSpec;
use crate::scheduling::Router;

const BODY: &[u8] = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
const PATH: &str = "/v1/chat/completions";

/// What an EPP's /metrics says about its pool (the families upstream's extractor reads).
fn pool_text(kv: f64, queue: f64) -> String {
    format!(
        "# HELP llm_d_epp_average_kv_cache_utilization The average kv cache utilization for an inference server pool.\n\
         # TYPE llm_d_epp_average_kv_cache_utilization gauge\n\
         llm_d_epp_average_kv_cache_utilization{{name=\"pool\"}} {kv}\n\
         # TYPE llm_d_epp_average_queue_size gauge\n\
         llm_d_epp_average_queue_size{{name=\"pool\"}} {queue}\n"
    )
}

fn router(scorer: &str, extra: &str, servers: &[&MetricsServer]) -> Router {
    let json = format!(
        r#"{{"plugins": [{{"type": "{scorer}"}}], "scrapeMetrics": false, "scrapeIntervalMs": 10,
            "poolMetrics": {{"path": "/metrics", "kvCacheUtilizationMetric": "llm_d_epp_average_kv_cache_utilization",
                             "queueSizeMetric": "llm_d_epp_average_queue_size{extra}", "intervalMs": 10}}}}"#
    );
    let r = Router::from_json(&json).unwrap();
    let specs: Vec<EndpointSpec> = servers
        .iter()
        .map(|s| EndpointSpec {
            name: s.address.clone(),
            address: s.address.clone(),
            labels: vec![],
        })
        .collect();
    r.set_endpoints(&specs);
    r.start_scraper().unwrap();
    r
}

/// Wait (bounded: 10 s) until the poller read `queue` from the server at `address`.
fn read(r: &Router, address: &str, queue: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let snap = r.store().snapshot();
        if snap.get(address).unwrap().info.attributes.pool_queue_size() == Some(queue) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{address}: queue {queue} never read"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every one of several requests goes to `want` (the averages decide, not a tie).
fn routes_to(r: &Router, want: &str) -> bool {
    (0..5).all(|_| {
        let d = r.route(PATH, BODY, None, None).unwrap();
        r.release(d.primary());
        d.primary() == want
    })
}

#[test]
fn the_queue_scorer_routes_to_the_cluster_with_the_shorter_average_queue() {
    let a = MetricsServer::start(&pool_text(0.1, 6.0));
    let b = MetricsServer::start(&pool_text(0.9, 1.0));
    let r = router("multicluster-queue-scorer", "", &[&a, &b]);
    read(&r, &a.address, 6.0);
    read(&r, &b.address, 1.0);
    assert!(routes_to(&r, &b.address));
    // The averages change: the pick follows.
    a.set_body(&pool_text(0.1, 0.0));
    read(&r, &a.address, 0.0);
    assert!(routes_to(&r, &a.address));
    let snap = r.store().snapshot();
    let attrs = &snap.get(&a.address).unwrap().info.attributes;
    assert_eq!(attrs.pool_queue_size(), Some(0.0));
    assert_eq!(attrs.pool_kv_cache_utilization(), Some(0.1));
    r.stop_scraper();
}

#[test]
fn the_kv_scorer_routes_to_the_cluster_with_the_emptier_caches() {
    let a = MetricsServer::start(&pool_text(0.7, 0.0));
    let b = MetricsServer::start(&pool_text(0.2, 9.0));
    let r = router("multicluster-kv-cache-utilization-scorer", "", &[&a, &b]);
    read(&r, &a.address, 0.0);
    read(&r, &b.address, 9.0);
    assert!(routes_to(&r, &b.address));
    r.stop_scraper();
}

#[test]
fn a_label_narrowed_spec_reads_only_its_series_and_a_missing_one_is_unscored() {
    // The spec names pool "other": neither server has it, so no queue is ever read.
    let a = MetricsServer::start(&pool_text(0.1, 6.0));
    let r = router("multicluster-queue-scorer", r#"{name=\"other\"}"#, &[&a]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while r
        .store()
        .snapshot()
        .get(&a.address)
        .unwrap()
        .info
        .attributes
        .pool_kv_cache_utilization()
        .is_none()
    {
        assert!(Instant::now() < deadline, "the kv average was never read");
        std::thread::sleep(Duration::from_millis(5));
    }
    let snap = r.store().snapshot();
    assert_eq!(
        snap.get(&a.address)
            .unwrap()
            .info
            .attributes
            .pool_queue_size(),
        None
    );
    r.stop_scraper();
}

#[test]
fn the_scorers_need_the_pool_metrics_wired() {
    for kind in super::POOL_METRICS_CONSUMERS {
        let e = Router::from_json(&format!(r#"{{"plugins": [{{"type": "{kind}"}}]}}"#))
            .err()
            .unwrap();
        assert!(
            e.0.contains(kind) && e.0.contains("multicluster-metrics-extractor"),
            "{e}"
        );
    }
    let bad = r#"{"plugins": [{"type": "multicluster-queue-scorer"}], "poolMetrics": {"path": "/metrics",
        "kvCacheUtilizationMetric": "x{a=b}", "queueSizeMetric": "q"}}"#;
    let e = Router::from_json(bad).err().unwrap();
    assert!(
        e.0.contains("poolMetrics.kvCacheUtilizationMetric") && e.0.contains("not quoted"),
        "{e}"
    );
}
