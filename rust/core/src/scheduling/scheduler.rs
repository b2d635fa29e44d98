//! The Scheduler: plugins built from the config, profiles wired from plugin references, and
//! the profile handler that runs them. Built once; a cycle reads it without locks.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::scheduling::config::{ConfigError, PluginSpec, ProfileSpec, RouterConfig};
use crate::scheduling::contracts::admitter::Admitter;
use crate::scheduling::contracts::filter::Filter;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::profile_handler::ProfileHandler;
use crate::scheduling::contracts::scorer::{Picks, PrefixProducers, Scorer};
use crate::scheduling::contracts::screener::Screener;
use crate::scheduling::cycle::{Cycle, CycleState, ScheduleError};
use crate::scheduling::filters::endpoint_attribute_filter::GPU_ATTRIBUTE_CONSUMERS;
use crate::scheduling::filters::subset_filter::SubsetFilter;
use crate::scheduling::handler_wiring::build_handler;
use crate::scheduling::pickers::max_score_picker::MaxScorePicker;
use crate::scheduling::producers::agent_identity::AgentIdentity;
use crate::scheduling::producers::approx_prefix_cache_producer::ApproxPrefixProducer;
use crate::scheduling::producers::burst_prefix_cache_producer::BurstPrefixProducer;
use crate::scheduling::producers::inflight_load_producer::TokenEstimate;
use crate::scheduling::producers::mm_embeddings_cache_producer::MmEmbeddingsProducer;
use crate::scheduling::producers::p2p_source_producer::{P2pSourceProducer, SourceCandidates};
use crate::scheduling::producers::precise_prefix_cache_producer::BlockIndex;
use crate::scheduling::producers::predicted_latency_producer::PredictedLatencyProducer;
use crate::scheduling::producers::request_attribute_reporter::AttributeReporter;
use crate::scheduling::producers::session_id_producer::SessionIdProducer;
use crate::scheduling::profile::{Named, SchedulingProfile};
use crate::scheduling::registry;
use crate::scheduling::scorers::multicluster_scorers::POOL_METRICS_CONSUMERS;
use crate::scheduling::session::{self, ProfileRef, SessionSource, Strategy};

/// Types that read prefix matches before the scorers run.
const PREFIX_FILTERS: [&str; 2] = ["prefix-cache-affinity-filter", "p2p-source-producer"];

/// Plugin types that read predicted-latency-producer's output.
const LATENCY_CONSUMERS: [&str; 2] = ["latency-scorer", "slo-headroom-tier-filter"];

/// Plugin types that never read request headers: a config of only these lets the request path
/// skip collecting them. Any other type (new ones included) gets the headers.
const HEADER_BLIND: &[&str] = &[
    "queue-scorer",
    "kv-cache-utilization-scorer",
    "kv-cache-scorer",
    "prefix-cache-scorer",
    "precise-prefix-cache-producer",
    "burst-prefix-cache-producer",
    "token-producer",
    "tokenizer",
    "lora-affinity-scorer",
    "mm-embeddings-cache-producer",
    "mm-embeddings-cache-scorer",
    "running-requests-size-scorer",
    "load-aware-scorer",
    "active-request-scorer",
    "token-load-scorer",
    "prefix-cache-affinity-filter",
    "request-attribute-reporter",
    "context-length-aware",
    "no-hit-lru-scorer",
    "decode-filter",
    "prefill-filter",
    "encode-filter",
    "label-selector-filter",
    "by-label-selector",
    "by-label",
    "utilization-filter",
    "inflight-load-producer",
    "max-score-picker",
    "random-picker",
    "weighted-random-picker",
    "single-profile-handler",
    "disagg-profile-handler",
    "pd-profile-handler",
    "prefill-header-handler",
    "disagg-headers-handler",
    "prefix-based-pd-decider",
    "always-disagg-pd-decider",
    "always-disagg-multimodal-decider",
    "data-parallel-profile-handler",
];

/// The session-affinity plugin types (`scheduling::session`).
const SESSION_KINDS: [&str; 3] = [
    "session-affinity-scorer",
    "session-affinity-filter",
    "multicluster-session-affinity-filter",
];

