//! The latency stack end to end through the Router: predictions learned online from finished
//! requests steer latency-scorer and slo-headroom-tier-filter; without predictions the scorer
//! falls back to load and cache signals.

use serde_json::json;

use crate::datalayer::{EndpointSpec, Engine};
use crate::scheduling::router::{RouteOptions, Router};

const CHAT: &str = "/v1/chat/completions";
const A: &str = "10.0.0.1:8000";
const B: &str = "10.0.0.2:8000";
const BODY: &[u8] = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

fn router(scorer_params: serde_json::Value) -> Router {
    let config = json!({
        "plugins": [
            {"type": "predicted-latency-producer"},
            {"type": "slo-headroom-tier-filter", "parameters": {"epsilonExploreNeg": 0.0}},
            {"type": "latency-scorer", "parameters": scorer_params},
            {"type": "max-score-picker"}
        ],
        "schedulingProfiles": [{"name": "default", "plugins": [
            {"pluginRef": "predicted-latency-producer"}, {"pluginRef": "slo-headroom-tier-filter"},
            {"pluginRef": "latency-scorer"}, {"pluginRef": "max-score-picker"}]}]
    });
    let r = Router::from_json(&config.to_string()).unwrap();
    r.set_endpoints(&[A, B].map(|a| EndpointSpec {
        name: a.into(),
        address: a.into(),
        labels: vec![],
    }));
    load(&r, A, 0, 0.5);
    load(&r, B, 10, 0.1);
    r
}

fn load(r: &Router, address: &str, waiting: u32, kv: f64) {
    let text = format!("vllm:num_requests_waiting {waiting}\nvllm:kv_cache_usage_perc {kv}\n");
    assert!(r.ingest_metrics(address, &text, Engine::Vllm));
}

fn route(r: &Router, headers: &[(String, String)], only: Option<&str>) -> String {
    let subset: Option<Vec<String>> = only.map(|a| vec![a.to_owned()]);
    let options = RouteOptions {
        headers,
        subset: subset.as_deref(),
        ..Default::default()
    };
    let d = r.route_with(CHAT, BODY, &options).unwrap();
    let picked = d.primary().to_owned();
    r.release(&picked);
    picked
}

/// Requests pinned to each endpoint finish in 20 ms + 30 ms per waiting request.
fn train(r: &Router) {
    for i in 0..30 {
        let (target, waiting) = if i % 2 == 0 { (A, 0.0) } else { (B, 10.0) };
        let d = r
            .route_with(
                CHAT,
                BODY,
                &RouteOptions {
                    subset: Some(&[target.to_owned()]),
                    ..Default::default()
                },
            )
            .unwrap();
        r.release(d.primary());
        r.observe_latency(&d, 0.020 + 0.030 * waiting, Some(0.010));
    }
}

fn slo(ttft_ms: u32) -> Vec<(String, String)> {
    vec![
        ("x-llm-d-slo-ttft-ms".into(), ttft_ms.to_string()),
        ("x-llm-d-slo-tpot-ms".into(), "50".into()),
    ]
}

#[test]
fn untrained_the_scorer_falls_back_to_load_and_cache() {
    // A: empty queue but half its KV cache used; B: 10 waiting, cache free. Queue and KV weigh
    // the same, prefix has no hits: A scores (0.5 + 1) / 3, B (0.9 + 0) / 3.
    let r = router(json!({}));
    assert_eq!(route(&r, &[], None), A);
    let r = router(json!({"compositeQueueWeight": 0.0}));
    assert_eq!(route(&r, &[], None), B);
}

#[test]
fn learned_predictions_keep_requests_within_their_slo() {
    let r = router(json!({}));
    train(&r);
    // B is predicted at ~320 ms: outside a 100 ms SLO, so the tier filter leaves only A.
    assert_eq!(route(&r, &slo(100), None), A);
    // No SLO: every headroom is negative; the smallest deficit wins.
    assert_eq!(route(&r, &[], None), A);
}

