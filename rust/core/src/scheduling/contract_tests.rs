//! One contract per kind of plugin, run by every type the registry knows: a new plugin is checked
//! by the contract of its kind without being listed here (only parameters it cannot do without
//! go in `SAMPLE_PARAMS`). Filters never add endpoints, scorers stay in [0, 1], pickers pick only
//! candidates, profile handlers decide only among endpoints of the pool.

use proptest::prelude::*;
use serde_json::{json, Value};

use crate::datalayer::metrics::LoraInfo;
use crate::datalayer::MetricsUpdate;
use crate::scheduling::config::RouterConfig;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::scorer::Picks;
use crate::scheduling::cycle::Request;
use crate::scheduling::filters::role_filter::ROLE_LABEL;
use crate::scheduling::registry::{self, known_types};
use crate::scheduling::scheduler::Scheduler;
use crate::scheduling::test_pool::{all, cycle, pool, Ep};

/// Parameters a type needs to build at all; every other type is built with none.
const SAMPLE_PARAMS: &[(&str, &str)] = &[
    (
        "label-selector-filter",
        r#"{"matchLabels": {"llm-d.ai/role": "decode"}}"#,
    ),
    (
        "by-label-selector",
        r#"{"matchLabels": {"llm-d.ai/role": "decode"}}"#,
    ),
    (
        "by-label",
        r#"{"label": "llm-d.ai/role", "validValues": ["decode"], "allowsNoLabel": true}"#,
    ),
    ("context-length-aware", r#"{"enableFiltering": true}"#),
    (
        "header-label-affinity-scorer",
        r#"{"headerName": "x-zone", "labelKey": "zone"}"#,
    ),
    ("session-id-producer", r#"{"headerName": "x-session-id"}"#),
    (
        "endpoint-attribute-filter",
        r#"{"attribute": "GPUUtilization", "producer": "dcgm-extractor", "onMissing": "Fail",
            "algorithm": {"type": "threshold", "threshold": {"operator": "LessThanOrEqual", "value": 0.9}}}"#,
    ),
    (
        "endpoint-attribute-scorer",
        r#"{"attributeKey": "GPUUtilization", "producer": "dcgm-extractor",
            "algorithm": {"type": "linear_lower_is_better"}}"#,
    ),
    (
        "disaggregatedset-rollout-screener",
        r#"{"scope": {"labelSelector": "llm-d.ai/role"}, "revisionGating": {"mode": "sum",
            "revisionLabelKey": "zone", "roleLabelKey": "llm-d.ai/role", "requireRoles": {"values": ["decode"]}},
            "headerSelectors": [{"name": "z", "headerName": "x-zone", "labelKey": "zone", "mode": "strict"}]}"#,
    ),
    (
        "request-attribute-reporter",
        r#"{"attributes": [{"key": {"name": "cost"}, "expression": "usage.completion_tokens"}]}"#,
    ),
    (
        "utilization-filter",
        r#"{"conditions": [{"metric": "waiting-queue", "maxValue": 50}], "fallbackOnEmpty": true}"#,
    ),
];

fn sample(kind: &str) -> Option<Value> {
    SAMPLE_PARAMS
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, p)| serde_json::from_str(p).unwrap())
}

fn build(kind: &str) -> Plugin {
    let raw = sample(kind);
    registry::build(&Params {
        name: kind,
        kind,
        raw: raw.as_ref(),
    })
    .unwrap_or_else(|e| panic!("{kind} does not build from its sample: {e}"))
}

fn of_kind<T>(pick: impl Fn(Plugin) -> Option<T>) -> Vec<(&'static str, T)> {
    known_types()
        .filter_map(|kind| pick(build(kind)).map(|p| (kind, p)))
        .collect()
}

fn arb_ep() -> impl Strategy<Value = Ep> {
    (
        0u32..300,
        0u32..300,
        0.0f64..=1.0,
        0u32..4,
        0usize..3,
        0u32..3,
        prop::option::of(0.0f64..=1.0),
    )
        .prop_map(|(waiting, running, kv, max_lora, role, lora, gpu)| {
            let mut ep = Ep::with(MetricsUpdate {
                waiting: Some(waiting),
                running: Some(running),
                kv_usage: Some(kv),
                loras: Some(LoraInfo {
                    running: (0..lora).map(|i| format!("l{i}")).collect(),
                    waiting: vec!["l9".into()],
                    max_lora,
                }),
                ..Default::default()
            });
            ep.gpu = gpu;
            match role {
                0 => ep,
                1 => ep.label(ROLE_LABEL, "decode"),
                _ => ep.label(ROLE_LABEL, "prefill"),
            }
        })
}

#[test]
fn every_registered_type_builds_and_has_a_kind() {
    let kinds: Vec<_> = known_types().collect();
    assert!(kinds.len() >= 24, "{kinds:?}");
    for kind in kinds {
        build(kind);
    }
}