pub struct Scheduler {
    profiles: Vec<SchedulingProfile>,
    handler: Box<dyn ProfileHandler>,
    handler_name: (String, String),
    /// Data-parallel handlers: decisions name the picked pod at this port.
    primary_port: Option<u16>,
    /// An always-disagg-multimodal-decider is configured: requests must say whether they
    /// carry images, audio or video.
    needs_multimodal: bool,
    /// Every scorer once, for the after-pick hook.
    scorers: Vec<Arc<dyn Scorer>>,
    /// Filters that learn from the pick (session-affinity-filter, session_id), once each.
    learners: Vec<Arc<dyn Filter>>,
    /// Response headers naming the primary for the client to send back (session affinity,
    /// encoded_endpoint_header), once each.
    token_headers: Vec<(String, Option<usize>)>,
    /// session-id-producers: request attributes published before the profiles run.
    attribute_producers: Vec<Arc<SessionIdProducer>>,
    /// Some configured plugin reads request headers.
    reads_headers: bool,
    /// predicted-latency-producer, listed or created for the latency plugins that need it.
    latency: Option<Arc<PredictedLatencyProducer>>,
    /// destination-endpoint-served-verifier is listed.
    verifies_served: bool,
    /// agent-identity, when listed: session headers that name the fairness id.
    agent_identity: Option<Arc<AgentIdentity>>,
    /// The precise-prefix-cache-producer's index, when one is configured.
    block_index: Option<(String, Arc<BlockIndex>)>,
    /// The approx-prefix-cache-producers, by name.
    approx: Vec<(String, Arc<ApproxPrefixProducer>)>,
    /// The mm-embeddings-cache-producers, by name.
    mm: Vec<(String, Arc<MmEmbeddingsProducer>)>,
    /// The burst-prefix-cache-producer, by name: its window is waited for before the cycle.
    burst: Option<(String, Arc<BurstPrefixProducer>)>,
    /// p2p-source-producers: they read prefix matches before the profiles, set a header after.
    kv_sources: Vec<Arc<P2pSourceProducer>>,
    /// Admitters in `plugins:` order; they run after the producers, before the profiles.
    admitters: Vec<Arc<dyn Admitter>>,
    /// Screeners in `plugins:` order; they narrow every profile's endpoints, after admission.
    screeners: Vec<Arc<dyn Screener>>,
    /// inflight-load-producer's token estimate (its defaults when not listed).
    in_flight_load: TokenEstimate,
    /// request-attribute-reporters, in `plugins:` order.
    reporters: Vec<Arc<AttributeReporter>>,
}

pub(crate) struct Built {
    pub spec: PluginSpec,
    pub plugin: Plugin,
}

