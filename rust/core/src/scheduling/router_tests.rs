//! The Router end to end: parse, rewrite, schedule, in-flight accounting, status.

use super::*;

const BODY: &[u8] =
    br#"{"model":"llama","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
const PATH: &str = "/v1/chat/completions";

pub(crate) fn router(json: &str, addresses: &[&str]) -> Router {
    let r = Router::from_json(json).unwrap();
    let specs: Vec<EndpointSpec> = addresses
        .iter()
        .map(|a| EndpointSpec {
            name: a.to_string(),
            address: a.to_string(),
            labels: vec![],
        })
        .collect();
    r.set_endpoints(&specs);
    r
}

fn load(r: &Router, address: &str, waiting: u32) {
    let text = format!("vllm:num_requests_waiting {waiting}\nvllm:kv_cache_usage_perc 0.1\n");
    assert!(r.ingest_metrics(address, &text, Engine::Vllm));
}

#[test]
fn route_names_the_least_loaded_endpoint_and_the_request_facts() {
    let r = router("{}", &["10.0.0.1:8000", "10.0.0.2:8000"]);
    load(&r, "10.0.0.1:8000", 7);
    load(&r, "10.0.0.2:8000", 0);
    let d = r.route(PATH, BODY, None, None).unwrap();
    assert_eq!(
        (d.endpoints.as_str(), d.primary()),
        ("10.0.0.2:8000", "10.0.0.2:8000")
    );
    assert_eq!(d.model.as_deref(), Some("llama"));
    assert!(d.stream);
    assert_eq!((d.target_model, d.body), (None, None));
}

#[test]
fn route_counts_in_flight_and_release_drops_it_saturating() {
    let r = router("{}", &["10.0.0.1:8000"]);
    r.route(PATH, BODY, None, None).unwrap();
    r.route(PATH, BODY, None, None).unwrap();
    assert_eq!(r.status()[0].in_flight, 2);
    assert!(r.release("10.0.0.1:8000"));
    assert!(r.release("10.0.0.1:8000"));
    assert!(r.release("10.0.0.1:8000"));
    assert_eq!(r.status()[0].in_flight, 0);
    assert!(!r.release("10.9.9.9:1"));
}

#[test]
fn in_flight_spreads_requests_between_scrapes_with_active_request_scorer() {
    let r = router(
        r#"{"plugins": [{"type": "queue-scorer"}, {"type": "active-request-scorer"}]}"#,
        &["10.0.0.1:8000", "10.0.0.2:8000"],
    );
    load(&r, "10.0.0.1:8000", 0);
    load(&r, "10.0.0.2:8000", 0);
    let first = r.route(PATH, BODY, None, None).unwrap();
    let second = r.route(PATH, BODY, None, None).unwrap();
    assert_ne!(first.primary(), second.primary());
}

#[test]
fn model_rewrite_returns_the_new_body_and_target() {
    let r = router("{}", &["10.0.0.1:8000"]);
    let d = r.route(PATH, BODY, Some("llama-v2"), None).unwrap();
    assert_eq!(d.target_model.as_deref(), Some("llama-v2"));
    let body: serde_json::Value = serde_json::from_slice(d.body.as_deref().unwrap()).unwrap();
    assert_eq!(body["model"], "llama-v2");
    assert_eq!(d.model.as_deref(), Some("llama"));
}

#[test]
fn fallbacks_are_comma_separated_after_the_primary() {
    let r = router(
        r#"{"plugins": [{"type": "queue-scorer"},
            {"type": "max-score-picker", "parameters": {"maxNumOfEndpoints": 2}}]}"#,
        &["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"],
    );
    load(&r, "10.0.0.1:8000", 9);
    load(&r, "10.0.0.2:8000", 0);
    load(&r, "10.0.0.3:8000", 3);
    let d = r.route(PATH, BODY, None, None).unwrap();
    assert_eq!(d.endpoints, "10.0.0.2:8000,10.0.0.3:8000");
    assert_eq!(d.primary(), "10.0.0.2:8000");
}

#[test]
fn bad_bodies_are_bad_requests_and_empty_pools_no_endpoints() {
    let r = router("{}", &[]);
    assert!(matches!(
        r.route(PATH, b"{not json", None, None),
        Err(RouteError::BadRequest(_))
    ));
    assert!(matches!(
        r.route(PATH, BODY, None, None),
        Err(RouteError::NoEndpoints(_))
    ));
}

