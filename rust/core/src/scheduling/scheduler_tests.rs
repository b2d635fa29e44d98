//! Config resolution (upstream defaults, strict errors) and profile handlers.

use serde_json::json;

use super::*;
use crate::scheduling::cycle::Request;
use crate::scheduling::filters::role_filter::ROLE_LABEL;
use crate::scheduling::test_pool::{cycle, pool, Ep};

/// A cycle for a request of model "m" with this prompt.
fn prompt_cycle<'a>(snap: &'a crate::datalayer::Snapshot, prompt: &'a [u8]) -> Cycle<'a> {
    let mut c = cycle(snap);
    c.request = Request {
        model: "m",
        prompt,
        ..Default::default()
    };
    c
}

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
        (
            json!({"plugins": [{"type": "queue-scorer", "parameters": {"inFlight": "sometimes"}}]}),
            "parameters.inFlight",
        ),
        (
            json!({"plugins": [{"type": "queue-scorer", "parameters": {"inFlightFreeSlots": -1}}]}),
            "parameters.inFlightFreeSlots",
        ),
        (
            json!({"plugins": [{"type": "queue-scorer",
                                "parameters": {"inFlight": "never", "inFlightFreeSlots": 2}}]}),
            "parameters.inFlightFreeSlots",
        ),
        (
            json!({"plugins": [{"type": "queue-scorer", "parameters": {"inFlightWeight": 0}}]}),
            "parameters.inFlightWeight: must be in (0, 1], got 0",
        ),
        (
            json!({"plugins": [{"type": "queue-scorer", "parameters": {"inFlightWeight": 1.5}}]}),
            "parameters.inFlightWeight: must be in (0, 1], got 1.5",
        ),
        (
            json!({"plugins": [{"type": "queue-scorer",
                                "parameters": {"inFlight": "never", "inFlightWeight": 0.5}}]}),
            "parameters.inFlightWeight: only with",
        ),
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
    // Also when a request was routed (on another thread) after the cycle began: the cycle
    // scores again, with the per-cycle state of its first run dropped, and decides as a fresh
    // cycle would.
    for routed_meanwhile in [false, true] {
        let (_store, snap) = pool(disagg_pool());
        let prompt = [b'p'; 4000];
        let c = prompt_cycle(&snap, &prompt);
        if routed_meanwhile {
            snap.endpoints[0].info.sent();
            assert!(c.load_moved());
        }
        let mut picks = Picks::default();
        let rescored = disagg(500).schedule(&c, &mut picks).unwrap();
        // Only requests routed through this pool count (tests on other threads route through
        // their own).
        assert_eq!(rescored, routed_meanwhile);
        assert_eq!((picks.primary, picks.prefill), (vec![1], Some(3)));
        assert_eq!(snap.endpoints[0].in_flight(), u32::from(routed_meanwhile));
    }
}

#[test]
fn a_request_routed_through_another_pool_does_not_make_a_cycle_score_again() {
    let (_store, snap) = pool(disagg_pool());
    let (_other_store, other) = pool(disagg_pool());
    let c = prompt_cycle(&snap, b"short prompt");
    other.endpoints[0].info.sent();
    assert!(!c.load_moved());
    snap.endpoints[1].info.sent();
    assert!(c.load_moved());
}

#[test]
fn disagg_handler_stays_decode_only_below_the_threshold() {
    let (_store, snap) = pool(disagg_pool());
    let c = prompt_cycle(&snap, b"short prompt");
    let mut picks = Picks::default();
    disagg(500).schedule(&c, &mut picks).unwrap();
    assert_eq!((picks.primary, picks.prefill), (vec![1], None));
}

#[test]
fn disagg_handler_needs_its_decode_profile() {
    let e = error(json!({
        "plugins": [{"type": "queue-scorer"}, {"type": "disagg-profile-handler"}],
        "schedulingProfiles": [{"name": "main", "plugins": [{"pluginRef": "queue-scorer"}]}]
    }));
    assert!(e.contains("decodeProfile"), "{e}");
}