impl Scheduler {
    pub fn from_config(config: &RouterConfig) -> Result<Scheduler, ConfigError> {
        let (specs, profile_specs) = config.resolved()?;
        let mut built: Vec<Built> = Vec::with_capacity(specs.len());
        for (i, spec) in specs.into_iter().enumerate() {
            if built.iter().any(|b| b.spec.name() == spec.name()) {
                return Err(ConfigError(format!(
                    "plugins[{i}]: duplicate plugin name '{}'",
                    spec.name()
                )));
            }
            let plugin = registry::build(&Params {
                name: spec.name(),
                kind: &spec.kind,
                raw: spec.parameters.as_ref(),
            })?;
            built.push(Built { spec, plugin });
        }
        let profile_specs = profile_specs.unwrap_or_else(|| vec![implicit_profile(&built)]);
        if profile_specs.is_empty() {
            return Err(ConfigError(
                "schedulingProfiles: at least one profile is required".into(),
            ));
        }
        let mut profiles = Vec::with_capacity(profile_specs.len());
        for (i, ps) in profile_specs.iter().enumerate() {
            if profile_specs[..i].iter().any(|p| p.name == ps.name) {
                return Err(ConfigError(format!(
                    "schedulingProfiles[{i}]: duplicate profile name '{}'",
                    ps.name
                )));
            }
            profiles.push(build_profile(i, ps, &built)?);
        }
        if config.gpu_telemetry.is_none() {
            if let Some(b) = built
                .iter()
                .find(|b| GPU_ATTRIBUTE_CONSUMERS.contains(&b.spec.kind.as_str()))
            {
                return Err(ConfigError(format!(
                    "plugin '{}' ({}) reads GPUUtilization, but no dcgm-data-source feeds a \
                     dcgm-extractor in dataLayer.sources",
                    b.spec.name(),
                    b.spec.kind
                )));
            }
        }
        if config.pool_metrics.is_none() {
            if let Some(b) = built
                .iter()
                .find(|b| POOL_METRICS_CONSUMERS.contains(&b.spec.kind.as_str()))
            {
                return Err(ConfigError(format!(
                    "plugin '{}' ({}) reads the pool averages of cluster endpoints, but no \
                     multicluster-metrics-data-source feeds a multicluster-metrics-extractor in \
                     dataLayer.sources",
                    b.spec.name(),
                    b.spec.kind
                )));
            }
        }
        bind_topology(&built)?;
        let wired = build_handler(&built, &profiles)?;
        let needs_multimodal = built
            .iter()
            .any(|b| b.spec.kind == "always-disagg-multimodal-decider");
        let mut scorers: Vec<Arc<dyn Scorer>> = Vec::new();
        let mut block_index: Option<(String, Arc<BlockIndex>)> = None;
        let mut approx: Vec<(String, Arc<ApproxPrefixProducer>)> = Vec::new();
        let mut mm: Vec<(String, Arc<MmEmbeddingsProducer>)> = Vec::new();
        let mut kv_sources: Vec<Arc<P2pSourceProducer>> = Vec::new();
        let mut burst: Option<(String, Arc<BurstPrefixProducer>)> = None;
        let mut tokens = None;
        let mut latency: Option<Arc<PredictedLatencyProducer>> = None;
        let mut agent_identity = None;
        let mut admitters: Vec<Arc<dyn Admitter>> = Vec::new();
        let mut screeners: Vec<Arc<dyn Screener>> = Vec::new();
        let mut learners: Vec<Arc<dyn Filter>> = Vec::new();
        let mut attribute_producers: Vec<Arc<SessionIdProducer>> = Vec::new();
        let mut in_flight_load: Option<TokenEstimate> = None;
        let mut reporters: Vec<Arc<AttributeReporter>> = Vec::new();
        for b in &built {
            match &b.plugin {
                Plugin::AttributeReporter(r) => reporters.push(r.clone()),
                Plugin::InFlightLoad(t) if in_flight_load.replace(t.clone()).is_some() => {
                    return Err(ConfigError(format!(
                        "plugins: one inflight-load-producer allowed, '{}' is another",
                        b.spec.name()
                    )));
                }
                Plugin::Admitter(a) => admitters.push(a.clone()),
                Plugin::Screener(s) => screeners.push(s.clone()),
                Plugin::SessionIdProducer(p) => attribute_producers.push(p.clone()),
                Plugin::Filter(f) if f.learns() => learners.push(f.clone()),
                Plugin::AgentIdentity(a) if agent_identity.replace(a.clone()).is_some() => {
                    return Err(ConfigError(format!(
                        "plugins: one agent-identity allowed, '{}' is another",
                        b.spec.name()
                    )));
                }
                Plugin::LatencyProducer(p) if latency.replace(p.clone()).is_some() => {
                    return Err(ConfigError(format!(
                        "plugins: one predicted-latency-producer allowed, '{}' is another",
                        b.spec.name()
                    )));
                }
                Plugin::Scorer(s) | Plugin::FilterAndScorer(_, s) => scorers.push(s.clone()),
                Plugin::Tokens(t) => tokens = t.clone(),
                Plugin::ApproxProducer(a) => approx.push((b.spec.name().to_owned(), a.clone())),
                Plugin::MmEmbeddings(m) => mm.push((b.spec.name().to_owned(), m.clone())),
                Plugin::P2pSource(p) => kv_sources.push(p.clone()),
                Plugin::BurstProducer(p) => {
                    if let Some((first, _)) = &burst {
                        return Err(ConfigError(format!(
                            "plugins: one burst-prefix-cache-producer allowed, got '{first}' and '{}'",
                            b.spec.name()
                        )));
                    }
                    burst = Some((b.spec.name().to_owned(), p.clone()));
                }
                Plugin::Producer(index) => {
                    if let Some((first, _)) = &block_index {
                        return Err(ConfigError(format!(
                            "plugins: one precise-prefix-cache-producer allowed, got '{first}' and '{}'",
                            b.spec.name()
                        )));
                    }
                    block_index = Some((b.spec.name().to_owned(), index.clone()));
                }
                _ => {}
            }
        }
        // As upstream's data-layer DAG, a plugin that reads prefix matches gets the default
        // approximate producer when none is listed (prefix scorers then read it too).
        if block_index.is_none()
            && approx.is_empty()
            && built
                .iter()
                .any(|b| PREFIX_FILTERS.contains(&b.spec.kind.as_str()))
        {
            let default = ApproxPrefixProducer::new(Default::default()).map_err(ConfigError)?;
            approx.push(("approx-prefix-cache-producer".into(), Arc::new(default)));
        }
        let producers = PrefixProducers {
            precise: block_index.as_ref().map(|(n, i)| (n.as_str(), i)),
            approx: &approx,
            mm: &mm,
            burst: burst.as_ref().map(|(n, p)| (n.as_str(), p)),
        };
        let profile_names: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
        for b in &built {
            let bound = match &b.plugin {
                Plugin::P2pSource(p) => p.bind(&producers, &profile_names),
                Plugin::Scorer(s) => s.use_prefix_producers(&producers),
                Plugin::Filter(f) => f.use_prefix_producers(&producers),
                Plugin::FilterAndScorer(f, s) => f
                    .use_prefix_producers(&producers)
                    .and_then(|()| s.use_prefix_producers(&producers)),
                _ => Ok(()),
            };
            bound.map_err(|e| {
                ConfigError(format!("plugin '{}' ({}): {e}", b.spec.name(), b.spec.kind))
            })?;
        }
        let in_flight_load = in_flight_load.unwrap_or_default();
        if let Some(name) = &in_flight_load.prefix_producer {
            let known = producers.precise.is_some_and(|(n, _)| n == name)
                || approx.iter().any(|(n, _)| n == name);
            if !known {
                return Err(ConfigError(format!(
                    "plugin inflight-load-producer: parameters.prefixMatchInfoProducerName: \
                     no prefix producer named '{name}'"
                )));
            }
        }
        if let Some((_, index)) = &block_index {
            if let Some(t) = tokens {
                index.use_tokens(t);
            }
        }
        // As upstream, the latency plugins get a default producer when none is listed.
        if latency.is_none()
            && built.iter().any(|b| {
                LATENCY_CONSUMERS.contains(&b.spec.kind.as_str())
                    || b.spec.kind == "latency-slo-admitter"
                    || reads_predicted_ttft(b)
            })
        {
            latency = Some(Arc::default());
        }
        let token_headers = session_wiring(&built, &profiles, &attribute_producers)?;
        let reads_headers = built
            .iter()
            .any(|b| !HEADER_BLIND.contains(&b.spec.kind.as_str()));
        Ok(Scheduler {
            profiles,
            handler: wired.handler,
            handler_name: wired.name,
            primary_port: wired.primary_port,
            needs_multimodal,
            scorers,
            learners,
            token_headers,
            attribute_producers,
            reads_headers,
            latency,
            verifies_served: built
                .iter()
                .any(|b| matches!(b.plugin, Plugin::ServedVerifier)),
            agent_identity,
            block_index,
            approx,
            mm,
            kv_sources,
            burst,
            admitters,
            screeners,
            in_flight_load,
            reporters,
        })
    }