#[test]
fn status_reports_scrapes_and_staleness() {
    let r = router("{}", &["10.0.0.1:8000", "10.0.0.2:8000"]);
    load(&r, "10.0.0.1:8000", 4);
    let s = r.status();
    assert_eq!((s[0].waiting, s[0].stale), (4, false));
    assert!(s[0].age_ms.is_some());
    assert_eq!((s[1].age_ms, s[1].stale), (None, true));
}

const LONG_PROMPT_BODY: &str = r#"{"model":"llama","prompt":"PROMPT"}"#;

fn long_body() -> Vec<u8> {
    LONG_PROMPT_BODY
        .replace("PROMPT", &"abcdefgh".repeat(64))
        .into_bytes()
}

#[test]
fn explain_reports_raw_scores_per_profile_and_changes_nothing() {
    let r = router("{}", &["10.0.0.1:8000", "10.0.0.2:8000"]);
    load(&r, "10.0.0.1:8000", 4);
    load(&r, "10.0.0.2:8000", 0);
    let (d, explained) = r.explain(PATH, BODY, &RouteOptions::default()).unwrap();
    assert_eq!(d.primary(), "10.0.0.2:8000");
    let [p] = explained.as_slice() else {
        panic!("one profile expected: {explained:?}")
    };
    assert_eq!(p.profile, "default");
    assert_eq!(p.picked, vec!["10.0.0.2:8000".to_owned()]);
    let queue = p.scores.iter().find(|s| s.0 == "queue-scorer").unwrap();
    assert_eq!(queue.1, 2.0);
    let at = |addr: &str| p.candidates.iter().position(|c| c == addr).unwrap();
    assert_eq!(
        (queue.2[at("10.0.0.1:8000")], queue.2[at("10.0.0.2:8000")]),
        (0.0, 1.0)
    );
    assert!(r.status().iter().all(|s| s.in_flight == 0));
    // Nothing was learnt: a real route of a long prompt, then explain sees the hit only after it.
    let body = long_body();
    let (_, before) = r
        .explain("/v1/completions", &body, &RouteOptions::default())
        .unwrap();
    let prefix = |e: &[ProfileExplanation]| {
        e[0].scores
            .iter()
            .find(|s| s.0 == "prefix-cache-scorer")
            .unwrap()
            .2
            .clone()
    };
    assert!(prefix(&before).iter().all(|&s| s == 0.0));
    r.route("/v1/completions", &body, None, None).unwrap();
    let (_, after) = r
        .explain("/v1/completions", &body, &RouteOptions::default())
        .unwrap();
    assert!(prefix(&after).contains(&1.0));
}

const PRECISE: &str = r#"{"plugins": [
    {"type": "precise-prefix-cache-producer", "parameters": {"blockSize": 16}},
    {"type": "prefix-cache-scorer"}],
  "schedulingProfiles": [{"name": "p", "plugins": [{"pluginRef": "prefix-cache-scorer"}]}]}"#;

/// upstream's deprecated composite: the same producer and scorer behind one plugin type.
const PRECISE_DEPRECATED: &str = r#"{"plugins": [
    {"name": "precise", "type": "precise-prefix-cache-scorer", "parameters": {"blockSize": 16}}],
  "schedulingProfiles": [{"name": "p", "plugins": [{"pluginRef": "precise"}]}]}"#;

#[test]
fn kv_events_steer_the_prefix_scorer_to_the_endpoint_that_holds_the_blocks() {
    kv_events_steer(PRECISE);
}

#[test]
fn the_deprecated_precise_scorer_makes_its_producer_and_routes_the_same() {
    kv_events_steer(PRECISE_DEPRECATED);
    // Beside a configured producer its own parameters would be ignored upstream: refused here.
    let both = r#"{"plugins": [
        {"type": "precise-prefix-cache-producer", "parameters": {"blockSize": 16}},
        {"type": "precise-prefix-cache-scorer", "parameters": {"blockSize": 32}}]}"#;
    let err = crate::scheduling::scheduler::Scheduler::from_config(
        &RouterConfig::from_json(both).unwrap(),
    )
    .err()
    .expect("refused");
    assert!(
        err.0.contains("plugins[1]") && err.0.contains(".parameters"),
        "{}",
        err.0
    );
}

