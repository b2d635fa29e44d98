//! The per-pool Router: parses a request, schedules it over the current endpoint snapshot and
//! counts it in flight on the chosen endpoint; owns the store and the optional scraper.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::{ArcSwap, ArcSwapOption};
use parking_lot::Mutex;

use crate::admission::{Objectives, Policies, RewriteTable};
use crate::datalayer::dcgm::GpuProbe;
use crate::datalayer::endpoints::{PodFacts, SourceErrorCounts};
use crate::datalayer::{parse_metrics, EndpointSpec, EndpointStore, Engine, ScrapeConfig, Scraper};
use crate::parse::{self, ApiKind, GrpcMethod, ParseError, ParsedRequest};
use crate::scheduling::config::{ConfigError, RouterConfig};
use crate::scheduling::contracts::filter::Filter;
use crate::scheduling::contracts::scorer::Picks;
use crate::scheduling::cycle::{Cycle, ProfileTrace, Request, ScheduleError};
use crate::scheduling::filters::subset_filter::SubsetFilter;
use crate::scheduling::handlers::pd_decider::carries_media;
use crate::scheduling::handlers::stage_headers::stage_headers;
use crate::scheduling::producers::burst_prefix_cache_producer::{
    BurstPrefixProducer, Replica, Ticket,
};
use crate::scheduling::producers::kv_events::{decode_batch, KvEventsError};
use crate::scheduling::producers::latency_predictor::Features;
use crate::scheduling::producers::p2p_source_producer::KV_CACHE_SOURCE_HEADER;
use crate::scheduling::producers::precise_prefix_cache_producer::{BlockIndex, BlockIndexStats};
use crate::scheduling::request_parsers::Parsers;
use crate::scheduling::scheduler::Scheduler;
use crate::scheduling::session::session_token;
use crate::stats::RequestStats;
use crate::tokenize::TokenSource;

/// Where a request goes, and what the request path must change on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// "ip:port[,ip:port...]": primary first, then fallbacks.
    pub endpoints: String,
    primary_len: usize,
    /// Data-parallel: the picked pod when `endpoints` names its rank-0 port instead.
    counted: Option<String>,
    /// What the latency predictor saw for the primary; trains it when the request finishes.
    latency_features: Option<Features>,
    /// Estimated tokens this request holds on the primary (inflight-load-producer) until
    /// `Router::first_byte` or `Router::finish` gives them back.
    /// (u32 keeps a Decision within the size that travels through flow control by value.)
    pub held_tokens: u32,
    /// The held tokens go back at the first response byte (else when the response ends).
    tokens_until_first_byte: bool,
    pub model: Option<String>,
    /// The model after rewrite; None when not rewritten.
    pub target_model: Option<String>,
    /// The rewritten body; None when the model was not rewritten.
    pub body: Option<Vec<u8>>,
    pub stream: bool,
    pub kind: ApiKind,
    /// A gRPC request's method (its response frames carry the usage); None for HTTP.
    pub grpc: Option<GrpcMethod>,
    /// Headers the proxy must add to the request upstream (e.g. `x-prefiller-host-port` when a
    /// prefill endpoint was picked); empty when none.
    pub headers: Vec<(String, String)>,
    /// Headers the proxy must add to the response to the client: with session affinity
    /// (encoded_endpoint_header), the token naming the primary (`x-session-token` by default),
    /// for the client to send back; empty when none.
    /// (Boxed slices keep a Decision small: it travels by value through flow control.)
    pub response_headers: Box<[(String, String)]>,
    /// A p2p-source-producer is listed and named no source: an inbound
    /// `x-kv-cache-source-host-port` must be removed (a flag keeps the Decision small).
    strip_kv_source: bool,
    /// With `emitEndpointScores` (upstream's --emit-endpoint-scores): every endpoint the primary
    /// profile scored ("ip:port") with its weighted score; None otherwise, and for
    /// data-parallel decisions, whose destination port is not the scored endpoint's (as upstream).
    pub endpoint_scores: Option<Box<[(String, f64)]>>,
}