    /// The request-attribute-reporters, which report values computed from response usage.
    pub fn reporters(&self) -> &[Arc<AttributeReporter>] {
        &self.reporters
    }

    /// How routed requests' in-flight tokens are estimated.
    pub fn in_flight_load(&self) -> &TokenEstimate {
        &self.in_flight_load
    }

    /// Run the profiles for one request; `picks` receives snapshot positions. True when the
    /// cycle scored twice (below).
    pub fn schedule(&self, cycle: &Cycle<'_>, picks: &mut Picks) -> Result<bool, ScheduleError> {
        self.dry_run(cycle, picks)?;
        // Cycles on other threads committed requests while this one scored (requests that
        // arrive together score at the same moment): its load scores missed them, and
        // concurrent requests that saw the same load would all go to the same server. Score once
        // more against the load as it is now (nothing has learnt from the first run).
        let rescored = cycle.load_moved();
        if rescored {
            let media_items = cycle.state.borrow().media_items.clone();
            *cycle.state.borrow_mut() = CycleState {
                media_items,
                ..Default::default()
            };
            *picks = Picks::default();
            self.dry_run(cycle, picks)?;
        }
        for s in &self.scorers {
            s.picked(cycle, picks);
        }
        for f in &self.learners {
            f.picked(cycle, picks);
        }
        Ok(rescored)
    }

