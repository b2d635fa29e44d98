//! The endpoint store: the current set of endpoints and their last metrics, published as an
//! immutable `Arc<Snapshot>`. Readers load the pointer and never lock; writers (discovery and
//! the scraper) build a new snapshot copy-on-write and swap it in.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use super::metrics::{EndpointMetrics, Engine, MetricsUpdate, ENGINE_LABEL};

/// What discovery knows of an endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointSpec {
    pub name: String,
    /// "ip:port"
    pub address: String,
    pub labels: Vec<(String, String)>,
}

/// What Kubernetes mode knows of the Pod behind an endpoint, beyond its address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodFacts {
    /// `metadata.name`: the `pod` label a DCGM exporter puts on its samples (an endpoint's
    /// name adds the rank to it).
    pub name: Option<String>,
    /// `spec.hostname`: topology-extractor's fallback when the hostname label is absent.
    pub hostname: Option<String>,
    /// `status.hostIP`: where dcgm-data-source with `useNodeAddress` finds the node's exporter.
    pub node_address: Option<String>,
}

/// The parts of an endpoint that do not change between scrapes, shared by all snapshots.
#[derive(Debug)]
pub struct EndpointInfo {
    pub id: u64,
    pub name: String,
    pub address: String,
    pub ip: String,
    pub labels: Vec<(String, String)>,
    /// What Kubernetes mode read of the Pod behind the endpoint; empty otherwise.
    pub pod: PodFacts,
    pub engine: Engine,
    /// Requests this EPP sent and that have not finished; lives across snapshots so it
    /// tracks load between scrapes.
    pub in_flight: Arc<AtomicU32>,
    /// Values data sources publish between scrapes (e.g. GPU utilization); live across
    /// snapshots like `in_flight`.
    pub attributes: Arc<EndpointAttributes>,
    /// The store's count of requests routed to any of its endpoints (`Snapshot::sent_total`).
    routed: Arc<AtomicU64>,
}

impl EndpointInfo {
    /// A request routed here: counted in flight, and in its store's total.
    pub fn sent(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.routed.fetch_add(1, Ordering::Release);
    }
}

/// Per-endpoint attributes written by data sources other than the engine metrics scrape,
/// read lock-free by the plugins that consume them.
#[derive(Debug)]
pub struct EndpointAttributes {
    /// dcgm-extractor's `GPUUtilization` in [0, 1], as f64 bits; NaN = never extracted.
    gpu_utilization: AtomicU64,
    /// multicluster-metrics-extractor's pool averages of a cluster endpoint (f64 bits; NaN =
    /// never extracted).
    pool_kv_cache_utilization: AtomicU64,
    pool_queue_size: AtomicU64,
    /// inflight-load-producer's `InFlightLoad.Tokens`: the estimated prompt (and, when asked,
    /// output) tokens of the requests this EPP sent here and holds until they release them.
    in_flight_tokens: AtomicU64,
    /// models-data-extractor's model list, as the endpoint's /v1/models last answered.
    models: parking_lot::RwLock<Option<Arc<[ModelData]>>>,
    /// Failed polls and extractions of the attribute sources, by `PollSource`.
    errors: [SourceErrors; PollSource::ALL.len()],
}

/// The data sources that poll an endpoint for an attribute (the engine metrics scrape keeps its
/// own count on the snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollSource {
    Models,
    Dcgm,
    Pool,
}

impl PollSource {
    pub const ALL: [PollSource; 3] = [PollSource::Models, PollSource::Dcgm, PollSource::Pool];

    /// Upstream's plugin type names: `source_type` and `extractor_type` of its data-layer
    /// error counters.
    pub fn source_type(self) -> &'static str {
        match self {
            PollSource::Models => "models-data-source",
            PollSource::Dcgm => "dcgm-data-source",
            PollSource::Pool => "multicluster-metrics-data-source",
        }
    }

    pub fn extractor_type(self) -> &'static str {
        match self {
            PollSource::Models => "models-data-extractor",
            PollSource::Dcgm => "dcgm-extractor",
            PollSource::Pool => "multicluster-metrics-extractor",
        }
    }
}

/// One attribute source's failures at one endpoint: polls that got no answer (connection,
/// status, timeout), answers its extractor could not read, and why the last poll failed
/// (None once a poll succeeds again).
#[derive(Debug, Default)]
struct SourceErrors {
    poll: AtomicU64,
    extract: AtomicU64,
    last: Mutex<Option<Arc<str>>>,
}

