//! The Router end to end: parse, rewrite, schedule, in-flight accounting, status.

use super::*;

const BODY: &[u8] =
    br#"{"model":"llama","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
const PATH: &str = "/v1/chat/completions";

fn router(json: &str, addresses: &[&str]) -> Router {
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