    /// Run the profiles without the after-pick hooks: nothing learns from this cycle.
    pub fn dry_run(&self, cycle: &Cycle<'_>, picks: &mut Picks) -> Result<(), ScheduleError> {
        if let Some(latency) = &self.latency {
            latency.prepare(cycle);
        }
        if !self.admitters.is_empty() {
            self.admit(cycle)?;
        }
        if !self.screeners.is_empty() {
            self.screen(cycle)?;
        }
        self.handler.run(&self.profiles, cycle, picks)
    }

    /// Narrow the endpoints every profile may use (after the subset hint); none left is a 503.
    fn screen(&self, cycle: &Cycle<'_>) -> Result<(), ScheduleError> {
        let mut candidates: Vec<u32> = (0..cycle.snapshot.endpoints.len() as u32).collect();
        if SubsetFilter.filter(cycle, &mut candidates).is_err() {
            return Ok(()); // the profiles refuse it with the subset's reason
        }
        for s in &self.screeners {
            s.screen(cycle, &mut candidates)
                .map_err(ScheduleError::NoEndpoints)?;
        }
        cycle.state.borrow_mut().screened = Some(candidates);
        Ok(())
    }

    /// Response headers the screeners stamp from the picked endpoint.
    pub fn stamp(&self, cycle: &Cycle<'_>, picked: u32, out: &mut Vec<(String, String)>) {
        for s in &self.screeners {
            s.stamp(cycle, picked, out);
        }
    }

    /// Whether responses carry the served endpoint for the conformance suite.
    pub fn verifies_served(&self) -> bool {
        self.verifies_served
    }

    /// agent-identity, when listed.
    pub fn agent_identity(&self) -> Option<&Arc<AgentIdentity>> {
        self.agent_identity.as_ref()
    }

    /// Run the admitters over the endpoints the request may go to; the first refusal wins.
    fn admit(&self, cycle: &Cycle<'_>) -> Result<(), ScheduleError> {
        let mut candidates: Vec<u32> = (0..cycle.snapshot.endpoints.len() as u32).collect();
        if SubsetFilter.filter(cycle, &mut candidates).is_err() {
            return Ok(()); // the profiles refuse it with the subset's reason
        }
        for a in &self.admitters {
            a.admit(cycle, &candidates)
                .map_err(ScheduleError::NotAdmitted)?;
        }
        Ok(())
    }

    /// Whether admitters are configured (the request path then reads the priority).
    pub fn has_admitters(&self) -> bool {
        !self.admitters.is_empty()
    }

    /// The predicted-latency-producer, when latency plugins are configured.
    pub fn latency_producer(&self) -> Option<&Arc<PredictedLatencyProducer>> {
        self.latency.as_ref()
    }

    /// Data-parallel routing: the port every decision names (the picked pod's own address goes
    /// in a header).
    pub fn primary_port(&self) -> Option<u16> {
        self.primary_port
    }

    pub fn needs_multimodal(&self) -> bool {
        self.needs_multimodal
    }

