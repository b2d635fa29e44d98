//! topology-extractor (llm-d): an endpoint's locality (host, rack, zone, region) read from the
//! endpoint labels it names (`hostname`, `rack`, `zone`, `region`; upstream's Kubernetes label
//! keys by default). The topology-affinity filter and scorer compare each candidate with the
//! peer the disaggregation handler picked first (the decode endpoint). As upstream, a missing
//! hostname label falls back to the Pod's `spec.hostname` (ready Pods only), which Kubernetes mode
//! hands over with the endpoint set (`EndpointInfo::pod`); zone, rack and region have no
//! fallback.

use std::sync::{Arc, OnceLock};

use serde::Deserialize;

use crate::datalayer::Endpoint;
use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::cycle::Cycle;

pub const TOPOLOGY_EXTRACTOR: &str = "topology-extractor";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyKeys {
    /// Label keys, tightest level first: host, rack, zone, region.
    levels: [String; 4],
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ExtractorParams {
    hostname: Option<String>,
    rack: Option<String>,
    zone: Option<String>,
    region: Option<String>,
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: ExtractorParams = p.parse()?;
    let key =
        |v: Option<String>, default: &str| v.filter(|s| !s.is_empty()).unwrap_or(default.into());
    Ok(Plugin::Topology(Arc::new(TopologyKeys {
        levels: [
            key(params.hostname, "kubernetes.io/hostname"),
            key(params.rack, "topology.kubernetes.io/rack"),
            key(params.zone, "topology.kubernetes.io/zone"),
            key(params.region, "topology.kubernetes.io/region"),
        ],
    })))
}

/// How close two endpoints are: 0 host, 1 rack, 2 zone, 3 region, 4 none.
pub type Level = usize;
pub const LEVEL_NONE: Level = 4;
pub const LEVELS: [&str; 4] = ["host", "rack", "zone", "region"];

impl TopologyKeys {
    fn value<'e>(&self, ep: &'e Endpoint, level: Level) -> &'e str {
        let key = &self.levels[level];
        let label = ep.info.labels.iter().find(|(k, _)| k == key);
        match label {
            Some((_, v)) if !v.is_empty() => v,
            _ if level == 0 => ep.info.pod.hostname.as_deref().unwrap_or(""),
            _ => "",
        }
    }

    /// Whether the endpoint has any topology value (upstream publishes no attribute otherwise).
    pub fn known(&self, ep: &Endpoint) -> bool {
        (0..LEVEL_NONE).any(|l| !self.value(ep, l).is_empty())
    }

    /// The tightest level both share; an empty value never matches, not even another empty one.
    pub fn compare(&self, peer: &Endpoint, candidate: &Endpoint) -> Level {
        (0..LEVEL_NONE)
            .find(|&l| {
                let v = self.value(peer, l);
                !v.is_empty() && v == self.value(candidate, l)
            })
            .unwrap_or(LEVEL_NONE)
    }
}

/// What a topology-affinity plugin reads: the extractor it names (`topologyProducerName`,
/// default the one named `topology-extractor`), bound by the scheduler once every plugin is built.
pub struct TopologySource {
    pub producer: String,
    keys: OnceLock<Arc<TopologyKeys>>,
}

impl TopologySource {
    pub fn new(producer: Option<String>) -> TopologySource {
        TopologySource {
            producer: producer.unwrap_or_else(|| TOPOLOGY_EXTRACTOR.into()),
            keys: OnceLock::new(),
        }
    }

    pub fn bind(&self, keys: Arc<TopologyKeys>) {
        let _ = self.keys.set(keys);
    }