#[test]
fn least_packs_towards_the_slo_and_most_keeps_room() {
    // A 1000 ms SLO fits both (A ~20 ms, B ~320 ms).
    let packing = router(json!({"tpotWeight": 0.0}));
    train(&packing);
    assert_eq!(route(&packing, &slo(1000), None), B);
    let roomy = router(json!({"tpotWeight": 0.0, "headroomSelectionStrategy": "most"}));
    train(&roomy);
    assert_eq!(route(&roomy, &slo(1000), None), A);
}

#[test]
fn latency_plugins_get_a_producer_and_parameters_are_checked() {
    let implicit = json!({"plugins": [{"type": "latency-scorer"}]});
    assert!(Router::from_json(&implicit.to_string()).is_ok());
    for (plugin, needle) in [
        (
            json!({"type": "latency-scorer", "parameters": {"headroomSelectionStrategy": "max"}}),
            "'max'",
        ),
        (
            json!({"type": "latency-scorer", "parameters": {"ttftWeight": -1}}),
            "ttftWeight",
        ),
        (
            json!({"type": "slo-headroom-tier-filter", "parameters": {"epsilonExploreNeg": 2}}),
            "epsilonExploreNeg",
        ),
        (
            json!({"type": "predicted-latency-producer", "parameters": {"useEncoderCacheFeatures": true}}),
            "useEncoderCacheFeatures",
        ),
    ] {
        let e = Router::from_json(&json!({"plugins": [plugin]}).to_string())
            .err()
            .unwrap();
        assert!(e.0.contains(needle), "{e}");
    }
}

#[test]
fn the_tpot_slo_counts_in_streaming_mode_under_either_header_name() {
    let routed = |streaming: bool, tpot_header: &str| {
        let config = json!({
            "plugins": [
                {"type": "predicted-latency-producer", "parameters": {"streamingMode": streaming}},
                {"type": "slo-headroom-tier-filter", "parameters": {"epsilonExploreNeg": 0.0}},
                {"type": "latency-scorer", "parameters": {"tpotWeight": 0.0}}],
            "schedulingProfiles": [{"name": "default", "plugins": [
                {"pluginRef": "slo-headroom-tier-filter"}, {"pluginRef": "latency-scorer"}]}]
        });
        let r = Router::from_json(&config.to_string()).unwrap();
        r.set_endpoints(&[A, B].map(|a| EndpointSpec {
            name: a.into(),
            address: a.into(),
            labels: vec![],
        }));
        load(&r, A, 0, 0.5);
        load(&r, B, 10, 0.1);
        // A: 20 ms to the first token, 5 ms per token after; B: 320 ms and 40 ms.
        for i in 0..30 {
            let (target, ttft, tpot) = if i % 2 == 0 {
                (A, 0.020, 0.005)
            } else {
                (B, 0.320, 0.040)
            };
            let only = [target.to_owned()];
            let d = r
                .route_with(
                    CHAT,
                    BODY,
                    &RouteOptions {
                        subset: Some(&only),
                        ..Default::default()
                    },
                )
                .unwrap();
            r.release(d.primary());
            r.observe_latency(&d, ttft, Some(tpot));
        }
        let slos = vec![
            ("x-llm-d-slo-ttft-ms".to_owned(), "1000".to_owned()),
            (tpot_header.to_owned(), "20".to_owned()),
        ];
        route(&r, &slos, None)
    };
    // Both meet the TTFT SLO and "least" packs towards it: B, unless B's TPOT (40 ms) misses a
    // 20 ms TPOT SLO, which counts only in streaming mode (as upstream).
    assert_eq!(routed(false, "x-llm-d-slo-tpot-ms"), B);
    assert_eq!(routed(true, "x-llm-d-slo-tpot-ms"), A);
    assert_eq!(routed(true, "x-slo-tpot-ms"), A);
}
