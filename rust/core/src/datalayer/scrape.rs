//! The metrics scraper: one thread running a single-threaded tokio runtime, one task per
//! endpoint polling GET http://address/metrics on a kept-alive connection. Results are
//! published to the store in batches, so many endpoints finishing together cost one snapshot.
//! A scraper started with a `GpuProbe` polls each endpoint's DCGM exporter instead and writes
//! the GPU utilization into the endpoint's live attributes (no snapshot); one started with a
//! models path polls each endpoint's model list (models-data-source) the same way.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle as TaskHandle;
use tokio::time::{interval, timeout, MissedTickBehavior};

use super::dcgm::{gpu_utilization, GpuProbe};
use super::endpoints::{EndpointAttributes, EndpointInfo, EndpointStore, PollSource, ScrapeResult};
use super::http_get::Connection;
use super::metrics::{parse_metrics, Engine, MetricsUpdate};
use super::models::parse_models;
use super::pool_metrics::PoolProbe;
use super::tls::{server_name, TlsClient, HOSTNAME_LABEL};

pub const THREAD_NAME: &str = "sluicegate-scrape";

#[derive(Debug, Clone, Copy)]
pub struct ScrapeConfig {
    pub interval: Duration,
    pub timeout: Duration,
}

impl Default for ScrapeConfig {
    fn default() -> Self {
        ScrapeConfig {
            interval: Duration::from_millis(50),
            timeout: Duration::from_secs(1),
        }
    }
}

/// A running scraper; stopping (or dropping) it ends every scrape and joins the thread.
pub struct Scraper {
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

/// What a scraper polls on each endpoint.
#[derive(Clone)]
enum Probe {
    /// The engine's /metrics, published to the store's snapshot; over https when TLS is set.
    Metrics(Option<TlsClient>),
    /// The DCGM exporter next to it.
    Gpu(Arc<GpuProbe>),
    /// Its model list at this path; over https when TLS is set.
    Models(Arc<str>, Option<TlsClient>),
    /// A cluster endpoint's EPP: the pool averages it publishes (multicluster-metrics-data-source).
    Pool(Arc<PoolProbe>),
}

impl Scraper {
    pub fn start(store: Arc<EndpointStore>, config: ScrapeConfig) -> io::Result<Scraper> {
        Scraper::start_probe(store, config, Probe::Metrics(None))
    }

    /// Scrape every endpoint's /metrics over https (metrics-data-source `scheme: https`).
    pub fn start_tls(
        store: Arc<EndpointStore>,
        config: ScrapeConfig,
        tls: TlsClient,
    ) -> io::Result<Scraper> {
        Scraper::start_probe(store, config, Probe::Metrics(Some(tls)))
    }

    /// Poll every endpoint's model list at `path` (models-data-source), over https with `tls`.
    pub fn start_models(
        store: Arc<EndpointStore>,
        config: ScrapeConfig,
        path: &str,
        tls: Option<TlsClient>,
    ) -> io::Result<Scraper> {
        Scraper::start_probe(store, config, Probe::Models(path.into(), tls))
    }

    /// Poll every endpoint's DCGM exporter (dcgm-data-source) for its GPU utilization.
    pub fn start_gpu(
        store: Arc<EndpointStore>,
        config: ScrapeConfig,
        probe: GpuProbe,
    ) -> io::Result<Scraper> {
        Scraper::start_probe(store, config, Probe::Gpu(Arc::new(probe)))
    }

    /// Poll every (cluster) endpoint for its pool averages (multicluster-metrics-data-source).
    pub fn start_pool(
        store: Arc<EndpointStore>,
        config: ScrapeConfig,
        probe: PoolProbe,
    ) -> io::Result<Scraper> {
        Scraper::start_probe(store, config, Probe::Pool(Arc::new(probe)))
    }