/// What operators see of one source's failures at one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceErrorCounts {
    pub source: PollSource,
    pub poll_errors: u64,
    pub extract_errors: u64,
    /// Why the last poll failed; None when it succeeded.
    pub last_error: Option<Arc<str>>,
}

/// One entry of an endpoint's /v1/models answer (upstream's `ModelData`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ModelData {
    pub id: String,
    /// The base model a LoRA adapter derives from; None for a base model.
    #[serde(default)]
    pub parent: Option<String>,
}

impl Default for EndpointAttributes {
    fn default() -> Self {
        EndpointAttributes {
            gpu_utilization: AtomicU64::new(f64::NAN.to_bits()),
            pool_kv_cache_utilization: AtomicU64::new(f64::NAN.to_bits()),
            pool_queue_size: AtomicU64::new(f64::NAN.to_bits()),
            in_flight_tokens: AtomicU64::new(0),
            models: parking_lot::RwLock::new(None),
            errors: Default::default(),
        }
    }
}

fn read_f64(a: &AtomicU64) -> Option<f64> {
    let v = f64::from_bits(a.load(Ordering::Relaxed));
    (!v.is_nan()).then_some(v)
}

impl EndpointAttributes {
    /// `llm-d.ai/multicluster-kv-cache-utilization`: the cluster's pool-average KV use.
    pub fn pool_kv_cache_utilization(&self) -> Option<f64> {
        read_f64(&self.pool_kv_cache_utilization)
    }

    /// `llm-d.ai/multicluster-queue-size`: the cluster's pool-average queue size.
    pub fn pool_queue_size(&self) -> Option<f64> {
        read_f64(&self.pool_queue_size)
    }

    /// Store what one poll found; a metric it lacked keeps its last value.
    pub fn set_pool_metrics(&self, kv_cache_utilization: Option<f64>, queue_size: Option<f64>) {
        if let Some(v) = kv_cache_utilization {
            self.pool_kv_cache_utilization
                .store(v.to_bits(), Ordering::Relaxed);
        }
        if let Some(v) = queue_size {
            self.pool_queue_size.store(v.to_bits(), Ordering::Relaxed);
        }
    }

    pub fn gpu_utilization(&self) -> Option<f64> {
        let v = f64::from_bits(self.gpu_utilization.load(Ordering::Relaxed));
        (!v.is_nan()).then_some(v)
    }

    pub fn set_gpu_utilization(&self, value: f64) {
        self.gpu_utilization
            .store(value.to_bits(), Ordering::Relaxed);
    }

    pub fn in_flight_tokens(&self) -> u64 {
        self.in_flight_tokens.load(Ordering::Relaxed)
    }

    pub fn add_in_flight_tokens(&self, tokens: u64) {
        self.in_flight_tokens.fetch_add(tokens, Ordering::Relaxed);
    }

    /// Give back tokens a request held; never below zero (a release after the endpoint's
    /// counter was reset must not wrap).
    pub fn release_in_flight_tokens(&self, tokens: u64) {
        let _ = self
            .in_flight_tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(tokens))
            });
    }

    /// The models the endpoint's /v1/models listed last; None before the first answer.
    pub fn models(&self) -> Option<Arc<[ModelData]>> {
        self.models.read().clone()
    }

    pub fn set_models(&self, models: Arc<[ModelData]>) {
        *self.models.write() = Some(models);
    }

    fn source(&self, source: PollSource) -> &SourceErrors {
        &self.errors[source as usize]
    }

    /// A poll of `source` got no answer it could read: `extract` when the answer came but its
    /// extractor refused it.
    pub fn record_poll_error(&self, source: PollSource, extract: bool, why: &str) {
        let e = self.source(source);
        let counter = if extract { &e.extract } else { &e.poll };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut last = e.last.lock();
        if last.as_deref() != Some(why) {
            *last = Some(why.into());
        }
    }

    /// A poll of `source` succeeded: the failure it may have reported is over.
    pub fn record_poll_ok(&self, source: PollSource) {
        *self.source(source).last.lock() = None;
    }

    /// The sources that have failed at least once here, in `PollSource::ALL` order.
    pub fn source_errors(&self) -> Vec<SourceErrorCounts> {
        PollSource::ALL
            .iter()
            .filter_map(|&source| {
                let e = self.source(source);
                let (poll, extract) = (
                    e.poll.load(Ordering::Relaxed),
                    e.extract.load(Ordering::Relaxed),
                );
                (poll + extract > 0).then(|| SourceErrorCounts {
                    source,
                    poll_errors: poll,
                    extract_errors: extract,
                    last_error: e.last.lock().clone(),
                })
            })
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub info: Arc<EndpointInfo>,
    pub metrics: EndpointMetrics,
    /// When the last good scrape arrived; None until the first.
    pub scraped_at: Option<Instant>,
    pub scrape_errors: u64,
    /// Why the last scrape failed; None once one succeeds (or before any fails).
    pub scrape_error: Option<Arc<str>>,
}