fn kv_events_steer(config: &str) {
    let r = router(config, &["10.0.0.1:8000", "10.0.0.2:8000"]);
    let body = long_body();
    let prompt = "abcdefgh".repeat(64);
    let hashes = crate::prefix::block_hashes("llama", None, prompt.as_bytes(), 16 * 4);
    assert_eq!(hashes.len(), 8);
    let payload = crate::scheduling::producers::kv_events::tests::stored_batch(&hashes[..6], 16);
    assert!(r
        .apply_kv_events("10.0.0.2:8000", "", &payload, Some(0))
        .unwrap());
    assert!(!r.apply_kv_events("10.9.9.9:1", "", &payload, None).unwrap());
    for _ in 0..20 {
        let d = r.route("/v1/completions", &body, None, None).unwrap();
        assert_eq!(d.primary(), "10.0.0.2:8000");
    }
    let (_, explained) = r
        .explain("/v1/completions", &body, &RouteOptions::default())
        .unwrap();
    let scores = &explained[0].scores[0].2;
    let at = explained[0]
        .candidates
        .iter()
        .position(|c| c == "10.0.0.2:8000")
        .unwrap();
    assert_eq!(scores[at], 6.0 / 8.0);
    assert_eq!(r.kv_event_stats().unwrap().batches, 1);
}

#[test]
fn kv_events_need_a_producer_and_a_valid_payload() {
    let r = router("{}", &["10.0.0.1:8000"]);
    let err = r
        .apply_kv_events("10.0.0.1:8000", "", &[0x90], None)
        .unwrap_err();
    assert!(err.to_string().contains("precise-prefix-cache-producer"));
    let r = router(PRECISE, &["10.0.0.1:8000"]);
    let err = r
        .apply_kv_events("10.0.0.1:8000", "", &[0x90], None)
        .unwrap_err();
    assert!(err.to_string().contains("batch.ts"), "{err}");
}

#[test]
fn ignore_subset_hint_schedules_over_every_endpoint() {
    let body = br#"{"model":"m","prompt":"hi"}"#;
    let hint = vec!["10.9.9.9:1".to_owned()];
    let strict = router("{}", &["10.0.0.1:8000"]);
    assert!(strict
        .route("/v1/completions", body, None, Some(&hint))
        .is_err());
    let open = router(r#"{"ignoreSubsetHint": true}"#, &["10.0.0.1:8000"]);
    let d = open
        .route("/v1/completions", body, None, Some(&hint))
        .unwrap();
    assert_eq!(d.primary(), "10.0.0.1:8000");
}

#[test]
fn allow_list_refuses_an_unlisted_model_naming_model_and_pool() {
    let r = router("{}", &["10.0.0.1:8000"]);
    assert!(r.route(PATH, BODY, None, None).is_ok(), "off by default");
    r.set_allowed_models("pool-a", Some(&["other".to_owned()]));
    let err = r.route(PATH, BODY, None, None).unwrap_err();
    assert_eq!(
        err,
        RouteError::ModelNotServed {
            model: "llama".into(),
            pool: "pool-a".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "model 'llama' is not served by pool 'pool-a'"
    );
    assert!(
        r.route(PATH, BODY, Some("other"), None).is_ok(),
        "a rewrite to a listed model passes"
    );
    r.set_allowed_models("pool-a", Some(&["llama".to_owned()]));
    assert!(r.route(PATH, BODY, None, None).is_ok());
    r.set_allowed_models("pool-a", None);
    let unlisted = br#"{"model":"x","messages":[{"role":"user","content":"hi"}]}"#;
    assert!(r.route(PATH, unlisted, None, None).is_ok());
}

#[test]
fn ipv6_endpoints_are_routed_and_scraped_by_their_bracketed_address() {
    let r = router("{}", &["[::1]:8000", "[fd00::2]:8000"]);
    load(&r, "[::1]:8000", 9);
    load(&r, "[fd00::2]:8000", 0);
    let d = r.route(PATH, BODY, None, None).unwrap();
    assert_eq!(d.primary(), "[fd00::2]:8000");
    assert_eq!(crate::datalayer::endpoints::ip_of(d.primary()), "fd00::2");
}