    fn start_probe(
        store: Arc<EndpointStore>,
        config: ScrapeConfig,
        probe: Probe,
    ) -> io::Result<Scraper> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let (stop, stopped) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || runtime.block_on(supervise(store, config, probe, stopped)))?;
        Ok(Scraper {
            stop,
            thread: Some(thread),
        })
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Scraper {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Keeps one scrape task per endpoint in the store and publishes their results.
async fn supervise(
    store: Arc<EndpointStore>,
    config: ScrapeConfig,
    probe: Probe,
    mut stopped: watch::Receiver<bool>,
) {
    let (results, mut inbox) = mpsc::unbounded_channel::<ScrapeResult>();
    let mut tasks: HashMap<u64, TaskHandle<()>> = HashMap::new();
    let mut reconcile = interval(config.interval);
    reconcile.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(256);
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            _ = reconcile.tick() => follow_endpoint_set(&store, config, &probe, &results, &mut tasks),
            _ = inbox.recv_many(&mut batch, 4096) => {
                store.apply_scrapes(&batch);
                batch.clear();
            }
        }
    }
    for task in tasks.values() {
        task.abort();
    }
}

/// Start tasks for endpoints that appeared, end those of endpoints that went away.
fn follow_endpoint_set(
    store: &EndpointStore,
    config: ScrapeConfig,
    probe: &Probe,
    results: &mpsc::UnboundedSender<ScrapeResult>,
    tasks: &mut HashMap<u64, TaskHandle<()>>,
) {
    let snapshot = store.snapshot();
    for ep in &snapshot.endpoints {
        let info = &ep.info;
        tasks.entry(info.id).or_insert_with(|| {
            let attributes = info.attributes.clone();
            match probe {
                Probe::Gpu(gpu) => match gpu.host(info) {
                    Ok(host) => {
                        let mut conn = Connection::new(&gpu.address(host), &gpu.path);
                        if let Some(tls) = &gpu.tls {
                            // The node's certificate names the node; a sidecar's, the endpoint.
                            let name = match server_name(host) {
                                Ok(node) if gpu.use_node_address => node,
                                _ => tls_server_name(info),
                            };
                            conn = conn.with_tls(tls, name);
                        }
                        let pod = gpu.pod(info).to_owned();
                        tokio::spawn(poll_gpu(conn, pod, attributes, config))
                    }
                    // Nowhere to poll: said once, on the endpoint's counters and in the log.
                    Err(why) => tokio::spawn(async move {
                        attributes.record_poll_error(PollSource::Dcgm, false, &why)
                    }),
                },
                Probe::Models(path, tls) => {
                    let conn = connect(info, path, tls.as_ref());
                    tokio::spawn(poll_models(conn, attributes, config))
                }
                Probe::Pool(pool) => {
                    let conn = connect(info, &pool.path, pool.tls.as_ref());
                    tokio::spawn(poll_pool(conn, pool.clone(), attributes, config))
                }
                Probe::Metrics(tls) => {
                    let target = Target {
                        id: info.id,
                        engine: info.engine,
                    };
                    let conn = connect(info, "/metrics", tls.as_ref());
                    tokio::spawn(scrape_forever(target, conn, config, results.clone()))
                }
            }
        });
    }
    if tasks.len() != snapshot.endpoints.len() {
        let live: std::collections::HashSet<u64> =
            snapshot.endpoints.iter().map(|e| e.info.id).collect();
        tasks.retain(|id, task| {
            let keep = live.contains(id);
            if !keep {
                task.abort();
            }
            keep
        });
    }
}

struct Target {
    id: u64,
    engine: Engine,
}

/// GET `path` on the endpoint, over TLS when `tls` is set (verified against its DNS name or IP).
fn connect(info: &EndpointInfo, path: &str, tls: Option<&TlsClient>) -> Connection {
    let conn = Connection::new(&info.address, path);
    match tls {
        Some(tls) => conn.with_tls(tls, tls_server_name(info)),
        None => conn,
    }
}

async fn scrape_forever(
    target: Target,
    mut conn: Connection,
    config: ScrapeConfig,
    results: mpsc::UnboundedSender<ScrapeResult>,
) {
    let mut body = Vec::new();
    let mut tick = interval(config.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let outcome = get_within(&mut conn, &mut body, config.timeout)
            .await
            .and_then(|()| read_metrics(&body, target.engine));
        if results
            .send(ScrapeResult {
                id: target.id,
                outcome,
                at: Instant::now(),
            })
            .is_err()
        {
            return;
        }
    }
}