impl Endpoint {
    pub fn address(&self) -> &str {
        &self.info.address
    }

    pub fn in_flight(&self) -> u32 {
        self.info.in_flight.load(Ordering::Relaxed)
    }

    /// This EPP's requests sent here since the last scrape: those in flight beyond the ones
    /// the server reported running.
    pub fn sent_since_scrape(&self) -> u32 {
        self.in_flight().saturating_sub(self.metrics.running)
    }

    /// Estimated tokens of this EPP's requests in flight here (inflight-load-producer).
    pub fn in_flight_tokens(&self) -> u64 {
        self.info.attributes.in_flight_tokens()
    }

    /// Fresh when a good scrape is younger than `staleness`.
    pub fn is_fresh(&self, now: Instant, staleness: Duration) -> bool {
        self.scraped_at
            .is_some_and(|t| now.saturating_duration_since(t) <= staleness)
    }
}

/// One consistent view of every endpoint.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Positions by address and by id, shared between snapshots until the endpoint set changes.
    index: Arc<Index>,
    /// Requests routed to any endpoint of this store, ever (`EndpointInfo::sent`), shared by
    /// all its snapshots: a scheduling cycle that sees it move while it scored knows its load
    /// scores missed a request another thread routed meanwhile.
    routed: Arc<AtomicU64>,
}

#[derive(Debug, Default)]
struct Index {
    by_address: HashMap<String, usize>,
    by_id: HashMap<u64, usize>,
}

impl Snapshot {
    /// The running count of requests routed through this store's endpoints.
    pub fn sent_total(&self) -> u64 {
        self.routed.load(Ordering::Acquire)
    }

    pub fn get(&self, address: &str) -> Option<&Arc<Endpoint>> {
        self.index
            .by_address
            .get(address)
            .map(|&i| &self.endpoints[i])
    }
}

/// The outcome of scraping one endpoint, as the scraper reports it.
#[derive(Debug)]
pub struct ScrapeResult {
    pub id: u64,
    pub outcome: Result<MetricsUpdate, String>,
    pub at: Instant,
}

pub struct EndpointStore {
    current: ArcSwap<Snapshot>,
    /// Serialises writers so no update is lost between load and swap; readers never take it.
    write: Mutex<()>,
    next_id: AtomicU64,
}

impl Default for EndpointStore {
    fn default() -> Self {
        EndpointStore {
            current: ArcSwap::from_pointee(Snapshot::default()),
            write: Mutex::new(()),
            next_id: AtomicU64::new(1),
        }
    }
}

impl EndpointStore {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Replace the endpoint set. Endpoints whose address and labels stay keep their id,
    /// metrics and in-flight count.
    pub fn set_endpoints(&self, specs: &[EndpointSpec]) {
        self.set_endpoints_with(specs, &HashMap::new());
    }

    /// As `set_endpoints`, with what is known of each endpoint's Pod, by address (one swap, so
    /// no snapshot pairs an endpoint with another Pod's facts).
    pub fn set_endpoints_with(&self, specs: &[EndpointSpec], pods: &HashMap<String, PodFacts>) {
        let _w = self.write.lock();
        let old = self.current.load();
        let mut endpoints = Vec::with_capacity(specs.len());
        let mut index = Index::default();
        let no_pod = PodFacts::default();
        for spec in specs {
            if index.by_address.contains_key(&spec.address) {
                continue;
            }
            let pod = pods.get(&spec.address).unwrap_or(&no_pod);
            let ep = match old.get(&spec.address) {
                Some(prev)
                    if prev.info.name == spec.name
                        && prev.info.labels == spec.labels
                        && &prev.info.pod == pod =>
                {
                    prev.clone()
                }
                Some(prev) => Arc::new(Endpoint {
                    info: Arc::new(self.info(
                        &old,
                        spec,
                        pod,
                        prev.info.in_flight.clone(),
                        prev.info.attributes.clone(),
                    )),
                    ..(**prev).clone()
                }),
                None => Arc::new(Endpoint {
                    info: Arc::new(self.info(&old, spec, pod, Arc::default(), Arc::default())),
                    metrics: EndpointMetrics::default(),
                    scraped_at: None,
                    scrape_errors: 0,
                    scrape_error: None,
                }),
            };
            index
                .by_address
                .insert(spec.address.clone(), endpoints.len());
            index.by_id.insert(ep.info.id, endpoints.len());
            endpoints.push(ep);
        }
        self.current.store(Arc::new(Snapshot {
            endpoints,
            index: Arc::new(index),
            routed: old.routed.clone(),
        }));
    }

