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

/// CPU seconds the scrape thread used, from /proc/self/task/*/stat (utime + stime).
fn scrape_thread_cpu_seconds() -> f64 {
    let ticks_per_s = 100.0; // USER_HZ on Linux
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != &THREAD_NAME[..THREAD_NAME.len().min(15)] {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after_name.split(' ').collect();
        let utime: f64 = fields[11].parse().unwrap();
        let stime: f64 = fields[12].parse().unwrap();
        return (utime + stime) / ticks_per_s;
    }
    panic!("scrape thread not found");
}

/// Measurement, not a check: `cargo test --release -p sluicegate-core scrape_cpu -- --ignored --nocapture`.
#[test]
#[ignore]
fn scrape_cpu_cost_of_100_endpoints_at_50ms() {
    let body = include_str!("metrics_tests.rs");
    let mut vllm_like = body
        .split("r#\"")
        .nth(1)
        .unwrap()
        .split("\"#")
        .next()
        .unwrap()
        .to_owned();
    // Real vLLM output is tens of KB, mostly histogram buckets.
    for h in 0..20 {
        for b in 0..20 {
            vllm_like += &format!("vllm:h{h}_seconds_bucket{{engine=\"0\",le=\"{b}.5\",model_name=\"meta-llama/Llama-3.1-8B-Instruct\"}} 12.0\n");
        }
    }
    let vllm_like = vllm_like.as_str();
    let t = Instant::now();
    for _ in 0..1000 {
        std::hint::black_box(parse_metrics(std::hint::black_box(vllm_like), Engine::Vllm));
    }
    println!(
        "parse_metrics alone: {:.1} us per {} byte scrape",
        t.elapsed().as_secs_f64() * 1e3,
        vllm_like.len()
    );
    let servers: Vec<MetricsServer> = (0..100).map(|_| MetricsServer::start(vllm_like)).collect();
    let store = Arc::new(EndpointStore::default());
    let specs: Vec<EndpointSpec> = servers.iter().map(|s| spec(&s.address)).collect();
    store.set_endpoints(&specs);
    let scraper = Scraper::start(store.clone(), ScrapeConfig::default()).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let (cpu0, t0) = (scrape_thread_cpu_seconds(), Instant::now());
    std::thread::sleep(Duration::from_secs(10));
    let (cpu1, wall) = (scrape_thread_cpu_seconds(), t0.elapsed().as_secs_f64());
    let errors: u64 = store
        .snapshot()
        .endpoints
        .iter()
        .map(|e| e.scrape_errors)
        .sum();
    scraper.stop();
    println!(
        "scrape thread: {:.3} CPU s per wall s for 100 endpoints at 50 ms ({} bytes/scrape, {} errors)",
        (cpu1 - cpu0) / wall,
        vllm_like.len(),
        errors
    );
}
