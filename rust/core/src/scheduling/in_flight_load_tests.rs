//! In-flight tokens end to end through the Router: what a request holds and when it gives it
//! back (inflight-load-producer), and the plugins that read them (token-load-scorer,
//! prefix-cache-affinity-filter).

use super::*;

const PATH: &str = "/v1/completions";
const A: &str = "10.0.0.1:8000";
const B: &str = "10.0.0.2:8000";

/// A Router over `addresses`, each reporting an empty queue.
fn router(json: &str, addresses: &[&str]) -> Router {
    let r = super::tests::router(json, addresses);
    for a in addresses {
        load(&r, a, 0);
    }
    r
}

fn load(r: &Router, address: &str, waiting: u32) {
    let text = format!("vllm:num_requests_waiting {waiting}\nvllm:kv_cache_usage_perc 0.1\n");
    assert!(r.ingest_metrics(address, &text, Engine::Vllm));
}

/// A 512-byte prompt: 128 estimated tokens, two 64-token blocks.
fn body(extra: &str) -> Vec<u8> {
    format!(
        r#"{{"model":"m","prompt":"{}"{extra}}}"#,
        "abcdefgh".repeat(64)
    )
    .into_bytes()
}

fn tokens(r: &Router, address: &str) -> u64 {
    r.status()
        .iter()
        .find(|s| s.address == address)
        .unwrap()
        .in_flight_tokens
}

#[test]
fn a_request_holds_its_prompt_tokens_until_its_first_byte() {
    let r = router(r#"{"plugins": [{"type": "token-load-scorer"}]}"#, &[A]);
    let mut d = r.route(PATH, &body(""), None, None).unwrap();
    assert_eq!((d.held_tokens, tokens(&r, A)), (128, 128));
    r.first_byte(&mut d);
    assert_eq!((tokens(&r, A), r.status()[0].in_flight), (0, 1));
    r.finish(&mut d);
    assert_eq!((tokens(&r, A), r.status()[0].in_flight), (0, 0));
}

#[test]
fn an_abandoned_request_gives_back_its_tokens_when_it_finishes() {
    let r = router(r#"{"plugins": [{"type": "token-load-scorer"}]}"#, &[A]);
    let mut d = r.route(PATH, &body(""), None, None).unwrap();
    let mut other = r.route(PATH, &body(""), None, None).unwrap();
    assert_eq!(tokens(&r, A), 256);
    r.finish(&mut d); // no response byte ever came
    assert_eq!(tokens(&r, A), 128);
    r.first_byte(&mut other);
    r.finish(&mut other);
    assert_eq!(tokens(&r, A), 0);
}

#[test]
fn an_output_estimate_is_held_to_the_end_and_capped_by_max_tokens() {
    let config = r#"{"plugins": [{"type": "inflight-load-producer",
        "parameters": {"addEstimatedOutputTokens": true, "maxEstimatedOutputTokens": 150}},
        {"type": "token-load-scorer"}]}"#;
    let r = router(config, &[A]);
    // 128 prompt + round(128 × 1.5) = 192 capped to 150 by the operator.
    let mut d = r.route(PATH, &body(""), None, None).unwrap();
    assert_eq!(d.held_tokens, 128 + 150);
    // The client's own max_tokens caps it further.
    let mut capped = r
        .route(PATH, &body(r#","max_tokens":10"#), None, None)
        .unwrap();
    assert_eq!(capped.held_tokens, 128 + 10);
    r.first_byte(&mut d);
    r.first_byte(&mut capped);
    assert_eq!(tokens(&r, A), 278 + 138);
    r.finish(&mut d);
    r.finish(&mut capped);
    assert_eq!(tokens(&r, A), 0);
}

#[test]
fn cached_prefix_blocks_are_not_held() {
    let config = r#"{"plugins": [{"type": "approx-prefix-cache-producer"},
        {"type": "prefix-cache-scorer"}, {"type": "token-load-scorer"}]}"#;
    let r = router(config, &[A]);
    let first = r.route(PATH, &body(""), None, None).unwrap();
    assert_eq!(first.held_tokens, 128);
    // Both blocks of the same prompt are now cached on A.
    let second = r.route(PATH, &body(""), None, None).unwrap();
    assert_eq!(second.held_tokens, 0);
}

#[test]
fn token_load_scorer_scores_held_plus_this_requests_tokens_against_the_threshold() {
    let config = r#"{"plugins": [{"type": "token-load-scorer",
        "parameters": {"queueThresholdTokens": 256}}]}"#;
    let r = router(config, &[A, B]);
    let d = r.route(PATH, &body(""), None, None).unwrap();
    let busy = d.primary().to_owned();
    let (_, explained) = r
        .explain(PATH, &body(""), &RouteOptions::default())
        .unwrap();
    let p = &explained[0];
    let scores = &p
        .scores
        .iter()
        .find(|s| s.0 == "token-load-scorer")
        .unwrap()
        .2;
    for (address, score) in p.candidates.iter().zip(scores) {
        // Busy: (128 held + 128 new) / 256 → 0; idle: 128 / 256 → 0.5.
        let expected = if *address == busy { 0.0 } else { 0.5 };
        assert_eq!(*score, expected, "{address}");
    }
    // So the next request goes to the idle endpoint.
    let next = r.route(PATH, &body(""), None, None).unwrap();
    assert_ne!(next.primary(), busy);
}

