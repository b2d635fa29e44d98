//! Config resolution (upstream defaults, strict errors), profile handlers, and properties that
//! hold for any pool: scores in [0, 1], picks only among candidates that passed the filters.

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::datalayer::MetricsUpdate;
use crate::scheduling::cycle::Request;
use crate::scheduling::filters::role_filter::ROLE_LABEL;
use crate::scheduling::test_pool::{all, cycle, pool, Ep};

fn scheduler(config: serde_json::Value) -> Result<Scheduler, ConfigError> {
    Scheduler::from_config(&RouterConfig::from_json(&config.to_string())?)
}

fn error(config: serde_json::Value) -> String {
    match scheduler(config) {
        Ok(_) => panic!("config was accepted"),
        Err(e) => e.0,
    }
}

#[test]
fn no_config_gives_upstreams_default_profile() {
    let d = scheduler(json!({})).unwrap().describe();
    assert_eq!(d["profileHandler"]["type"], "single-profile-handler");
    let p = &d["profiles"][0];
    assert_eq!(p["name"], "default");
    let weights: Vec<(String, f64)> = p["scorers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["type"].as_str().unwrap().to_owned(),
                s["weight"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        weights,
        vec![
            ("queue-scorer".into(), 2.0),
            ("kv-cache-utilization-scorer".into(), 2.0),
            ("prefix-cache-scorer".into(), 3.0)
        ]
    );
    assert_eq!(p["picker"]["type"], "max-score-picker");
    assert_eq!(p["picker"]["maxNumOfEndpoints"], 1);
}

#[test]
fn plugins_without_profiles_form_one_profile_with_weight_one() {
    let d = scheduler(json!({"plugins": [
        {"name": "q", "type": "queue-scorer"},
        {"type": "random-picker", "parameters": {"maxNumOfEndpoints": 2}}
    ]}))
    .unwrap()
    .describe();
    let p = &d["profiles"][0];
    assert_eq!(
        p["scorers"][0],
        json!({"name": "q", "type": "queue-scorer", "weight": 1.0})
    );
    assert_eq!(p["picker"]["type"], "random-picker");
    assert_eq!(p["picker"]["maxNumOfEndpoints"], 2);
}

#[test]
fn errors_name_the_plugin_and_the_field() {
    let cases = [
        (
            json!({"plugins": [{"type": "magic-scorer"}]}),
            "magic-scorer",
        ),
        (
            json!({"plugins": [{"name": "p", "type": "max-score-picker", "parameters": {"maxEndpoints": 2}}]}),
            "maxEndpoints",
        ),
        (
            json!({"plugins": [{"name": "p", "type": "max-score-picker", "parameters": {"maxNumOfEndpoints": 0}}]}),
            "maxNumOfEndpoints",
        ),
        (
            json!({"plugins": [{"type": "queue-scorer", "colour": "red"}]}),
            "colour",
        ),
        (
            json!({"plugins": [{"type": "queue-scorer"}, {"type": "queue-scorer"}]}),
            "duplicate plugin name 'queue-scorer'",
        ),
        (
            json!({"plugins": [{"type": "queue-scorer"}],
                   "schedulingProfiles": [{"name": "a", "plugins": [{"pluginRef": "nope"}]}]}),
            "'nope'",
        ),
        (
            json!({"plugins": [{"type": "queue-scorer"}],
                   "schedulingProfiles": [{"name": "a", "plugins": [{"pluginRef": "queue-scorer", "weight": -1}]}]}),
            "weight",
        ),
        (
            json!({"plugins": [{"type": "queue-scorer"}],
                   "schedulingProfiles": [{"name": "a", "plugins": []}, {"name": "b", "plugins": []}]}),
            "profile handler",
        ),
        (json!({"stalenesMs": 5}), "stalenesMs"),
    ];
    for (config, needle) in cases {
        let e = error(config.clone());
        assert!(e.contains(needle), "{config}: {e}");
    }
}

/// Decode endpoints ep0, ep1 (ep1 less loaded) and prefill endpoints ep2, ep3 (ep3 less loaded).
fn disagg_pool() -> Vec<Ep> {
    vec![
        Ep::waiting(5).label(ROLE_LABEL, "decode"),
        Ep::waiting(0).label(ROLE_LABEL, "decode"),
        Ep::waiting(5).label(ROLE_LABEL, "prefill"),
        Ep::waiting(0).label(ROLE_LABEL, "prefill"),
    ]
}

fn disagg(threshold: usize) -> Scheduler {
    scheduler(json!({
        "plugins": [
            {"type": "decode-filter"}, {"type": "prefill-filter"}, {"type": "queue-scorer"},
            {"type": "prefix-cache-scorer"},
            {"name": "decider", "type": "prefix-based-pd-decider", "parameters": {"nonCachedTokens": threshold}},
            {"type": "disagg-profile-handler", "parameters": {"prefillDeciderPluginName": "decider"}}
        ],
        "schedulingProfiles": [
            {"name": "decode", "plugins": [{"pluginRef": "decode-filter"}, {"pluginRef": "queue-scorer"},
                                            {"pluginRef": "prefix-cache-scorer"}]},
            {"name": "prefill", "plugins": [{"pluginRef": "prefill-filter"}, {"pluginRef": "queue-scorer"}]}
        ]
    }))
    .unwrap()
}

#[test]
fn disagg_handler_picks_a_prefill_endpoint_for_long_uncached_prompts() {
    let (_store, snap) = pool(disagg_pool());
    let prompt = [b'p'; 4000];
    let mut c = cycle(&snap);
    c.request = Request {
        model: "m",
        prompt: &prompt,
        ..Default::default()
    };
    let mut picks = Picks::default();
    disagg(500).schedule(&c, &mut picks).unwrap();
    assert_eq!(
        picks,
        Picks {
            primary: vec![1],
            prefill: Some(3)
        }
    );
}

#[test]
fn disagg_handler_stays_decode_only_below_the_threshold() {
    let (_store, snap) = pool(disagg_pool());
    let mut c = cycle(&snap);
    c.request = Request {
        model: "m",
        prompt: b"short prompt",
        ..Default::default()
    };
    let mut picks = Picks::default();
    disagg(500).schedule(&c, &mut picks).unwrap();
    assert_eq!(
        picks,
        Picks {
            primary: vec![1],
            prefill: None
        }
    );
}

#[test]
fn disagg_handler_needs_its_decode_profile() {
    let e = error(json!({
        "plugins": [{"type": "queue-scorer"}, {"type": "disagg-profile-handler"}],
        "schedulingProfiles": [{"name": "main", "plugins": [{"pluginRef": "queue-scorer"}]}]
    }));
    assert!(e.contains("decodeProfile"), "{e}");
}

const EVERY_SCORER: [&str; 9] = [
    "queue-scorer",
    "kv-cache-utilization-scorer",
    "prefix-cache-scorer",
    "lora-affinity-scorer",
    "running-requests-size-scorer",
    "load-aware-scorer",
    "active-request-scorer",
    "session-affinity-scorer",
    "no-hit-lru-scorer",
];

fn arb_ep() -> impl Strategy<Value = Ep> {
    (
        0u32..300,
        0u32..300,
        0.0f64..=1.0,
        0u32..4,
        any::<bool>(),
        0u32..3,
    )
        .prop_map(|(waiting, running, kv, max_lora, decode, lora)| {
            let mut ep = Ep::with(MetricsUpdate {
                waiting: Some(waiting),
                running: Some(running),
                kv_usage: Some(kv),
                loras: Some(crate::datalayer::metrics::LoraInfo {
                    running: (0..lora).map(|i| format!("l{i}")).collect(),
                    waiting: vec!["l9".into()],
                    max_lora,
                }),
                ..Default::default()
            });
            if !decode {
                ep = ep.label(ROLE_LABEL, "prefill");
            }
            ep
        })
}

proptest! {
    #[test]
    fn every_scorer_stays_in_unit_interval(eps in prop::collection::vec(arb_ep(), 1..12),
                                           prompt in prop::collection::vec(any::<u8>(), 0..2000)) {
        let (_store, snap) = pool(eps);
        for kind in EVERY_SCORER {
            let s = match registry::build(&Params { name: kind, kind, raw: None }).unwrap() {
                Plugin::Scorer(s) => s,
                _ => unreachable!(),
            };
            let mut c = cycle(&snap);
            c.request = Request { model: "l1", prompt: &prompt, ..Default::default() };
            let candidates = all(&c);
            let mut out = vec![f64::NAN; candidates.len()];
            s.score(&c, &candidates, &mut out);
            s.picked(&c, &Picks { primary: vec![0], prefill: None });
            s.score(&c, &candidates, &mut out);
            prop_assert!(out.iter().all(|v| (0.0..=1.0).contains(v)), "{kind}: {out:?}");
        }
    }

    #[test]
    fn pickers_never_return_a_filtered_out_endpoint(
        eps in prop::collection::vec(arb_ep(), 1..12),
        picker in prop::sample::select(vec!["max-score-picker", "random-picker", "weighted-random-picker"]),
        n in 1usize..4,
    ) {
        let decode_count = eps.iter().filter(|e| e.labels.is_empty()).count();
        let (_store, snap) = pool(eps);
        let s = scheduler(json!({"plugins": [
            {"type": "decode-filter"}, {"type": "queue-scorer"}, {"type": "kv-cache-utilization-scorer"},
            {"type": picker, "parameters": {"maxNumOfEndpoints": n}}
        ]})).unwrap();
        let mut picks = Picks::default();
        let result = s.schedule(&cycle(&snap), &mut picks);
        if decode_count == 0 {
            prop_assert!(result.is_err());
        } else {
            prop_assert!(result.is_ok());
            prop_assert_eq!(picks.primary.len(), n.min(decode_count));
            for &p in &picks.primary {
                prop_assert!(snap.endpoints[p as usize].info.labels.is_empty());
            }
        }
    }
}