    /// The keys and the peer endpoint (the decode pick) when the peer has a known topology.
    pub fn peer<'c>(&self, cycle: &'c Cycle<'_>) -> Option<(&TopologyKeys, &'c Endpoint)> {
        let keys = self.keys.get()?;
        let peer = cycle.endpoint(cycle.state.borrow().peer?);
        keys.known(peer).then_some((&**keys, peer))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::datalayer::endpoints::PodFacts;
    use crate::scheduling::config::RouterConfig;
    use crate::scheduling::contracts::scorer::Picks;
    use crate::scheduling::filters::role_filter::ROLE_LABEL;
    use crate::scheduling::scheduler::Scheduler;
    use crate::scheduling::test_pool::{all, cycle, pool, Ep};

    const HOST: &str = "kubernetes.io/hostname";
    const RACK: &str = "topology.kubernetes.io/rack";
    const ZONE: &str = "topology.kubernetes.io/zone";

    /// decode on host h1/rack r1/zone z1 (kept emptiest so it is picked), then prefill
    /// candidates at each distance from it.
    fn pd_pool() -> Vec<Ep> {
        let at = |role: &str, waiting: u32, host: &str, rack: &str, zone: &str| {
            let mut ep = Ep::waiting(waiting).label(ROLE_LABEL, role);
            for (k, v) in [(HOST, host), (RACK, rack), (ZONE, zone)] {
                if !v.is_empty() {
                    ep = ep.label(k, v);
                }
            }
            ep
        };
        vec![
            at("decode", 0, "h1", "r1", "z1"),
            at("prefill", 0, "h9", "r9", "z9"), // nothing shared, emptiest
            at("prefill", 5, "h2", "r9", "z1"), // same zone
            at("prefill", 6, "h3", "r1", "z1"), // same rack
            at("prefill", 9, "h1", "r1", "z1"), // same host, busiest
            at("prefill", 1, "", "", ""),       // no topology (not tied with 1)
        ]
    }

    fn scheduler(prefill_plugins: serde_json::Value, extractor: serde_json::Value) -> Scheduler {
        let config = json!({
            "plugins": [
                {"type": "decode-filter"}, {"type": "prefill-filter"}, {"type": "queue-scorer"},
                {"type": "always-disagg-pd-decider"},
                {"type": "disagg-profile-handler", "parameters": {"deciders": {"prefill": "always-disagg-pd-decider"}}},
                extractor,
                {"type": "topology-affinity-filter", "name": "near", "parameters": {"minAffinity": "rack"}},
                {"type": "topology-affinity-scorer", "name": "closer"},
            ],
            "schedulingProfiles": [
                {"name": "decode", "plugins": [{"pluginRef": "decode-filter"}, {"pluginRef": "queue-scorer"}]},
                {"name": "prefill", "plugins": prefill_plugins},
            ],
        });
        Scheduler::from_config(&RouterConfig::from_json(&config.to_string()).unwrap()).unwrap()
    }

    fn prefill_pick(s: &Scheduler) -> Option<u32> {
        let (_store, snap) = pool(pd_pool());
        let mut picks = Picks::default();
        s.schedule(&cycle(&snap), &mut picks).unwrap();
        assert_eq!(picks.primary, vec![0]);
        picks.prefill
    }

    #[test]
    fn the_prefill_pick_goes_to_the_decode_picks_host_then_rack() {
        let extractor = json!({"type": "topology-extractor"});
        let queue = json!({"pluginRef": "queue-scorer", "weight": 1});
        // Queue alone picks the emptiest prefill endpoint, far from decode.
        let base = scheduler(
            json!([{"pluginRef": "prefill-filter"}, queue]),
            extractor.clone(),
        );
        assert_eq!(prefill_pick(&base), Some(1));
        // The filter keeps rack-or-closer (3 and 4); queue then prefers 3 (same rack).
        let filtered = scheduler(
            json!([{"pluginRef": "prefill-filter"}, {"pluginRef": "near"}, queue]),
            extractor.clone(),
        );
        assert_eq!(prefill_pick(&filtered), Some(3));
        // The scorer's host score (1.0 x 5) outweighs the queue: same host wins.
        let scored = scheduler(
            json!([{"pluginRef": "prefill-filter"}, queue, {"pluginRef": "closer", "weight": 5}]),
            extractor,
        );
        assert_eq!(prefill_pick(&scored), Some(4));
    }

    #[test]
    fn levels_compare_tightest_first_and_unknown_never_matches() {
        let keys = super::TopologyKeys {
            levels: [HOST, RACK, ZONE, "topology.kubernetes.io/region"].map(String::from),
        };
        let (_store, snap) = pool(pd_pool());
        let c = cycle(&snap);
        let levels: Vec<_> = all(&c)
            .iter()
            .map(|&i| keys.compare(c.endpoint(0), c.endpoint(i)))
            .collect();
        assert_eq!(
            levels,
            vec![0, super::LEVEL_NONE, 2, 1, 0, super::LEVEL_NONE]
        );
        // An endpoint without topology never matches, even against another without it.
        assert_eq!(
            keys.compare(c.endpoint(5), c.endpoint(5)),
            super::LEVEL_NONE
        );
        assert!(!keys.known(c.endpoint(5)));
    }

    #[test]
    fn a_pods_spec_hostname_stands_in_for_a_missing_hostname_label() {
        use std::collections::HashMap;

        let at = |role: &str, waiting: u32, host: &str| {
            let ep = Ep::waiting(waiting)
                .label(ROLE_LABEL, role)
                .label(ZONE, "z1");
            if host.is_empty() {
                ep
            } else {
                ep.label(HOST, host)
            }
        };
        // decode; an empty prefill endpoint; a busy one; a busy one whose label says another host.
        let eps = vec![
            at("decode", 0, ""),
            at("prefill", 0, ""),
            at("prefill", 9, ""),
            at("prefill", 8, "h7"),
        ];
        let scored = scheduler(
            json!([{"pluginRef": "prefill-filter"}, {"pluginRef": "queue-scorer", "weight": 1},
                   {"pluginRef": "closer", "weight": 5}]),
            json!({"type": "topology-extractor"}),
        );
        let pick = |hostnames: &[(usize, &str)]| {
            let (store, snap) = pool(eps.clone());
            let specs: Vec<_> = snap
                .endpoints
                .iter()
                .map(|e| crate::datalayer::EndpointSpec {
                    name: e.info.name.clone(),
                    address: e.info.address.clone(),
                    labels: e.info.labels.clone(),
                })
                .collect();
            let by_address: HashMap<String, PodFacts> = hostnames
                .iter()
                .map(|&(i, h)| {
                    let pod = PodFacts {
                        hostname: Some(h.to_owned()),
                        ..Default::default()
                    };
                    (specs[i].address.clone(), pod)
                })
                .collect();
            store.set_endpoints_with(&specs, &by_address);
            let snap = store.snapshot();
            let mut picks = Picks::default();
            scored.schedule(&cycle(&snap), &mut picks).unwrap();
            picks.prefill
        };
        // No hostname anywhere: only the zone is shared, so the queue decides.
        assert_eq!(pick(&[]), Some(1));
        // Decode and the busy endpoint on the same node by spec.hostname: same host wins.
        assert_eq!(pick(&[(0, "h1"), (2, "h1")]), Some(2));
        // A hostname label is read before spec.hostname: endpoint 3 is on h7, not h1.
        assert_eq!(pick(&[(0, "h1"), (1, "h2"), (3, "h1")]), Some(1));
    }

    #[test]
    fn the_filter_fails_open_when_no_candidate_is_close_enough() {
        let s = scheduler(
            json!([{"pluginRef": "prefill-filter"}, {"pluginRef": "near"}, {"pluginRef": "queue-scorer"}]),
            json!({"type": "topology-extractor"}),
        );
        let mut far = pd_pool();
        far.truncate(3); // decode, the far one (emptiest), the same-zone one: none within a rack
        let (_store, snap) = pool(far);
        let mut picks = Picks::default();
        s.schedule(&cycle(&snap), &mut picks).unwrap();
        assert_eq!(picks.prefill, Some(1));
    }

    #[test]
    fn a_named_extractor_binds_and_a_missing_one_is_refused() {
        let ext = json!({"type": "topology-extractor", "name": "topo", "parameters": {"hostname": "node"}});
        let config = |filter_params: serde_json::Value| {
            json!({"plugins": [ext.clone(), {"type": "topology-affinity-filter", "name": "near", "parameters": filter_params}]})
                .to_string()
        };
        let e = Scheduler::from_config(&RouterConfig::from_json(&config(json!({}))).unwrap())
            .err()
            .unwrap();
        assert!(e.0.contains("'near' (topology-affinity-filter): parameters.topologyProducerName: no topology-extractor named 'topology-extractor'"), "{e}");
        Scheduler::from_config(
            &RouterConfig::from_json(&config(json!({"topologyProducerName": "topo"}))).unwrap(),
        )
        .unwrap();
        let bad = config(json!({"topologyProducerName": "topo", "minAffinity": "datacenter"}));
        let e = Scheduler::from_config(&RouterConfig::from_json(&bad).unwrap())
            .err()
            .unwrap();
        assert!(e.0.contains("parameters.minAffinity: 'datacenter'"), "{e}");
    }
}