#[test]
fn prefix_scorers_read_the_approx_producer_they_name() {
    let s = scheduler(json!({
        "plugins": [
            {"name": "small", "type": "approx-prefix-cache-producer", "parameters": {"autoTune": false}},
            {"name": "big", "type": "approx-prefix-cache-producer",
             "parameters": {"autoTune": false, "blockSizeTokens": 128}},
            {"name": "s1", "type": "prefix-cache-scorer", "parameters": {"prefixMatchInfoProducerName": "small"}},
            {"name": "s2", "type": "prefix-cache-scorer", "parameters": {"prefixMatchInfoProducerName": "big"}}
        ],
        "schedulingProfiles": [{"name": "p", "plugins": [{"pluginRef": "s1"}, {"pluginRef": "s2"}]}]
    }))
    .unwrap();
    let (_store, snap) = pool(vec![Ep::waiting(0)]);
    let prompt = [b'p'; 4000];
    let c = prompt_cycle(&snap, &prompt);
    s.schedule(&c, &mut Picks::default()).unwrap();
    let id = snap.endpoints[0].info.id;
    // 4000 bytes in blocks of 64 and 128 estimated tokens (4 bytes each), partial tail included.
    let blocks: Vec<(String, usize)> = s
        .approx
        .iter()
        .map(|(n, a)| (n.clone(), a.len(id)))
        .collect();
    assert_eq!(blocks, vec![("small".into(), 16), ("big".into(), 8)]);
}

#[test]
fn a_scorer_naming_a_missing_prefix_producer_is_refused() {
    for kind in ["prefix-cache-scorer", "no-hit-lru-scorer"] {
        let e = error(json!({"plugins": [
            {"type": "prefix-cache-scorer"},
            {"name": "named", "type": kind, "parameters": {"prefixMatchInfoProducerName": "nope"}}
        ]}));
        assert!(
            e.contains(kind) && e.contains("prefixMatchInfoProducerName") && e.contains("nope"),
            "{e}"
        );
    }
}