fn affinity_router(params: &str) -> Router {
    let config = format!(
        r#"{{"plugins": [{{"type": "prefix-cache-affinity-filter", "parameters": {params}}},
            {{"type": "queue-scorer"}}]}}"#
    );
    router(&config, &[A, B])
}

#[test]
fn affinity_filter_keeps_a_request_on_the_endpoint_holding_its_prefix() {
    let r = affinity_router(r#"{"maxTTFTPenaltyMs": 0}"#);
    load(&r, B, 5);
    let mut d = r.route(PATH, &body(""), None, None).unwrap();
    assert_eq!(d.primary(), A);
    r.first_byte(&mut d);
    r.finish(&mut d);
    // The queue now prefers B, but A holds the whole prompt: it stays sticky.
    load(&r, A, 9);
    load(&r, B, 0);
    assert_eq!(r.route(PATH, &body(""), None, None).unwrap().primary(), A);
    // Another prompt has no sticky endpoint: all stay candidates, the queue decides.
    let other = format!(r#"{{"model":"m","prompt":"{}"}}"#, "zyxwvuts".repeat(64));
    assert_eq!(
        r.route(PATH, other.as_bytes(), None, None)
            .unwrap()
            .primary(),
        B
    );
}

#[test]
fn affinity_filter_breaks_stickiness_when_the_sticky_endpoints_ttft_is_too_high() {
    // 1000 tokens/s: A's 128 held tokens put its TTFT 128 ms above B's, over the 100 ms allowed.
    let r = affinity_router(r#"{"maxTTFTPenaltyMs": 100, "peakPrefillThroughput": 1000}"#);
    load(&r, B, 5);
    let mut held = r.route(PATH, &body(""), None, None).unwrap();
    assert_eq!(held.primary(), A);
    load(&r, A, 9);
    load(&r, B, 0);
    // (explained: B learns nothing, so it stays without the prefix)
    let (broke, _) = r
        .explain(PATH, &body(""), &RouteOptions::default())
        .unwrap();
    assert_eq!(broke.primary(), B);
    // Once A's prefill is done its tokens are back and it is sticky again.
    r.first_byte(&mut held);
    assert_eq!(r.route(PATH, &body(""), None, None).unwrap().primary(), A);
}

#[test]
fn affinity_filter_with_certain_exploration_keeps_every_endpoint() {
    let r = affinity_router(r#"{"maxTTFTPenaltyMs": 0, "explorationProbability": 1.0}"#);
    load(&r, B, 5);
    assert_eq!(r.route(PATH, &body(""), None, None).unwrap().primary(), A);
    load(&r, A, 9);
    load(&r, B, 0);
    assert_eq!(r.route(PATH, &body(""), None, None).unwrap().primary(), B);
}

#[test]
fn affinity_filter_and_producer_parameters_are_checked_by_name() {
    for (params, field) in [
        (r#"{"affinityThreshold": 1.5}"#, "affinityThreshold"),
        (r#"{"explorationProbability": 2}"#, "explorationProbability"),
        (r#"{"maxTTFTPenaltyMs": -1}"#, "maxTTFTPenaltyMs"),
        (r#"{"peakPrefillThroughput": 0}"#, "peakPrefillThroughput"),
        (r#"{"ttftSource": "guess"}"#, "ttftSource"),
        (
            r#"{"prefixMatchInfoProducerName": "nope"}"#,
            "prefixMatchInfoProducerName",
        ),
        (r#"{"affinity": 0.5}"#, "affinity"),
    ] {
        let config = format!(
            r#"{{"plugins": [{{"type": "prefix-cache-affinity-filter", "parameters": {params}}}]}}"#
        );
        let e = Router::from_json(&config).err().unwrap();
        assert!(e.0.contains(field), "{params}: {e}");
    }
    let config = r#"{"plugins": [{"type": "inflight-load-producer",
        "parameters": {"prefixMatchInfoProducerName": "nope"}}]}"#;
    let e = Router::from_json(config).err().unwrap();
    assert!(e.0.contains("prefixMatchInfoProducerName"), "{e}");
}

#[test]
fn affinity_filter_gates_on_the_latency_predictor_when_asked() {
    let r = affinity_router(r#"{"ttftSource": "latencyPredictor"}"#);
    // The predictor is created for it, as for the latency plugins.
    assert!(r.scheduler.latency_producer().is_some());
    assert!(r.route(PATH, &body(""), None, None).is_ok());
}