    /// The response headers that carry the primary's session token (session affinity with
    /// encoded_endpoint_header in a profile); empty when none.
    pub fn token_headers(&self) -> &[(String, Option<usize>)] {
        &self.token_headers
    }

    /// Whether some plugin reads request headers (else the request path need not collect them).
    pub fn reads_headers(&self) -> bool {
        self.reads_headers
    }

    /// The request attributes the data producers publish for these headers ("DataType/Producer",
    /// value); empty (no allocation) when none is configured.
    pub fn request_attributes(&self, headers: &[(String, String)]) -> Vec<(String, String)> {
        self.attribute_producers
            .iter()
            .filter_map(|p| Some((p.key.clone(), p.produce(headers)?)))
            .collect()
    }

    pub fn endpoint_removed(&self, id: u64) {
        for s in &self.scorers {
            s.endpoint_removed(id);
        }
        for f in &self.learners {
            f.endpoint_removed(id);
        }
        if let Some((_, index)) = &self.block_index {
            index.remove_endpoint(id);
        }
        for (_, a) in &self.approx {
            a.remove_endpoint(id);
        }
        for (_, m) in &self.mm {
            m.remove_endpoint(id);
        }
    }

    /// The burst-prefix-cache-producer, when one is listed.
    pub fn burst_producer(&self) -> Option<&Arc<BurstPrefixProducer>> {
        self.burst.as_ref().map(|(_, p)| p)
    }

    /// What each p2p-source-producer finds before the profiles run (empty when none is listed).
    pub fn kv_sources(&self, cycle: &Cycle<'_>) -> Vec<SourceCandidates> {
        self.kv_sources.iter().map(|p| p.prepare(cycle)).collect()
    }

    /// A committed cycle's picks, for the prefix producers the p2p-source-producers read.
    pub fn kv_sources_learn(&self, cycle: &Cycle<'_>, picks: &Picks, found: &[SourceCandidates]) {
        for (p, f) in self.kv_sources.iter().zip(found) {
            p.learn(cycle, f, picks);
        }
    }

    /// Add the request headers the p2p-source-producers set once the cycle picked; true when one
    /// is listed but none set it (an inbound value is then stripped).
    pub fn source_headers(
        &self,
        cycle: &Cycle<'_>,
        picks: &Picks,
        found: &[SourceCandidates],
        headers: &mut Vec<(String, String)>,
    ) -> bool {
        let mut set = false;
        for (p, f) in self.kv_sources.iter().zip(found) {
            if let Some(h) = p.header(cycle, f, picks) {
                headers.retain(|(k, _)| *k != h.0);
                headers.push(h);
                set = true;
            }
        }
        !self.kv_sources.is_empty() && !set
    }

    /// The exact KV-block index, when a precise-prefix-cache-producer is configured.
    pub fn block_index(&self) -> Option<&Arc<BlockIndex>> {
        self.block_index.as_ref().map(|(_, index)| index)
    }

    /// The resolved configuration, as `sluicegate check-config` prints it.
    pub fn describe(&self) -> Value {
        let named = |name: &str, kind: &str| json!({"name": name, "type": kind});
        let profiles: Vec<Value> = self
            .profiles
            .iter()
            .map(|p| {
                json!({
                    "name": p.name,
                    "filters": p.filters.iter().map(|f| named(&f.name, &f.kind)).collect::<Vec<_>>(),
                    "scorers": p.scorers.iter().map(|(s, w)| json!({"name": s.name, "type": s.kind, "weight": w})).collect::<Vec<_>>(),
                    "picker": {"name": p.picker.name, "type": p.picker.kind,
                               "maxNumOfEndpoints": p.picker.plugin.max_endpoints()},
                })
            })
            .collect();
        let producers: Vec<Value> = self
            .block_index
            .iter()
            .map(|(name, index)| {
                json!({"name": name, "type": "precise-prefix-cache-producer",
                       "blockSize": index.block_tokens(), "socketPort": index.socket_port,
                       "topicFilter": index.topic_filter, "zmqEndpoint": index.zmq_endpoint,
                       "replaySocketPort": index.replay_socket_port,
                       "hashSeed": index.hash_seed, "tokenLevel": index.token_level(),
                       "redisAddress": index.redis.as_ref().map(|r| r.address.clone())})
            })
            .collect();
        json!({
            "profileHandler": named(&self.handler_name.0, &self.handler_name.1),
            "profiles": profiles,
            "producers": producers,
        })
    }
}