/// The optional inputs of a route beyond path and body.
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteOptions<'a> {
    pub model_rewrite: Option<&'a str>,
    pub subset: Option<&'a [String]>,
    /// Request headers, for session affinity and other header-driven plugins.
    pub headers: &'a [(String, String)],
    /// The request's objective priority, for admitters (< 0: sheddable).
    pub priority: i32,
    /// Token ids computed before the cycle (see `Router::remote_tokens`).
    pub tokens: Option<&'a crate::tokenize::PreTokenized>,
    /// The burst-prefix-cache-producer's window, already waited for (see `Router::burst_ticket`):
    /// Some(the endpoint id it assigned, or None for no affinity). None: `route_with` waits for
    /// the window on the calling thread itself.
    pub burst: Option<Option<u64>>,
}

impl Decision {
    /// Request headers the proxy must remove; empty when none.
    pub fn removed_headers(&self) -> &'static [&'static str] {
        if self.strip_kv_source {
            &[KV_CACHE_SOURCE_HEADER]
        } else {
            &[]
        }
    }

    /// The picked endpoint, which the request counts against until released.
    pub fn primary(&self) -> &str {
        self.counted
            .as_deref()
            .unwrap_or(&self.endpoints[..self.primary_len])
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    BadRequest(#[from] ParseError),
    #[error(transparent)]
    NoEndpoints(#[from] ScheduleError),
    /// The pool answers only for the models on its allow-list (404 upstream of the proxy).
    #[error("model '{model}' is not served by pool '{pool}'")]
    ModelNotServed { model: String, pool: String },
}

/// The models a pool serves when it refuses the others (the AI Gateway's behaviour); off by
/// default, as upstream routes any model.
#[derive(Debug)]
struct ModelAllowList {
    pool: String,
    models: HashSet<String>,
}

impl ModelAllowList {
    /// A request naming no model is not refused: it names no unknown model. A rewritten request
    /// passes when either the model asked for or the one it becomes is listed.
    fn permits(&self, model: Option<&str>, rewrite: Option<&str>) -> bool {
        match model {
            None => true,
            Some(m) => self.models.contains(m) || rewrite.is_some_and(|r| self.models.contains(r)),
        }
    }
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
    /// Estimated tokens of the in-flight requests (inflight-load-producer).
    pub in_flight_tokens: u64,
    /// The models the endpoint's /v1/models listed (models-data-source); None before any.
    pub models: Option<Vec<String>>,
    /// Since the last good scrape; None when never scraped.
    pub age_ms: Option<u64>,
    pub stale: bool,
    pub scrape_errors: u64,
    /// Why the last metrics scrape failed; None once one succeeds.
    pub scrape_error: Option<String>,
    /// The attribute sources (models, DCGM, pool metrics) that have failed here.
    pub source_errors: Vec<SourceErrorCounts>,
}

/// One profile's run in an explained decision, endpoints by address.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileExplanation {
    pub profile: String,
    /// The endpoints left after the filters, in scoring order.
    pub candidates: Vec<String>,
    /// (scorer name, weight, raw score per candidate) in profile order.
    pub scores: Vec<(String, f64, Vec<f64>)>,
    pub totals: Vec<f64>,
    pub picked: Vec<String>,
}

pub struct Router {
    config: RouterConfig,
    store: Arc<EndpointStore>,
    scheduler: Scheduler,
    parsers: Parsers,
    /// The metrics scraper and the GPU telemetry scraper, when running.
    scraper: Mutex<Vec<Scraper>>,
    stats: Arc<RequestStats>,
    /// Objectives and model rewrites, replaced whole by the control plane.
    policies: ArcSwap<Policies>,
    allowed_models: ArcSwapOption<ModelAllowList>,
}

thread_local! {
    static PICKS: std::cell::RefCell<Picks> = std::cell::RefCell::default();
}

impl Router {
    pub fn new(config: RouterConfig) -> Result<Router, ConfigError> {
        let scheduler = Scheduler::from_config(&config)?;
        let parsers = match &config.parsers {
            Some(kinds) => Parsers::new(kinds.iter().map(String::as_str))?,
            None => Parsers::defaults(),
        };
        Ok(Router {
            stats: Arc::new(RequestStats::new(config.max_metric_series)),
            config,
            store: Arc::new(EndpointStore::default()),
            scheduler,
            parsers,
            scraper: Mutex::new(Vec::new()),
            policies: ArcSwap::from_pointee(Policies::default()),
            allowed_models: ArcSwapOption::empty(),
        })
    }

    pub fn from_json(config_json: &str) -> Result<Router, ConfigError> {
        Router::new(RouterConfig::from_json(config_json)?)
    }

    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// Request metrics of every request path serving this pool.
    pub fn stats(&self) -> &Arc<RequestStats> {
        &self.stats
    }

    pub fn store(&self) -> &Arc<EndpointStore> {
        &self.store
    }

    /// Whether routing reads request headers (session affinity, header-driven plugins, SLO
    /// headers): when false a request path need not pass them.
    pub fn reads_headers(&self) -> bool {
        self.scheduler.reads_headers()
    }

    /// The resolved scheduling configuration (profiles, plugins, weights) as JSON.
    pub fn describe(&self) -> serde_json::Value {
        let mut d = self.scheduler.describe();
        d["parsers"] = self.parsers.kinds().into();
        d
    }

    /// Replace the endpoint set; plugins forget what they kept about endpoints that left.
    pub fn set_endpoints(&self, specs: &[EndpointSpec]) {
        self.set_endpoints_with(specs, &HashMap::new());
    }

    /// As `set_endpoints`, with what Kubernetes mode read of each endpoint's Pod, by address
    /// (its name, `spec.hostname`, node address).
    pub fn set_endpoints_with(&self, specs: &[EndpointSpec], pods: &HashMap<String, PodFacts>) {
        let before = self.store.snapshot();
        match self.config.relabel(specs) {
            Some(relabelled) => self.store.set_endpoints_with(&relabelled, pods),
            None => self.store.set_endpoints_with(specs, pods),
        }
        let after = self.store.snapshot();
        for ep in &before.endpoints {
            let kept = after
                .get(ep.address())
                .is_some_and(|e| e.info.id == ep.info.id);
            if !kept {
                self.scheduler.endpoint_removed(ep.info.id);
            }
        }
    }

    /// Serve only `models` (Some), naming `pool` in refusals, or any model (None: the default).
    pub fn set_allowed_models(&self, pool: &str, models: Option<&[String]>) {
        let list = models.map(|m| {
            Arc::new(ModelAllowList {
                pool: pool.to_owned(),
                models: m.iter().cloned().collect(),
            })
        });
        self.allowed_models.store(list);
    }

    /// Feed one scrape by hand; false when no endpoint has that address.
    pub fn ingest_metrics(&self, address: &str, text: &str, engine: Engine) -> bool {
        self.store
            .ingest(address, &parse_metrics(text, engine), Instant::now())
    }

    /// Start the scrape threads (no-op when they run already): the engine metrics when a
    /// metrics source is wired, the DCGM exporters when a dcgm-data-source is, the model lists
    /// when a models-data-source is.
    pub fn start_scraper(&self) -> std::io::Result<()> {
        let mut running = self.scraper.lock();
        if !running.is_empty() {
            return Ok(());
        }
        let base = self
            .config
            .metrics_interval_ms
            .unwrap_or(self.config.scrape_interval_ms);
        let config = |interval: u64| ScrapeConfig {
            interval: std::time::Duration::from_millis(interval),
            timeout: std::time::Duration::from_millis(self.config.scrape_timeout_ms),
        };
        if self.config.scrape_metrics {
            running.push(
                match self.config.metrics_tls().map_err(std::io::Error::other)? {
                    Some(tls) => Scraper::start_tls(self.store.clone(), config(base), tls)?,
                    None => Scraper::start(self.store.clone(), config(base))?,
                },
            );
        }
        if let Some(probe) = self.config.pool_probe().map_err(std::io::Error::other)? {
            let every = (self.config.pool_metrics.as_ref())
                .and_then(|p| p.interval_ms)
                .unwrap_or(self.config.scrape_interval_ms);
            running.push(Scraper::start_pool(
                self.store.clone(),
                config(every),
                probe,
            )?);
        }
        if let Some(gpu) = &self.config.gpu_telemetry {
            let probe = GpuProbe {
                port: gpu.port,
                path: gpu.path.clone(),
                use_node_address: gpu.use_node_address,
                tls: self.config.gpu_tls().map_err(std::io::Error::other)?,
            };
            let every = gpu.interval_ms.unwrap_or(self.config.scrape_interval_ms);
            running.push(Scraper::start_gpu(
                self.store.clone(),
                config(every),
                probe,
            )?);
        }
        if let Some(models) = &self.config.models_source {
            let every = models.interval_ms.unwrap_or(self.config.scrape_interval_ms);
            running.push(Scraper::start_models(
                self.store.clone(),
                config(every),
                &models.path,
                self.config.models_tls().map_err(std::io::Error::other)?,
            )?);
        }
        Ok(())
    }

    pub fn stop_scraper(&self) {
        let running = std::mem::take(&mut *self.scraper.lock());
        for s in running {
            s.stop();
        }
    }

    /// The objectives and rewrite rules requests are admitted and routed with now.
    pub fn policies(&self) -> arc_swap::Guard<Arc<Policies>> {
        self.policies.load()
    }

    /// Replace every objective at once.
    pub fn set_objectives(&self, objectives: Objectives) {
        let rewrites = self.policies.load().rewrites.clone();
        self.policies.store(Arc::new(Policies {
            objectives,
            rewrites,
        }));
    }

    /// Replace the whole model rewrite table at once.
    pub fn set_rewrites(&self, rewrites: RewriteTable) {
        let objectives = self.policies.load().objectives.clone();
        self.policies.store(Arc::new(Policies {
            objectives,
            rewrites,
        }));
    }

    /// Parse, rewrite the model if asked, schedule, and count the request on the primary.
    pub fn route(
        &self,
        path: &str,
        body: &[u8],
        model_rewrite: Option<&str>,
        subset: Option<&[String]>,
    ) -> Result<Decision, RouteError> {
        let options = RouteOptions {
            model_rewrite,
            subset,
            headers: &[],
            priority: 0,
            tokens: None,
            burst: None,
        };
        self.route_with(path, body, &options)
    }

    /// `route` with request headers and any later options.
    pub fn route_with(
        &self,
        path: &str,
        body: &[u8],
        options: &RouteOptions<'_>,
    ) -> Result<Decision, RouteError> {
        self.decide(path, body, options, None)
    }

    /// What `route_with` would decide and why, per profile, with no side effect: nothing is
    /// counted in flight and no plugin learns from it.
    pub fn explain(
        &self,
        path: &str,
        body: &[u8],
        options: &RouteOptions<'_>,
    ) -> Result<(Decision, Vec<ProfileExplanation>), RouteError> {
        let mut traces = Vec::new();
        let snapshot = self.store.snapshot();
        let decision = self.decide(path, body, options, Some(&mut traces))?;
        let address = |c: &u32| snapshot.endpoints[*c as usize].address().to_owned();
        let explained = traces
            .into_iter()
            .map(|t: ProfileTrace| ProfileExplanation {
                candidates: t.candidates.iter().map(address).collect(),
                picked: t.picked.iter().map(address).collect(),
                profile: t.profile,
                scores: t.scores,
                totals: t.totals,
            })
            .collect();
        Ok((decision, explained))
    }

    /// Apply one KV-event batch (msgpack `KVEventBatch`) published by the endpoint at `address`
    /// for `model` ("" when the topic does not say) to the precise-prefix-cache-producer's
    /// index. Ok(false) when no endpoint has that address.
    pub fn apply_kv_events(
        &self,
        address: &str,
        model: &str,
        payload: &[u8],
        seq: Option<u64>,
    ) -> Result<bool, KvEventsError> {
        let index = self.scheduler.block_index().ok_or_else(|| {
            KvEventsError("no precise-prefix-cache-producer is configured".into())
        })?;
        let snapshot = self.store.snapshot();
        let Some(ep) = snapshot.get(address) else {
            decode_batch(payload)?;
            return Ok(false);
        };
        index.apply_payload(ep.info.id, model, payload, seq)?;
        Ok(true)
    }

    /// The token-producer's source when tokenizing needs the network (the model server's
    /// render API): the ext_proc server then tokenizes each request off its routing path and
    /// passes the ids in `RouteOptions::tokens`, so a slow or dead render endpoint never stalls
    /// the cycles of other requests. None when no precise index or the tokenizer is local.
    pub fn remote_tokens(&self) -> Option<Arc<TokenSource>> {
        self.scheduler
            .block_index()
            .and_then(|i| i.remote_tokens().cloned())
    }

    /// Join the burst-prefix-cache-producer's window with this request; the ticket resolves
    /// when the window seals, and its value goes in `RouteOptions::burst`. None when no burst
    /// producer is listed or the body does not parse (routing then refuses it); Some(Err) when
    /// the window is full (the request is then routed without the producer's data, as upstream).
    pub fn burst_ticket(
        &self,
        path: &str,
        body: &[u8],
        subset: Option<&[String]>,
    ) -> Option<Result<Ticket, String>> {
        self.scheduler.burst_producer()?;
        let request = self.parsers.parse(path, body).ok()?;
        self.burst_ticket_for(&request, subset)
    }

    /// `burst_ticket` for a request parsed already (a route's own parse).
    fn burst_ticket_for(
        &self,
        request: &ParsedRequest,
        subset: Option<&[String]>,
    ) -> Option<Result<Ticket, String>> {
        let producer = self.scheduler.burst_producer()?;
        let hashes = producer.hashes(
            request.model.as_deref().unwrap_or(""),
            request.cache_salt.as_deref(),
            request.prompt.as_bytes(),
        );
        let snapshot = self.store.snapshot();
        let mut cycle = Cycle::new(&snapshot, Instant::now(), self.config.staleness());
        cycle.subset = subset.filter(|_| !self.config.ignore_subset_hint);
        let mut candidates: Vec<u32> = (0..snapshot.endpoints.len() as u32).collect();
        if SubsetFilter.filter(&cycle, &mut candidates).is_err() {
            candidates.clear();
        }
        let replicas: Arc<[Replica]> = candidates
            .iter()
            .map(|&c| {
                let ep = cycle.endpoint(c);
                Replica {
                    id: ep.info.id,
                    name: ep.info.name.clone(),
                    running: ep.metrics.running,
                }
            })
            .collect();
        Some(producer.join(hashes, replicas))
    }

    /// Totals of the precise index; None when no producer is configured.
    pub fn kv_event_stats(&self) -> Option<BlockIndexStats> {
        self.scheduler.block_index().map(|i| i.stats())
    }

    /// The precise index itself (its skipped events, its lookup latency); None without one.
    pub fn block_index(&self) -> Option<&Arc<BlockIndex>> {
        self.scheduler.block_index()
    }

    fn decide(
        &self,
        path: &str,
        body: &[u8],
        options: &RouteOptions<'_>,
        trace: Option<&mut Vec<ProfileTrace>>,
    ) -> Result<Decision, RouteError> {
        let commit = trace.is_none();
        let request = self.parsers.parse(path, body)?;
        // A rewrite the proxy named wins; else the InferenceModelRewrite rule for the model.
        // A protobuf body is never rewritten (as upstream): rules do not apply, and a named
        // rewrite only changes the model it is scheduled for.
        let policies = self.policies.load();
        let rule = match options.model_rewrite {
            None if request.grpc.is_none() => policies.rewrites.rule_for(request.model.as_deref()),
            _ => None,
        };
        let model_rewrite = options.model_rewrite.or_else(|| rule.map(|r| r.pick()));
        if let (true, Some(rule), Some(target)) = (commit, rule, model_rewrite) {
            let name = rule.source.rsplit('/').next().unwrap_or("");
            let model = request.model.as_deref().unwrap_or("");
            self.stats.rewrote(name, model, target);
        }
        if let Some(allowed) = self.allowed_models.load().as_deref() {
            if !allowed.permits(request.model.as_deref(), model_rewrite) {
                return Err(RouteError::ModelNotServed {
                    model: request.model.unwrap_or_default(),
                    pool: allowed.pool.clone(),
                });
            }
        }
        let rewritten = match model_rewrite {
            Some(target) if request.grpc.is_none() && request.model.as_deref() != Some(target) => {
                // The parse above located the model string: splice there, no second parse.
                Some(match request.model_span.clone() {
                    Some(span) => parse::splice_model(body, span, target),
                    None => parse::rewrite_model(body, target)?,
                })
            }
            _ => None,
        };
        let served_model = model_rewrite.or(request.model.as_deref()).unwrap_or("");
        // A committed route waits for its burst window here unless its caller did already.
        let burst = match options.burst {
            Some(placed) => placed,
            None if commit => self
                .burst_ticket_for(&request, options.subset)
                .and_then(Result::ok)
                .and_then(BurstPrefixProducer::wait),
            None => None,
        };
        // An in-process tokenizer runs first (1–4 ms for a long chat), so the load scores below
        // are read a moment before this request is counted in flight. Tokenized inside the
        // cycle, after queue-scorer read the in-flight counts, every cycle that committed
        // meanwhile was invisible to it: concurrent requests saw the same load and the same
        // small prefix lead, and went to one server (benches/quality/README.md, session 13).
        let local_tokens = match options.tokens {
            None => (self.scheduler.block_index())
                .and_then(|i| i.local_tokens())
                .map(|source| source.tokens(path, body)),
            Some(_) => None,
        };
        let snapshot = self.store.snapshot();
        let attributes = self.scheduler.request_attributes(options.headers);
        let port = self.scheduler.primary_port();
        let mut cycle = Cycle::new(&snapshot, Instant::now(), self.config.staleness());
        cycle.subset = options.subset.filter(|_| !self.config.ignore_subset_hint);
        if self.config.emit_endpoint_scores && port.is_none() {
            cycle.primary_scores = Some(Default::default());
        }
        cycle.request = Request {
            model: served_model,
            prompt: request.prompt.as_bytes(),
            cache_salt: request.cache_salt.as_deref(),
            path,
            body: rewritten.as_deref().unwrap_or(body),
            headers: options.headers,
            attributes: &attributes,
            multimodal: self.scheduler.needs_multimodal() && carries_media(body),
            priority: options.priority,
            tokens: options.tokens.or(local_tokens.as_ref()),
            burst,
        };
        if !commit {
            cycle.trace = Some(Default::default());
        }
        // Before the cycle: its picks teach the prefix producers this request's blocks.
        let kv_sources = self.scheduler.kv_sources(&cycle);
        let (endpoints, (headers, removed), session, counted, latency_features, held_tokens) =
            PICKS.with_borrow_mut(|picks| -> Result<_, ScheduleError> {
                if !commit {
                    self.scheduler.dry_run(&cycle, picks)?;
                } else {
                    let started = Instant::now();
                    let scheduled = self.scheduler.schedule(&cycle, picks);
                    self.stats.scheduled(started.elapsed().as_secs_f64());
                    if scheduled.is_err() {
                        self.stats.attempted(false, served_model, "", "");
                    }
                    if scheduled? {
                        self.stats.rescored.fetch_add(1, Ordering::Relaxed);
                    }
                    self.scheduler.kv_sources_learn(&cycle, picks, &kv_sources);
                }
                let mut joined = String::with_capacity(picks.primary.len() * 22);
                for (i, &p) in picks.primary.iter().enumerate() {
                    if i > 0 {
                        joined.push(',');
                    }
                    let ep = cycle.endpoint(p);
                    match port {
                        Some(port) => write!(joined, "{}:{port}", ep.info.ip).unwrap(),
                        None => joined.push_str(ep.address()),
                    }
                }
                let primary = cycle.endpoint(picks.primary[0]);
                let held = self.scheduler.in_flight_load().held(
                    &cycle,
                    picks.primary[0],
                    request.max_tokens,
                );
                if commit {
                    primary.info.sent();
                    primary
                        .info
                        .attributes
                        .add_in_flight_tokens(u64::from(held));
                    self.stats
                        .attempted(true, served_model, &primary.info.name, primary.address());
                }
                let mut headers = stage_headers(&cycle, picks, port.is_some());
                let removed =
                    self.scheduler
                        .source_headers(&cycle, picks, &kv_sources, &mut headers);
                // upstream's profileName: the token names that profile's pick, none if it did not run
                let mut stamped: Vec<(String, String)> = self
                    .scheduler
                    .token_headers()
                    .iter()
                    .filter_map(|(h, profile)| {
                        let picked = match profile {
                            None => picks.primary[0],
                            Some(at) => picks.of_profile(*at)?,
                        };
                        Some((h.clone(), session_token(&cycle.endpoint(picked).info.name)))
                    })
                    .collect();
                self.scheduler.stamp(&cycle, picks.primary[0], &mut stamped);
                let session: Box<[(String, String)]> = stamped.into_boxed_slice();
                let counted = port.map(|_| primary.address().to_owned());
                let features = self
                    .scheduler
                    .latency_producer()
                    .map(|p| p.features_of(&cycle, picks.primary[0]));
                Ok((joined, (headers, removed), session, counted, features, held))
            })?;
        let endpoint_scores = cycle.primary_scores.take().map(|scored| {
            scored
                .into_inner()
                .into_iter()
                .map(|(c, score)| (cycle.endpoint(c).address().to_owned(), score))
                .collect()
        });
        if let (Some(sink), Some(recorded)) = (trace, cycle.trace.take()) {
            *sink = recorded.into_inner();
        }
        let primary_len = endpoints.find(',').unwrap_or(endpoints.len());
        Ok(Decision {
            endpoints,
            primary_len,
            counted,
            latency_features,
            held_tokens: if commit { held_tokens } else { 0 },
            tokens_until_first_byte: self.scheduler.in_flight_load().released_at_first_byte(),
            target_model: rewritten.as_ref().and(model_rewrite.map(str::to_owned)),
            model: request.model,
            body: rewritten,
            stream: request.stream,
            kind: request.kind,
            grpc: request.grpc,
            headers,
            strip_kv_source: removed,
            response_headers: session,
            endpoint_scores,
        })
    }

    /// A routed request finished after `ttft_s` to its first byte and `tpot_s` per output token
    /// after that: the latency predictor learns from it (no-op without one).
    pub fn observe_latency(&self, decision: &Decision, ttft_s: f64, tpot_s: Option<f64>) {
        if let (Some(p), Some(x)) = (
            self.scheduler.latency_producer(),
            &decision.latency_features,
        ) {
            p.predictor
                .observe(x, ttft_s * 1000.0, tpot_s.map(|t| t * 1000.0));
        }
    }

    /// The agent session identity among request headers (lower-case names) when an
    /// agent-identity plugin is listed: the request's fairness id unless it names one.
    pub fn agent_identity<'h, I>(&self, headers: I) -> Option<&'h str>
    where
        I: Iterator<Item = (&'h str, &'h str)> + Clone,
    {
        self.scheduler.agent_identity()?.identify(headers)
    }

    /// destination-endpoint-served-verifier: the response header (name, value) reporting the
    /// served endpoint, given what the proxy's `envoy.lb` metadata held; None when not listed.
    pub fn served_verdict(&self, lb: bool, served: Option<&str>) -> Option<(&'static str, String)> {
        use crate::scheduling::producers::served_verifier::{verdict, RESULT_HEADER};
        self.scheduler
            .verifies_served()
            .then(|| (RESULT_HEADER, verdict(lb, served)))
    }

    /// What the request-attribute-reporters report for a response with this `usage` object:
    /// (metadata namespace, key, value) each; empty when none is configured or none applies.
    pub fn usage_attributes(&self, usage: &serde_json::Value) -> Vec<(&str, &str, i64)> {
        self.scheduler
            .reporters()
            .iter()
            .filter_map(|r| Some((r.namespace.as_str(), r.name.as_str(), r.report(usage)?)))
            .collect()
    }

    /// Whether request-attribute-reporters are configured (the response path then reads the
    /// usage object).
    pub fn reports_usage(&self) -> bool {
        !self.scheduler.reporters().is_empty()
    }

    /// Whether admitters are configured: the request path must then say the priority.
    pub fn has_admitters(&self) -> bool {
        self.scheduler.has_admitters()
    }

    /// The first response byte of a routed request arrived: its prefill is done, so the
    /// prompt tokens it held go back (unless an output estimate is held to the end).
    pub fn first_byte(&self, decision: &mut Decision) {
        if decision.tokens_until_first_byte {
            self.release_tokens(decision);
        }
    }

    /// A routed request ended (or was abandoned): the tokens it still holds go back, and the
    /// request no longer counts in flight. Idempotent for the tokens.
    pub fn finish(&self, decision: &mut Decision) {
        self.release_tokens(decision);
        self.release(decision.primary());
    }

    fn release_tokens(&self, decision: &mut Decision) {
        let tokens = std::mem::take(&mut decision.held_tokens);
        if tokens > 0 {
            self.release_held(decision.primary(), 0, u64::from(tokens));
        }
    }

    /// The request sent to `address` finished; false when the address is not in the pool.
    pub fn release(&self, address: &str) -> bool {
        self.release_held(address, 1, 0)
    }

    /// Give back `requests` in-flight requests and `tokens` in-flight tokens held at
    /// `address` (the Python request paths release by address); false when not in the pool.
    pub fn release_held(&self, address: &str, requests: u32, tokens: u64) -> bool {
        let snapshot = self.store.snapshot();
        let Some(ep) = snapshot.get(address) else {
            return false;
        };
        ep.info.attributes.release_in_flight_tokens(tokens);
        let _ = ep
            .info
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(requests))
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
                in_flight_tokens: ep.in_flight_tokens(),
                models: ep
                    .info
                    .attributes
                    .models()
                    .map(|m| m.iter().map(|d| d.id.clone()).collect()),
                age_ms: ep
                    .scraped_at
                    .map(|t| now.saturating_duration_since(t).as_millis() as u64),
                stale: !ep.is_fresh(now, staleness),
                scrape_errors: ep.scrape_errors,
                scrape_error: ep.scrape_error.as_deref().map(str::to_owned),
                source_errors: ep.info.attributes.source_errors(),
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
pub(crate) mod tests;

#[cfg(test)]
#[path = "router_config_tests.rs"]
mod config_tests;

#[cfg(test)]
#[path = "in_flight_load_tests.rs"]
mod in_flight_load_tests;