    fn info(
        &self,
        old: &Snapshot,
        spec: &EndpointSpec,
        pod: &PodFacts,
        in_flight: Arc<AtomicU32>,
        attributes: Arc<EndpointAttributes>,
    ) -> EndpointInfo {
        let engine = spec
            .labels
            .iter()
            .find(|(k, _)| k == ENGINE_LABEL)
            .and_then(|(_, v)| Engine::from_name(v).ok())
            .unwrap_or_default();
        EndpointInfo {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            name: spec.name.clone(),
            address: spec.address.clone(),
            ip: ip_of(&spec.address).to_owned(),
            labels: spec.labels.clone(),
            pod: pod.clone(),
            engine,
            in_flight,
            attributes,
            routed: old.routed.clone(),
        }
    }

    /// Merge one scrape into the endpoint at `address`; false when no such endpoint exists.
    pub fn ingest(&self, address: &str, update: &MetricsUpdate, at: Instant) -> bool {
        let _w = self.write.lock();
        let old = self.current.load();
        let Some(&i) = old.index.by_address.get(address) else {
            return false;
        };
        let id = old.endpoints[i].info.id;
        let result = ScrapeResult {
            id,
            outcome: Ok(update.clone()),
            at,
        };
        self.publish(&old, std::slice::from_ref(&result));
        true
    }

    /// Apply a batch of scrape results as one new snapshot; results for endpoints that were
    /// removed meanwhile are dropped.
    pub fn apply_scrapes(&self, results: &[ScrapeResult]) {
        if results.is_empty() {
            return;
        }
        let _w = self.write.lock();
        let old = self.current.load();
        self.publish(&old, results);
    }

    fn publish(&self, old: &Snapshot, results: &[ScrapeResult]) {
        let mut endpoints = old.endpoints.clone();
        for r in results {
            let Some(&i) = old.index.by_id.get(&r.id) else {
                continue;
            };
            let ep = Arc::make_mut(&mut endpoints[i]);
            match &r.outcome {
                Ok(update) => {
                    ep.metrics.merge(update);
                    ep.scraped_at = Some(r.at);
                    ep.scrape_error = None;
                }
                Err(why) => {
                    ep.scrape_errors += 1;
                    if ep.scrape_error.as_deref() != Some(why.as_str()) {
                        ep.scrape_error = Some(why.as_str().into());
                    }
                }
            }
        }
        self.current.store(Arc::new(Snapshot {
            endpoints,
            index: old.index.clone(),
            routed: old.routed.clone(),
        }));
    }
}