proptest! {
    #[test]
    fn filters_never_add_an_endpoint(eps in prop::collection::vec(arb_ep(), 1..12),
                                     prompt in prop::collection::vec(any::<u8>(), 0..600)) {
        let (_store, snap) = pool(eps);
        for (kind, f) in of_kind(|p| match p { Plugin::Filter(f) | Plugin::FilterAndScorer(f, _) => Some(f), _ => None }) {
            let mut c = cycle(&snap);
            c.request = Request { model: "l1", prompt: &prompt, ..Default::default() };
            let before = all(&c);
            let mut kept = before.clone();
            if f.filter(&c, &mut kept).is_ok() {
                let mut seen = kept.clone();
                seen.dedup();
                prop_assert_eq!(seen.len(), kept.len(), "{} repeated an endpoint", kind);
                prop_assert!(kept.iter().all(|k| before.contains(k)), "{}: {:?}", kind, kept);
            }
        }
    }

    #[test]
    fn screeners_never_add_an_endpoint(eps in prop::collection::vec(arb_ep(), 1..12)) {
        let (_store, snap) = pool(eps);
        for (kind, s) in of_kind(|p| match p { Plugin::Screener(s) => Some(s), _ => None }) {
            let c = cycle(&snap);
            let before = all(&c);
            let mut kept = before.clone();
            if s.screen(&c, &mut kept).is_ok() {
                prop_assert!(!kept.is_empty(), "{} kept nothing without refusing", kind);
                prop_assert!(kept.windows(2).all(|w| w[0] < w[1]), "{}: {:?}", kind, kept);
                prop_assert!(kept.iter().all(|k| before.contains(k)), "{}: {:?}", kind, kept);
            }
        }
    }

    #[test]
    fn scorers_stay_in_the_unit_interval(eps in prop::collection::vec(arb_ep(), 1..12),
                                         prompt in prop::collection::vec(any::<u8>(), 0..2000)) {
        let (_store, snap) = pool(eps);
        for (kind, s) in of_kind(|p| match p { Plugin::Scorer(s) | Plugin::FilterAndScorer(_, s) => Some(s), _ => None }) {
            let mut c = cycle(&snap);
            c.request = Request { model: "l1", prompt: &prompt, ..Default::default() };
            let candidates = all(&c);
            let mut out = vec![f64::NAN; candidates.len()];
            s.score(&c, &candidates, &mut out);
            s.picked(&c, &Picks { primary: vec![0], prefill: None, ..Default::default() });
            s.score(&c, &candidates, &mut out);
            prop_assert!(out.iter().all(|v| (0.0..=1.0).contains(v)), "{}: {:?}", kind, out);
        }
    }

    #[test]
    fn pickers_pick_only_distinct_candidates(totals in prop::collection::vec(0.0f64..10.0, 1..12),
                                             offset in 0u32..100) {
        for (kind, p) in of_kind(|p| match p { Plugin::Picker(p) => Some(p), _ => None }) {
            let mut candidates: Vec<u32> = (0..totals.len() as u32).map(|i| i * 3 + offset).collect();
            let given = candidates.clone();
            let mut t = totals.clone();
            let mut picked = Vec::new();
            p.pick(&mut candidates, &mut t, &mut picked);
            prop_assert!(!picked.is_empty() && picked.len() <= p.max_endpoints(), "{}: {:?}", kind, picked);
            prop_assert!(picked.iter().all(|x| given.contains(x)), "{}: {:?}", kind, picked);
            let mut seen = picked.clone();
            seen.sort_unstable();
            seen.dedup();
            prop_assert_eq!(seen.len(), picked.len(), "{} picked one endpoint twice", kind);
        }
    }

    #[test]
    fn profile_handlers_pick_only_endpoints_their_profiles_allow(
        eps in prop::collection::vec(arb_ep(), 1..12),
        prompt in prop::collection::vec(any::<u8>(), 0..3000),
    ) {
        let (_store, snap) = pool(eps);
        for (kind, _) in of_kind(|p| match p { Plugin::ProfileHandler(h) => Some(h), _ => None }) {
            let s = handler_scheduler(kind);
            let mut c = cycle(&snap);
            c.request = Request { model: "m", prompt: &prompt, ..Default::default() };
            let mut picks = Picks::default();
            if s.schedule(&c, &mut picks).is_err() {
                continue; // no endpoint of the decode role: the cycle fails rather than misroutes
            }
            let role = |i: u32| snap.endpoints[i as usize].info.labels.iter()
                .find(|(k, _)| k == ROLE_LABEL).map(|(_, v)| v.as_str());
            prop_assert!(!picks.primary.is_empty(), "{}", kind);
            prop_assert!(picks.primary.iter().all(|&p| role(p) != Some("prefill")), "{}: {:?}", kind, picks);
            if let Some(p) = picks.prefill {
                prop_assert!(role(p) == Some("prefill"), "{}: {:?}", kind, picks);
            }
        }
    }
}

/// A scheduler whose handler is `kind`: one decode profile for single-profile handlers, decode
/// and prefill profiles (with a decider that always disaggregates) for the others.
fn handler_scheduler(kind: &str) -> Scheduler {
    let handler = json!({"name": "handler", "type": kind, "parameters": sample(kind)});
    let decode = json!({"name": "decode", "plugins": [{"pluginRef": "decode-filter"}, {"pluginRef": "queue-scorer"}]});
    let prefill = json!({"name": "prefill", "plugins": [{"pluginRef": "prefill-filter"}, {"pluginRef": "queue-scorer"}]});
    let mut plugins = vec![
        json!({"type": "decode-filter"}),
        json!({"type": "prefill-filter"}),
        json!({"type": "queue-scorer"}),
        json!({"type": "always-disagg-pd-decider"}),
    ];
    let single = ["single-profile-handler", "data-parallel-profile-handler"].contains(&kind);
    let profiles = if single {
        vec![decode]
    } else {
        vec![decode, prefill]
    };
    let handler = match (kind, handler) {
        ("disagg-profile-handler", mut h) if h["parameters"].is_null() => {
            h["parameters"] = json!({"deciders": {"prefill": "always-disagg-pd-decider"}});
            h
        }
        (_, h) => h,
    };
    plugins.push(handler);
    let config = json!({"plugins": plugins, "schedulingProfiles": profiles});
    Scheduler::from_config(&RouterConfig::from_json(&config.to_string()).unwrap())
        .unwrap_or_else(|e| panic!("{kind}: {e}"))
}