#[test]
fn no_hit_lru_takes_upstreams_parameters() {
    // The shape of upstream's precise-prefix guide profile, plus its deprecated fields and a
    // 0 size (upstream's default then).
    let plugins = json!([
        {"type": "precise-prefix-cache-producer", "parameters": {"kvEventsConfig": {"zmqEndpoint": "tcp://127.0.0.1:0"}}},
        {"type": "prefix-cache-scorer", "parameters": {"prefixMatchInfoProducerName": "precise-prefix-cache-producer"}},
        {"type": "no-hit-lru-scorer", "parameters": {
            "prefixMatchInfoProducerName": "precise-prefix-cache-producer",
            "prefixPluginType": "prefix-cache-scorer", "prefixPluginName": "prefix-cache-scorer", "lruSize": 0}}
    ]);
    let d = scheduler(json!({"plugins": plugins})).unwrap().describe();
    let scorers: Vec<&str> = d["profiles"][0]["scorers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["type"].as_str().unwrap())
        .collect();
    assert_eq!(scorers, ["prefix-cache-scorer", "no-hit-lru-scorer"]);
}

/// Route one long prompt over three idle endpoints with `config`, then give the endpoints
/// `queues` (the first pick's own first) and route the same prompt again: (first, second).
fn repeated_prompt_picks(config: serde_json::Value, queues: [u32; 3]) -> (u32, u32) {
    repeated_prompt_picks_in_flight(config, queues, 0)
}

/// `repeated_prompt_picks` with `in_flight` more of this EPP's requests on the first pick,
/// sent since its scrape (which reports none running).
fn repeated_prompt_picks_in_flight(
    config: serde_json::Value,
    queues: [u32; 3],
    in_flight: u32,
) -> (u32, u32) {
    let s = scheduler(config).unwrap();
    let (store, snap) = pool(vec![Ep::waiting(0), Ep::waiting(0), Ep::waiting(0)]);
    let prompt = [b'p'; 8000];
    let request = Request {
        model: "m",
        prompt: &prompt,
        ..Default::default()
    };
    let mut c = cycle(&snap);
    c.request = request;
    let mut picks = Picks::default();
    s.schedule(&c, &mut picks).unwrap();
    let first = picks.primary[0];
    let others = (0..3u32).filter(|&i| i != first);
    let now = std::time::Instant::now();
    for (i, waiting) in std::iter::once(first).chain(others).zip(queues) {
        let update = crate::datalayer::MetricsUpdate {
            waiting: Some(waiting),
            ..Default::default()
        };
        assert!(store.ingest(&format!("10.0.0.{}:8000", i + 1), &update, now));
    }
    let snap = store.snapshot();
    snap.endpoints[first as usize]
        .info
        .in_flight
        .fetch_add(in_flight, std::sync::atomic::Ordering::Relaxed);
    let mut c = cycle(&snap);
    c.request = request;
    let mut picks = Picks::default();
    s.schedule(&c, &mut picks).unwrap();
    (first, picks.primary[0])
}

/// A conversation on `first` and its first 4,800 bytes (18 of its 32 blocks) also on `second`,
/// sent there while `first` reported 20 queued. At the next scrape no server reports a queue,
/// and this EPP has sent `sent` requests to `first` since: (first, second, where the whole
/// conversation goes now).
fn turn_after_requests_sent_since_the_scrape(
    queue_scorer: serde_json::Value,
    sent: u32,
) -> (u32, u32, u32) {
    let s = scheduler(json!({
        "plugins": [queue_scorer, {"type": "kv-cache-utilization-scorer"}, {"type": "prefix-cache-scorer"}],
        "schedulingProfiles": [{"name": "default", "plugins": [
            {"pluginRef": "queue-scorer", "weight": 2},
            {"pluginRef": "kv-cache-utilization-scorer", "weight": 2},
            {"pluginRef": "prefix-cache-scorer", "weight": 3}]}]
    }))
    .unwrap();
    let (store, snap) = pool(vec![Ep::waiting(0), Ep::waiting(0), Ep::waiting(0)]);
    let whole = [b'p'; 8000];
    let mut part = [b'q'; 8000];
    part[..4800].copy_from_slice(&whole[..4800]);
    let route = |snap: &crate::datalayer::Snapshot, prompt: &[u8]| {
        let c = prompt_cycle(snap, prompt);
        let mut picks = Picks::default();
        s.schedule(&c, &mut picks).unwrap();
        picks.primary[0]
    };
    let scrape = |queues: [u32; 3]| {
        let now = std::time::Instant::now();
        for (i, waiting) in queues.into_iter().enumerate() {
            let update = crate::datalayer::MetricsUpdate {
                waiting: Some(waiting),
                ..Default::default()
            };
            assert!(store.ingest(&format!("10.0.0.{}:8000", i + 1), &update, now));
        }
        store.snapshot()
    };
    let first = route(&snap, &whole);
    let mut queues = [0; 3];
    queues[first as usize] = 20;
    let second = route(&scrape(queues), &part);
    assert_ne!(first, second);
    let snap = scrape([0; 3]);
    snap.endpoints[first as usize]
        .info
        .in_flight
        .fetch_add(sent, std::sync::atomic::Ordering::Relaxed);
    (first, second, route(&snap, &whole))
}

#[test]
fn requests_sent_since_the_scrape_move_a_turn_once_they_outweigh_the_longer_match() {
    // By default each request sent since to a server reporting no queue counts half of one
    // waiting: one swings the queue score by half its weight and the full match keeps the turn
    // (0.5 × 2 < (1 − 18/32) × 3); two swing it whole, and the partial match elsewhere wins.
    let queue = json!({"type": "queue-scorer"});
    let (first, _, now) = turn_after_requests_sent_since_the_scrape(queue.clone(), 1);
    assert_eq!(now, first);
    let (_, second, now) = turn_after_requests_sent_since_the_scrape(queue, 2);
    assert_eq!(now, second);
    // Counted whole (the default until session 10), one is enough.
    let whole = json!({"type": "queue-scorer", "parameters": {"inFlightWeight": 1}});
    let (_, second, now) = turn_after_requests_sent_since_the_scrape(whole, 1);
    assert_eq!(now, second);
    // Upstream's scorer counts none of them.
    let upstream = json!({"type": "queue-scorer", "parameters": {"inFlight": "never"}});
    let (first, _, now) = turn_after_requests_sent_since_the_scrape(upstream, 12);
    assert_eq!(now, first);
}

#[test]
fn a_turn_stays_with_its_history_while_what_was_sent_there_since_fits_the_free_slots_given() {
    // The server reported no queue: given two free slots, it started the two sent since and
    // the full match (3) keeps the turn; a third, counted whole, is taken to wait, and the
    // turn moves.
    let queue = json!({"type": "queue-scorer",
                       "parameters": {"inFlightFreeSlots": 2, "inFlightWeight": 1}});
    let (first, _, now) = turn_after_requests_sent_since_the_scrape(queue.clone(), 2);
    assert_eq!(now, first);
    let (_, second, now) = turn_after_requests_sent_since_the_scrape(queue, 3);
    assert_eq!(now, second);
}

#[test]
fn a_hot_prefix_spreads_when_its_servers_queue_is_deep() {
    // 32 blocks of 64 tokens against 11 queued requests at 200 tokens each.
    let (first, second) = repeated_prompt_picks(json!({}), [11, 0, 0]);
    assert_ne!(first, second);
}

#[test]
fn a_prefix_stays_on_its_server_while_it_reports_no_queue_whatever_was_sent_since() {
    // Three requests sent since the scrape, none reported waiting: they found free batch
    // slots, and moving the prompt away from its cache would cost its whole prefill.
    let (first, second) = repeated_prompt_picks_in_flight(json!({}), [0, 0, 0], 3);
    assert_eq!(first, second);
}

#[test]
fn requests_sent_since_the_scrape_deepen_a_queue_the_server_reports() {
    let (first, second) = repeated_prompt_picks_in_flight(json!({}), [1, 0, 0], 12);
    assert_ne!(first, second);
}

#[test]
fn a_prefix_stays_on_its_server_when_every_server_queues() {
    // Moving it gains no idle capacity, and repeating its prefill takes capacity from all.
    let (first, second) = repeated_prompt_picks(json!({}), [8, 2, 2]);
    assert_eq!(first, second);
}

#[test]
fn a_prefix_stays_on_its_server_while_queues_are_level() {
    let (first, second) = repeated_prompt_picks(json!({}), [3, 3, 3]);
    assert_eq!(first, second);
}

#[test]
fn without_queue_slack_a_prefix_stays_whatever_the_queue_as_upstream() {
    let upstream = json!({
        "plugins": [{"type": "queue-scorer"}, {"type": "kv-cache-utilization-scorer"},
                    {"type": "prefix-cache-scorer", "parameters": {"affinityQueueSlack": 0}}],
        "schedulingProfiles": [{"name": "default", "plugins": [
            {"pluginRef": "queue-scorer", "weight": 2},
            {"pluginRef": "kv-cache-utilization-scorer", "weight": 2},
            {"pluginRef": "prefix-cache-scorer", "weight": 3}]}]
    });
    let (first, second) = repeated_prompt_picks(upstream, [6, 0, 0]);
    assert_eq!(first, second);
}

#[test]
fn a_negative_queue_slack_is_refused() {
    let e = error(json!({"plugins": [
        {"type": "prefix-cache-scorer", "parameters": {"affinityQueueSlack": -1}}
    ]}));
    assert!(e.contains("affinityQueueSlack"), "{e}");
}

fn queue_tokens_profile(tokens: f64) -> serde_json::Value {
    json!({
        "plugins": [{"type": "queue-scorer"}, {"type": "kv-cache-utilization-scorer"},
                    {"type": "prefix-cache-scorer", "parameters": {"affinityQueueTokens": tokens}}],
        "schedulingProfiles": [{"name": "default", "plugins": [
            {"pluginRef": "queue-scorer", "weight": 2},
            {"pluginRef": "kv-cache-utilization-scorer", "weight": 2},
            {"pluginRef": "prefix-cache-scorer", "weight": 3}]}]
    })
}

#[test]
fn a_prefix_stays_while_its_prefill_outweighs_the_wait_at_its_server() {
    // 8,000 bytes: 32 blocks of 64 tokens, all lost on a cold server; three queued requests
    // at 500 tokens each are worth less.
    let (first, second) = repeated_prompt_picks(queue_tokens_profile(500.0), [3, 0, 0]);
    assert_eq!(first, second);
}

#[test]
fn a_prefix_moves_once_the_wait_at_its_server_outweighs_its_prefill() {
    let (first, second) = repeated_prompt_picks(queue_tokens_profile(500.0), [5, 0, 0]);
    assert_ne!(first, second);
}

#[test]
fn weighed_by_tokens_a_prefix_stays_when_every_server_queues() {
    let (first, second) = repeated_prompt_picks(queue_tokens_profile(500.0), [9, 1, 1]);
    assert_eq!(first, second);
}

#[test]
fn a_negative_queue_token_cost_is_refused() {
    let e = error(json!({"plugins": [
        {"type": "prefix-cache-scorer", "parameters": {"affinityQueueTokens": -5}}
    ]}));
    assert!(e.contains("affinityQueueTokens"), "{e}");
}

/// Where the primary pick lands over 200 cycles, on servers whose KV caches are 10 %, 11 % and
/// 50 % used, with kv-cache-utilization-scorer at `weight` and max-score-picker's `tieTolerance`.
fn kv_picks(weight: f64, tie_tolerance: f64) -> std::collections::BTreeSet<u32> {
    let s = scheduler(json!({
        "plugins": [{"type": "kv-cache-utilization-scorer"},
                    {"type": "max-score-picker", "parameters": {"tieTolerance": tie_tolerance}}],
        "schedulingProfiles": [{"name": "default", "plugins": [
            {"pluginRef": "kv-cache-utilization-scorer", "weight": weight},
            {"pluginRef": "max-score-picker"}]}]
    }))
    .unwrap();
    let kv = |u: f64| {
        Ep::with(crate::datalayer::MetricsUpdate {
            waiting: Some(0),
            kv_usage: Some(u),
            ..Default::default()
        })
    };
    let (_store, snap) = pool(vec![kv(0.10), kv(0.11), kv(0.50)]);
    (0..200)
        .map(|_| {
            let mut picks = Picks::default();
            s.schedule(&cycle(&snap), &mut picks).unwrap();
            picks.primary[0]
        })
        .collect()
}

#[test]
fn a_tie_tolerance_is_a_share_of_the_summed_weights() {
    // 0.01 apart in share of the weights: ties within 0.02 at any weight, not without it.
    for weight in [1.0, 10.0] {
        assert_eq!(kv_picks(weight, 0.0), [0].into(), "weight {weight}");
        assert_eq!(kv_picks(weight, 0.02), [0, 1].into(), "weight {weight}");
    }
}

#[test]
fn a_negative_or_unknown_picker_parameter_is_refused_by_name() {
    for (params, field) in [
        (json!({"tieTolerance": -0.1}), "tieTolerance"),
        (json!({"tieTolerance": 1.0}), "tieTolerance"),
        (
            json!({"maxNumOfEndpoints": 0, "tieTolerance": 0.1}),
            "maxNumOfEndpoints",
        ),
        (json!({"tieTolerence": 0.1}), "tieTolerence"),
    ] {
        let e = error(json!({"plugins": [
            {"type": "max-score-picker", "parameters": params}
        ]}));
        assert!(e.contains(field), "{e}");
    }
}

#[test]
fn priced_in_longer_tokens_a_prefix_moves_at_a_shorter_queue() {
    // 8,000 bytes at 8 characters a priced token: 1,000 tokens of prefill, so three queued
    // requests at 500 tokens each outweigh it (at the default 4 characters they do not).
    let mut config = queue_tokens_profile(500.0);
    config["plugins"][2]["parameters"]["affinityCharactersPerToken"] = json!(8);
    let (first, second) = repeated_prompt_picks(config.clone(), [3, 0, 0]);
    assert_ne!(first, second);
    let (first, second) = repeated_prompt_picks(config, [1, 0, 0]);
    assert_eq!(first, second);
}

#[test]
fn a_non_positive_characters_per_token_is_refused() {
    for bad in [json!(0), json!(-4)] {
        let e = error(json!({"plugins": [{"type": "prefix-cache-scorer",
            "parameters": {"affinityCharactersPerToken": bad}}]}));
        assert!(e.contains("affinityCharactersPerToken"), "{e}");
    }
}

#[test]
fn a_queue_slack_set_discounts_a_match_by_queue_depth_alone() {
    let slack = json!({
        "plugins": [{"type": "queue-scorer"}, {"type": "kv-cache-utilization-scorer"},
                    {"type": "prefix-cache-scorer", "parameters": {"affinityQueueSlack": 4}}],
        "schedulingProfiles": [{"name": "default", "plugins": [
            {"pluginRef": "queue-scorer", "weight": 2},
            {"pluginRef": "kv-cache-utilization-scorer", "weight": 2},
            {"pluginRef": "prefix-cache-scorer", "weight": 3}]}]
    });
    let (first, second) = repeated_prompt_picks(slack, [6, 0, 0]);
    assert_ne!(first, second);
    // The default token rule keeps it: 6 × 200 tokens queued < 2,048 tokens of prefill.
    let (first, second) = repeated_prompt_picks(json!({}), [6, 0, 0]);
    assert_eq!(first, second);
}

#[test]
fn queue_slack_and_queue_tokens_together_are_refused() {
    let e = error(json!({"plugins": [{"type": "prefix-cache-scorer",
        "parameters": {"affinityQueueSlack": 4, "affinityQueueTokens": 300}}]}));
    assert!(
        e.contains("affinityQueueSlack") && e.contains("affinityQueueTokens"),
        "{e}"
    );
}