/// The host part of "ip:port" (brackets kept off IPv6 literals).
pub fn ip_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, address: &str) -> EndpointSpec {
        EndpointSpec {
            name: name.into(),
            address: address.into(),
            labels: vec![],
        }
    }

    fn waiting(n: u32) -> MetricsUpdate {
        MetricsUpdate {
            waiting: Some(n),
            ..Default::default()
        }
    }

    #[test]
    fn kept_endpoints_keep_metrics_id_and_in_flight() {
        let store = EndpointStore::default();
        store.set_endpoints(&[spec("a", "10.0.0.1:8000"), spec("b", "10.0.0.2:8000")]);
        store.ingest("10.0.0.1:8000", &waiting(5), Instant::now());
        let before = store.snapshot().get("10.0.0.1:8000").unwrap().clone();
        before.info.in_flight.fetch_add(2, Ordering::Relaxed);
        store.set_endpoints(&[spec("a", "10.0.0.1:8000"), spec("c", "10.0.0.3:8000")]);
        let snap = store.snapshot();
        let after = snap.get("10.0.0.1:8000").unwrap();
        assert_eq!(after.metrics.waiting, 5);
        assert_eq!(after.info.id, before.info.id);
        assert_eq!(after.in_flight(), 2);
        assert!(snap.get("10.0.0.2:8000").is_none());
        assert!(snap.get("10.0.0.3:8000").unwrap().scraped_at.is_none());
    }

    #[test]
    fn a_published_snapshot_never_changes() {
        let store = EndpointStore::default();
        store.set_endpoints(&[spec("a", "10.0.0.1:8000")]);
        let old = store.snapshot();
        store.ingest("10.0.0.1:8000", &waiting(9), Instant::now());
        assert_eq!(old.endpoints[0].metrics.waiting, 0);
        assert_eq!(store.snapshot().endpoints[0].metrics.waiting, 9);
    }

    #[test]
    fn a_scrape_lacking_a_metric_keeps_its_last_value() {
        let store = EndpointStore::default();
        store.set_endpoints(&[spec("a", "10.0.0.1:8000")]);
        let full = MetricsUpdate {
            waiting: Some(3),
            running: Some(4),
            kv_usage: Some(0.5),
            ..Default::default()
        };
        store.ingest("10.0.0.1:8000", &full, Instant::now());
        store.ingest("10.0.0.1:8000", &waiting(1), Instant::now());
        let m = &store.snapshot().endpoints[0].metrics;
        assert_eq!((m.waiting, m.running, m.kv_usage), (1, 4, 0.5));
    }

    #[test]
    fn scrape_errors_are_counted_and_keep_the_last_good_time() {
        let store = EndpointStore::default();
        store.set_endpoints(&[spec("a", "10.0.0.1:8000")]);
        let id = store.snapshot().endpoints[0].info.id;
        let t = Instant::now();
        store.apply_scrapes(&[ScrapeResult {
            id,
            outcome: Ok(waiting(1)),
            at: t,
        }]);
        let failed = ScrapeResult {
            id,
            outcome: Err("refused".into()),
            at: Instant::now(),
        };
        store.apply_scrapes(&[failed]);
        let ep = store.snapshot().endpoints[0].clone();
        assert_eq!((ep.scrape_errors, ep.scraped_at), (1, Some(t)));
        assert_eq!(ep.scrape_error.as_deref(), Some("refused"));
        store.apply_scrapes(&[ScrapeResult {
            id,
            outcome: Ok(waiting(2)),
            at: Instant::now(),
        }]);
        let ep = &store.snapshot().endpoints[0];
        assert_eq!((ep.scrape_errors, ep.scrape_error.as_deref()), (1, None));
    }

    #[test]
    fn attribute_sources_count_their_failures_apart_and_forget_the_reason_once_one_reads() {
        let a = EndpointAttributes::default();
        assert_eq!(a.source_errors(), vec![]);
        a.record_poll_error(PollSource::Dcgm, false, "HTTP status 404");
        a.record_poll_error(PollSource::Dcgm, true, "no samples");
        a.record_poll_error(PollSource::Models, false, "refused");
        a.record_poll_ok(PollSource::Models);
        let seen: Vec<_> = a
            .source_errors()
            .into_iter()
            .map(|e| (e.source, e.poll_errors, e.extract_errors, e.last_error))
            .collect();
        assert_eq!(
            seen,
            vec![
                (PollSource::Models, 1, 0, None),
                (PollSource::Dcgm, 1, 1, Some("no samples".into())),
            ]
        );
    }

    #[test]
    fn results_for_removed_endpoints_are_dropped() {
        let store = EndpointStore::default();
        store.set_endpoints(&[spec("a", "10.0.0.1:8000")]);
        let id = store.snapshot().endpoints[0].info.id;
        store.set_endpoints(&[]);
        store.apply_scrapes(&[ScrapeResult {
            id,
            outcome: Ok(waiting(1)),
            at: Instant::now(),
        }]);
        assert!(store.snapshot().endpoints.is_empty());
        assert!(!store.ingest("10.0.0.1:8000", &waiting(1), Instant::now()));
    }

    #[test]
    fn engine_comes_from_the_engine_type_label() {
        let store = EndpointStore::default();
        let mut s = spec("a", "10.0.0.1:8000");
        s.labels.push((ENGINE_LABEL.into(), "sglang".into()));
        store.set_endpoints(&[s, spec("b", "10.0.0.2:8000")]);
        let snap = store.snapshot();
        assert_eq!(snap.endpoints[0].info.engine, Engine::Sglang);
        assert_eq!(snap.endpoints[1].info.engine, Engine::Vllm);
    }

    #[test]
    fn ip_is_the_host_part_of_the_address() {
        assert_eq!(ip_of("10.1.2.3:8000"), "10.1.2.3");
        assert_eq!(ip_of("[fd00::1]:8000"), "fd00::1");
    }
}