/// dcgm-data-source + dcgm-extractor for one endpoint: a failed poll keeps the last value.
async fn poll_gpu(
    conn: Connection,
    pod: String,
    attributes: Arc<EndpointAttributes>,
    config: ScrapeConfig,
) {
    poll_attribute(conn, config, PollSource::Dcgm, &attributes, |body| {
        let v = gpu_utilization(&String::from_utf8_lossy(body), &pod)?;
        attributes.set_gpu_utilization(v);
        Ok(())
    })
    .await
}

/// models-data-source + models-data-extractor for one endpoint: a failed poll keeps the last
/// list, as upstream.
async fn poll_models(conn: Connection, attributes: Arc<EndpointAttributes>, config: ScrapeConfig) {
    poll_attribute(conn, config, PollSource::Models, &attributes, |body| {
        attributes.set_models(parse_models(body)?.into());
        Ok(())
    })
    .await
}

/// multicluster-metrics-data-source + -extractor for one cluster endpoint: a failed poll or a
/// missing metric keeps the last value; an answer with neither metric counts as an extract
/// error.
async fn poll_pool(
    conn: Connection,
    probe: Arc<PoolProbe>,
    attributes: Arc<EndpointAttributes>,
    config: ScrapeConfig,
) {
    poll_attribute(conn, config, PollSource::Pool, &attributes, |body| {
        let (kv, queue) = probe.read(&String::from_utf8_lossy(body));
        if kv.is_none() && queue.is_none() {
            return Err(format!(
                "neither {} nor {} in the response",
                probe.kv_cache_utilization.name, probe.queue_size.name
            ));
        }
        attributes.set_pool_metrics(kv, queue);
        Ok(())
    })
    .await
}

/// Poll one endpoint every interval and hand each answer's body to `extract`; failures are
/// counted on the endpoint's attributes, per source, with the reason.
async fn poll_attribute(
    mut conn: Connection,
    config: ScrapeConfig,
    source: PollSource,
    attributes: &EndpointAttributes,
    extract: impl Fn(&[u8]) -> Result<(), String>,
) {
    let mut body = Vec::new();
    let mut tick = interval(config.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match get_within(&mut conn, &mut body, config.timeout).await {
            Ok(()) => match extract(&body) {
                Ok(()) => attributes.record_poll_ok(source),
                Err(why) => attributes.record_poll_error(source, true, &why),
            },
            Err(why) => attributes.record_poll_error(source, false, &why),
        }
    }
}

/// One GET of the connection's path into `body`, or why there is no answer: the connection's
/// error, or the timeout (then the exchange was cut mid-way and the connection is reset, its
/// state unknown).
async fn get_within(
    conn: &mut Connection,
    body: &mut Vec<u8>,
    limit: Duration,
) -> Result<(), String> {
    match timeout(limit, conn.get(body)).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => {
            conn.reset();
            Err(format!("timed out after {limit:?}"))
        }
    }
}

/// A scrape counts as good only if it carried at least one of the engine's load metrics.
fn read_metrics(body: &[u8], engine: Engine) -> Result<MetricsUpdate, String> {
    let text = std::str::from_utf8(body).map_err(|_| "metrics body is not UTF-8".to_owned())?;
    let update = parse_metrics(text, engine);
    if update.waiting.is_none() && update.running.is_none() && update.kv_usage.is_none() {
        return Err(format!("no {} metrics in the response", engine.as_str()));
    }
    Ok(update)
}

#[cfg(test)]
#[path = "scrape_tests.rs"]
mod tests;

/// The name an endpoint's certificate is checked against: the DNS name discovery resolved it from
/// (multicluster-file-discovery), else its IP.
fn tls_server_name(info: &EndpointInfo) -> rustls::pki_types::ServerName<'static> {
    let host = info
        .labels
        .iter()
        .find(|(k, _)| k == HOSTNAME_LABEL)
        .map_or(info.ip.as_str(), |(_, v)| v.as_str());
    server_name(host)
        .or_else(|_| server_name(&info.ip))
        .unwrap_or_else(|_| {
            rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::UNSPECIFIED.into())
        })
}
