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
use crate::scheduling::cycle::{Cycle, ScheduleError};
use crate::scheduling::filters::endpoint_attribute_filter::GPU_ATTRIBUTE_CONSUMERS;
use crate::scheduling::filters::subset_filter::SubsetFilter;
use crate::scheduling::handler_wiring::build_handler;
use crate::scheduling::pickers::max_score_picker::MaxScorePicker;
use crate::scheduling::producers::agent_identity::AgentIdentity;
use crate::scheduling::producers::approx_prefix_cache_producer::ApproxPrefixProducer;
use crate::scheduling::producers::precise_prefix_cache_producer::BlockIndex;
use crate::scheduling::producers::predicted_latency_producer::PredictedLatencyProducer;
use crate::scheduling::profile::{Named, SchedulingProfile};
use crate::scheduling::registry;

/// Plugin types that read predicted-latency-producer's output.
const LATENCY_CONSUMERS: [&str; 2] = ["latency-scorer", "slo-headroom-tier-filter"];

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
    session_affinity: bool,
    /// predicted-latency-producer, listed or created for the latency plugins that need it.
    latency: Option<Arc<PredictedLatencyProducer>>,
    /// destination-endpoint-served-verifier is listed.
    verifies_served: bool,
    /// agent-identity, when listed: session headers that name the fairness id.
    agent_identity: Option<Arc<AgentIdentity>>,
    /// The precise-prefix-cache-producer's index, when one is configured.
    block_index: Option<(String, Arc<BlockIndex>)>,
    /// Admitters in `plugins:` order; they run after the producers, before the profiles.
    admitters: Vec<Arc<dyn Admitter>>,
    /// The approx-prefix-cache-producers, by name.
    approx: Vec<(String, Arc<ApproxPrefixProducer>)>,
}

pub(crate) struct Built {
    pub spec: PluginSpec,
    pub plugin: Plugin,
}

impl Scheduler {
    pub fn from_config(config: &RouterConfig) -> Result<Scheduler, ConfigError> {
        let (specs, profile_specs) = config.resolved();
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
        bind_topology(&built)?;
        let wired = build_handler(&built, &profiles)?;
        let needs_multimodal = built
            .iter()
            .any(|b| b.spec.kind == "always-disagg-multimodal-decider");
        let mut scorers: Vec<Arc<dyn Scorer>> = Vec::new();
        let mut block_index: Option<(String, Arc<BlockIndex>)> = None;
        let mut approx: Vec<(String, Arc<ApproxPrefixProducer>)> = Vec::new();
        let mut tokens = None;
        let mut latency: Option<Arc<PredictedLatencyProducer>> = None;
        let mut admitters: Vec<Arc<dyn Admitter>> = Vec::new();
        let mut agent_identity = None;
        for b in &built {
            match &b.plugin {
                Plugin::AgentIdentity(a) if agent_identity.replace(a.clone()).is_some() => {
                    return Err(ConfigError(format!(
                        "plugins: one agent-identity allowed, '{}' is another",
                        b.spec.name()
                    )));
                }
                Plugin::Admitter(a) => admitters.push(a.clone()),
                Plugin::LatencyProducer(p) if latency.replace(p.clone()).is_some() => {
                    return Err(ConfigError(format!(
                        "plugins: one predicted-latency-producer allowed, '{}' is another",
                        b.spec.name()
                    )));
                }
                Plugin::Scorer(s) | Plugin::FilterAndScorer(_, s) => scorers.push(s.clone()),
                Plugin::Tokens(t) => tokens = t.clone(),
                Plugin::ApproxProducer(a) => approx.push((b.spec.name().to_owned(), a.clone())),
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
        let producers = PrefixProducers {
            precise: block_index.as_ref().map(|(n, i)| (n.as_str(), i)),
            approx: &approx,
        };
        for (s, b) in built.iter().filter_map(|b| match &b.plugin {
            Plugin::Scorer(s) | Plugin::FilterAndScorer(_, s) => Some((s, b)),
            _ => None,
        }) {
            s.use_prefix_producers(&producers).map_err(|e| {
                ConfigError(format!("plugin '{}' ({}): {e}", b.spec.name(), b.spec.kind))
            })?;
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
            })
        {
            latency = Some(Arc::default());
        }
        let session_affinity = profiles.iter().any(|p| {
            p.scorers
                .iter()
                .any(|(s, _)| s.kind == "session-affinity-scorer")
        });
        Ok(Scheduler {
            profiles,
            handler: wired.handler,
            handler_name: wired.name,
            primary_port: wired.primary_port,
            needs_multimodal,
            scorers,
            session_affinity,
            latency,
            verifies_served: built
                .iter()
                .any(|b| matches!(b.plugin, Plugin::ServedVerifier)),
            agent_identity,
            block_index,
            admitters,
            approx,
        })
    }

    /// Run the profiles for one request; `picks` receives snapshot positions.
    pub fn schedule(&self, cycle: &Cycle<'_>, picks: &mut Picks) -> Result<(), ScheduleError> {
        self.dry_run(cycle, picks)?;
        for s in &self.scorers {
            s.picked(cycle, picks);
        }
        Ok(())
    }

    /// Run the profiles without the after-pick hooks: nothing learns from this cycle.
    pub fn dry_run(&self, cycle: &Cycle<'_>, picks: &mut Picks) -> Result<(), ScheduleError> {
        if let Some(latency) = &self.latency {
            latency.prepare(cycle);
        }
        if !self.admitters.is_empty() {
            self.admit(cycle)?;
        }
        self.handler.run(&self.profiles, cycle, picks)
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

    /// Whether responses carry the served endpoint for the conformance suite.
    pub fn verifies_served(&self) -> bool {
        self.verifies_served
    }

    /// agent-identity, when listed.
    pub fn agent_identity(&self) -> Option<&Arc<AgentIdentity>> {
        self.agent_identity.as_ref()
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

    /// Whether a session-affinity scorer takes part, so decisions carry a session token.
    pub fn uses_session_affinity(&self) -> bool {
        self.session_affinity
    }

    pub fn endpoint_removed(&self, id: u64) {
        for s in &self.scorers {
            s.endpoint_removed(id);
        }
        if let Some((_, index)) = &self.block_index {
            index.remove_endpoint(id);
        }
        for (_, a) in &self.approx {
            a.remove_endpoint(id);
        }
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
            // They run before every profile; naming one in a profile (as the charts and the
            // latency-slo-admitter README do) changes nothing, as upstream.
            Plugin::LatencyProducer(_) | Plugin::Admitter(_) => {}
            Plugin::ProfileHandler(_)
            | Plugin::Decider(_)
            | Plugin::Producer(_)
            | Plugin::ApproxProducer(_)
            | Plugin::Tokens(_)
            | Plugin::Topology(_)
            | Plugin::AgentIdentity(_)
            | Plugin::ServedVerifier
            | Plugin::InFlightCounter
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
        plugin: Arc::new(MaxScorePicker { max_endpoints: 1 }),
    });
    Ok(SchedulingProfile::new(
        ps.name.clone(),
        filters,
        scorers.into_iter().filter(|(_, w)| *w > 0.0).collect(),
        picker,
    ))
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