/// Plugins without profiles: one profile of every filter, scorer and picker, weight 1.
fn implicit_profile(built: &[Built]) -> ProfileSpec {
    ProfileSpec {
        name: "default".into(),
        plugins: built
            .iter()
            .filter(|b| {
                matches!(
                    b.plugin,
                    Plugin::Filter(_)
                        | Plugin::Scorer(_)
                        | Plugin::FilterAndScorer(..)
                        | Plugin::Picker(_)
                )
            })
            .map(|b| crate::scheduling::config::PluginRef {
                plugin_ref: b.spec.name().to_owned(),
                weight: None,
            })
            .collect(),
    }
}

fn build_profile(
    i: usize,
    ps: &ProfileSpec,
    built: &[Built],
) -> Result<SchedulingProfile, ConfigError> {
    let mut filters = Vec::new();
    let mut scorers = Vec::new();
    let mut picker = None;
    for (j, r) in ps.plugins.iter().enumerate() {
        let at = format!("schedulingProfiles[{i}] ({}).plugins[{j}]", ps.name);
        let b = built
            .iter()
            .find(|b| b.spec.name() == r.plugin_ref)
            .ok_or_else(|| {
                ConfigError(format!(
                    "{at}.pluginRef: no plugin named '{}'",
                    r.plugin_ref
                ))
            })?;
        let (name, kind) = (b.spec.name().to_owned(), b.spec.kind.clone());
        match &b.plugin {
            Plugin::Filter(f) => filters.push(Named {
                name,
                kind,
                plugin: f.clone(),
            }),
            Plugin::Scorer(s) => scorers.push((
                Named {
                    plugin: s.clone(),
                    name: name.clone(),
                    kind,
                },
                weight(&at, &name, r.weight)?,
            )),
            Plugin::FilterAndScorer(f, s) => {
                filters.push(Named {
                    name: name.clone(),
                    kind: kind.clone(),
                    plugin: f.clone(),
                });
                scorers.push((
                    Named {
                        plugin: s.clone(),
                        name: name.clone(),
                        kind,
                    },
                    weight(&at, &name, r.weight)?,
                ));
            }
            Plugin::Picker(p) => {
                if let Some(Named { name: first, .. }) = &picker {
                    return Err(ConfigError(format!(
                        "{at}.pluginRef: profile '{}' already has picker '{first}'; a profile takes one",
                        ps.name
                    )));
                }
                picker = Some(Named {
                    name,
                    kind,
                    plugin: p.clone(),
                });
            }
            // They run before every profile (the reporter when the response ends); naming one in
            // a profile (as the charts and the latency-slo-admitter README do) changes nothing,
            // as upstream.
            Plugin::LatencyProducer(_) | Plugin::Admitter(_) | Plugin::AttributeReporter(_) => {}
            Plugin::ProfileHandler(_)
            | Plugin::Screener(_)
            | Plugin::SessionIdProducer(_)
            | Plugin::Decider(_)
            | Plugin::Producer(_)
            | Plugin::ApproxProducer(_)
            | Plugin::MmEmbeddings(_)
            | Plugin::P2pSource(_)
            | Plugin::BurstProducer(_)
            | Plugin::Tokens(_)
            | Plugin::Topology(_)
            | Plugin::AgentIdentity(_)
            | Plugin::ServedVerifier
            | Plugin::InFlightLoad(_)
            | Plugin::HeadersHandler { .. } => {
                return Err(ConfigError(format!(
                    "{at}.pluginRef: '{name}' ({kind}) cannot be used in a profile"
                )))
            }
        }
    }
    let picker = picker.unwrap_or_else(|| Named {
        name: "max-score-picker".into(),
        kind: "max-score-picker".into(),
        plugin: Arc::new(MaxScorePicker::strict(1)),
    });
    Ok(SchedulingProfile::new(
        ps.name.clone(),
        filters,
        scorers.into_iter().filter(|(_, w)| *w > 0.0).collect(),
        picker,
    ))
}

/// A prefix-cache-affinity-filter whose TTFT gate reads the latency predictor.
fn reads_predicted_ttft(b: &Built) -> bool {
    b.spec.kind == "prefix-cache-affinity-filter"
        && b.spec
            .parameters
            .as_ref()
            .and_then(|p| p.get("ttftSource"))
            .is_some_and(|s| s == "latencyPredictor")
}

/// The session plugins a profile uses: their token response headers (with the profile whose
/// pick each names), their `profileName`s bound to profiles, and every attribute source they
/// read checked against the producers configured.
fn session_wiring(
    built: &[Built],
    profiles: &[SchedulingProfile],
    producers: &[Arc<SessionIdProducer>],
) -> Result<Vec<(String, Option<usize>)>, ConfigError> {
    let names: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
    let mut headers: Vec<(String, Option<usize>)> = Vec::new();
    for b in built
        .iter()
        .filter(|b| SESSION_KINDS.contains(&b.spec.kind.as_str()))
    {
        let name = b.spec.name();
        let used = profiles.iter().any(|p| {
            p.filters.iter().any(|f| f.name == name)
                || p.scorers.iter().any(|(s, _)| s.name == name)
        });
        let params = Params {
            name,
            kind: &b.spec.kind,
            raw: b.spec.parameters.as_ref(),
        };
        let instance = match &b.plugin {
            Plugin::Filter(f) => f.session_profile(),
            Plugin::Scorer(s) => s.session_profile(),
            Plugin::FilterAndScorer(f, s) => f.session_profile().or(s.session_profile()),
            _ => None,
        };
        if let Some(profile) = instance {
            profile.bind(&names).map_err(|e| params.error(e))?;
        }
        match session::parse(&params)? {
            Strategy::Encoded { header, profile } => {
                let profile = ProfileRef::new(profile);
                let wired = (header, profile.bind(&names).map_err(|e| params.error(e))?);
                if used && !headers.contains(&wired) {
                    headers.push(wired);
                }
            }
            Strategy::SessionId(ids) => {
                for (i, s) in ids.sources.iter().enumerate() {
                    let SessionSource::Attribute(key) = s else {
                        continue;
                    };
                    if !producers.iter().any(|p| &p.key == key) {
                        let published: Vec<&str> =
                            producers.iter().map(|p| p.key.as_str()).collect();
                        return Err(params.error(format_args!(
                            "parameters.sessionIdConfig.sources[{i}]: no configured plugin publishes \
                             attribute '{key}' (attribute/producer; published here: [{}])",
                            published.join(", ")
                        )));
                    }
                }
            }
        }
    }
    Ok(headers)
}

fn weight(at: &str, name: &str, weight: Option<f64>) -> Result<f64, ConfigError> {
    let weight = weight.unwrap_or(1.0);
    if !weight.is_finite() || weight < 0.0 {
        return Err(ConfigError(format!(
            "{at}.weight: weight of '{name}' must be a finite number >= 0, got {weight}"
        )));
    }
    Ok(weight)
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;

/// Give each topology-affinity plugin the topology-extractor it names.
fn bind_topology(built: &[Built]) -> Result<(), ConfigError> {
    for b in built {
        let source = match &b.plugin {
            Plugin::Filter(f) => f.topology(),
            Plugin::Scorer(s) => s.topology(),
            _ => None,
        };
        let Some(source) = source else { continue };
        let keys = built.iter().find_map(|e| match &e.plugin {
            Plugin::Topology(keys) if e.spec.name() == source.producer => Some(keys),
            _ => None,
        });
        let Some(keys) = keys else {
            return Err(ConfigError(format!(
                "plugin '{}' ({}): parameters.topologyProducerName: no topology-extractor named '{}' is listed",
                b.spec.name(),
                b.spec.kind,
                source.producer
            )));
        };
        source.bind(keys.clone());
    }
    Ok(())
}
