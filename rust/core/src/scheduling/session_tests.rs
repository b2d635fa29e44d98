//! Session affinity (scorer, filter, session-id-producer), the headers a decision carries and
//! the scores it reports, through the Router.

use serde_json::{json, Value};

use crate::datalayer::{EndpointSpec, Engine};
use crate::scheduling::contracts::scorer::Picks;
use crate::scheduling::router::{Decision, RouteOptions, Router};
use crate::scheduling::session::session_token;
use crate::scheduling::test_pool::{all, cycle, filter_of, pool, scorer_of, scores, Ep};

const CHAT: &str = "/v1/chat/completions";
const BODY: &[u8] = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
const A: &str = "10.0.0.1:8000";
const B: &str = "10.0.0.2:8000";
const C: &str = "10.0.0.3:8000";

fn router(config: Value, addresses: &[&str]) -> Router {
    let r = Router::from_json(&config.to_string()).unwrap();
    r.set_endpoints(&addresses.iter().map(|a| spec(a, &[])).collect::<Vec<_>>());
    r
}

fn spec(address: &str, labels: &[(&str, &str)]) -> EndpointSpec {
    EndpointSpec {
        name: format!("pod-{}", &address[7..8]),
        address: address.into(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
    }
}

fn waiting(r: &Router, address: &str, n: u32) {
    let text = format!("vllm:num_requests_waiting {n}\nvllm:kv_cache_usage_perc 0.1\n");
    assert!(r.ingest_metrics(address, &text, Engine::Vllm));
}

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn route(r: &Router, h: &[(String, String)]) -> Decision {
    let d = r
        .route_with(
            CHAT,
            BODY,
            &RouteOptions {
                headers: h,
                ..Default::default()
            },
        )
        .unwrap();
    r.release(d.primary());
    d
}

/// queue-scorer picks the emptiest queue; the session plugin may overrule it.
fn with_session(kind: &str, params: Value, extra: &[Value]) -> Value {
    let mut plugins = vec![
        json!({"type": "queue-scorer"}),
        json!({"name": "session", "type": kind, "parameters": params}),
    ];
    plugins.extend(extra.iter().cloned());
    let weight = if kind.ends_with("scorer") {
        json!({"pluginRef": "session", "weight": 10})
    } else {
        json!({"pluginRef": "session"})
    };
    json!({"plugins": plugins, "schedulingProfiles": [{"name": "default",
           "plugins": [{"pluginRef": "queue-scorer"}, weight]}]})
}

#[test]
fn the_filter_pins_the_endpoint_a_token_names_and_passes_all_otherwise() {
    let f = filter_of("session-affinity-filter", "{}");
    let (_store, snap) = pool(vec![Ep::waiting(0), Ep::waiting(0), Ep::waiting(0)]);
    let token = headers(&[("x-session-token", &session_token("ep2"))]);
    let mut c = cycle(&snap);
    c.request.headers = &token;
    let mut candidates = all(&c);
    f.filter(&c, &mut candidates).unwrap();
    assert_eq!(candidates, vec![2]);
    // Its endpoint filtered out already, a junk token, or none: nothing is removed.
    let mut candidates = vec![0, 1];
    f.filter(&c, &mut candidates).unwrap();
    assert_eq!(candidates, vec![0, 1]);
    let junk = headers(&[("x-session-token", "!!")]);
    c.request.headers = &junk;
    let mut candidates = all(&c);
    f.filter(&c, &mut candidates).unwrap();
    assert_eq!(candidates, vec![0, 1, 2]);
}

#[test]
fn a_session_id_binds_to_its_first_pick_and_moves_only_when_its_endpoint_is_gone() {
    let f = filter_of(
        "session-affinity-filter",
        r#"{"strategy": "session_id", "sessionIdConfig": {"evictionTtlSeconds": 60}}"#,
    );
    let (_store, snap) = pool(vec![Ep::waiting(0), Ep::waiting(0), Ep::waiting(0)]);
    let sid = headers(&[("x-session-id", "s1")]);
    let pick = |c: &crate::scheduling::cycle::Cycle<'_>, candidates: &mut Vec<u32>, p: u32| {
        f.filter(c, candidates).unwrap();
        f.picked(
            c,
            &Picks {
                primary: vec![p],
                ..Default::default()
            },
        );
    };
    let mut c = cycle(&snap);
    c.request.headers = &sid;
    let mut candidates = all(&c);
    pick(&c, &mut candidates, 1); // unbound: every candidate passes, the pick binds
    assert_eq!(candidates, vec![0, 1, 2]);
    let mut c = cycle(&snap);
    c.request.headers = &sid;
    let mut candidates = all(&c);
    f.filter(&c, &mut candidates).unwrap();
    assert_eq!(candidates, vec![1]);
    // Endpoint 1 is not a candidate (e.g. outside the subset): all pass, the session moves.
    let mut c = cycle(&snap);
    c.request.headers = &sid;
    let mut candidates = vec![0, 2];
    pick(&c, &mut candidates, 2);
    assert_eq!(candidates, vec![0, 2]);
    let mut c = cycle(&snap);
    c.request.headers = &sid;
    let mut candidates = all(&c);
    f.filter(&c, &mut candidates).unwrap();
    assert_eq!(candidates, vec![2]);
    f.endpoint_removed(snap.endpoints[2].info.id);
    let mut candidates = all(&c);
    f.filter(&c, &mut candidates).unwrap();
    assert_eq!(candidates, vec![0, 1, 2]);
}

#[test]
fn the_scorer_keeps_a_binding_whose_endpoint_only_lost_the_pick() {
    let s = scorer_of("session-affinity-scorer", r#"{"strategy": "session_id"}"#);
    let (_store, snap) = pool(vec![Ep::waiting(0), Ep::waiting(0)]);
    let sid = headers(&[("x-session-id", "s1")]);
    let mut c = cycle(&snap);
    c.request.headers = &sid;
    let picked = |p: u32| Picks {
        primary: vec![p],
        ..Default::default()
    };
    s.picked(&c, &picked(0));
    assert_eq!(scores(&*s, &c), vec![1.0, 0.0]);
    // A candidate that lost to heavier scorers: the session stays where it was.
    let mut c = cycle(&snap);
    c.request.headers = &sid;
    assert_eq!(scores(&*s, &c), vec![1.0, 0.0]);
    s.picked(&c, &picked(1));
    assert_eq!(scores(&*s, &c), vec![1.0, 0.0]);
}

#[test]
fn the_filter_beats_the_load_and_the_response_carries_the_token_header() {
    let r = router(
        with_session(
            "session-affinity-filter",
            json!({"encodedEndpointHeaderConfig": {"header": "X-My-Token"}}),
            &[],
        ),
        &[A, B],
    );
    waiting(&r, A, 0);
    waiting(&r, B, 9);
    let first = route(&r, &[]);
    assert_eq!(first.primary(), A);
    assert_eq!(
        first.response_headers.to_vec(),
        vec![("x-my-token".to_owned(), session_token("pod-1"))]
    );
    waiting(&r, A, 9);
    waiting(&r, B, 0);
    let again = route(&r, &headers(&[("x-my-token", &session_token("pod-1"))]));
    assert_eq!(again.primary(), A);
    assert_eq!(route(&r, &[]).primary(), B);
}

#[test]
fn session_id_producer_feeds_the_filter_from_a_cookie() {
    let config = with_session(
        "session-affinity-filter",
        json!({"strategy": "session_id", "sessionIdConfig": {"sources": [
            {"attribute": "SessionIDDataKey", "producer": "sid"}]}}),
        &[json!({"name": "sid", "type": "session-id-producer",
                  "parameters": {"cookieName": "llm-d-session"}})],
    );
    let r = router(config, &[A, B]);
    assert!(r.reads_headers());
    waiting(&r, A, 9);
    waiting(&r, B, 0);
    let cookie = headers(&[("cookie", "theme=dark; llm-d-session=abc")]);
    assert_eq!(route(&r, &cookie).primary(), B);
    assert!(route(&r, &cookie).response_headers.is_empty());
    waiting(&r, A, 0);
    waiting(&r, B, 9);
    assert_eq!(route(&r, &cookie).primary(), B);
    // The x-session-id header is not a source of this filter: no pin.
    assert_eq!(route(&r, &headers(&[("x-session-id", "abc")])).primary(), A);
}

#[test]
fn attribute_sources_must_name_a_configured_producer() {
    for (extra, source, needle) in [
        (
            vec![],
            json!({"attribute": "agent-identity"}),
            "attribute 'agent-identity/'",
        ),
        (
            vec![json!({"name": "sid", "type": "session-id-producer",
                        "parameters": {"headerName": "x-s"}})],
            json!({"attribute": "SessionIDDataKey"}),
            "published here: [SessionIDDataKey/sid]",
        ),
    ] {
        let config = with_session(
            "session-affinity-scorer",
            json!({"strategy": "session_id", "sessionIdConfig": {"sources": [source]}}),
            &extra,
        );
        let e = Router::from_json(&config.to_string()).err().unwrap();
        assert!(e.0.contains(needle), "{e}");
    }
    let in_profile = json!({
        "plugins": [{"type": "session-id-producer", "parameters": {"headerName": "x"}}],
        "schedulingProfiles": [{"name": "p", "plugins": [{"pluginRef": "session-id-producer"}]}]});
    let e = Router::from_json(&in_profile.to_string()).err().unwrap();
    assert!(e.0.contains("cannot be used in a profile"), "{e}");
}

#[test]
fn multicluster_session_affinity_filter_is_the_same_pin() {
    let r = router(
        with_session("multicluster-session-affinity-filter", json!({}), &[]),
        &[A, B],
    );
    waiting(&r, A, 9);
    waiting(&r, B, 0);
    let token = headers(&[("x-session-token", &session_token("pod-1"))]);
    assert_eq!(route(&r, &token).primary(), A);
}

#[test]
fn headers_are_read_only_when_a_plugin_needs_them() {
    assert!(!router(json!({}), &[A]).reads_headers());
    let dp =
        json!({"plugins": [{"type": "data-parallel-profile-handler"}, {"type": "queue-scorer"}]});
    assert!(!router(dp, &[A]).reads_headers());
    for kind in ["session-affinity-scorer", "session-affinity-filter"] {
        assert!(router(with_session(kind, json!({}), &[]), &[A]).reads_headers());
    }
    let latency = json!({"plugins": [{"type": "latency-scorer"}]});
    assert!(router(latency, &[A]).reads_headers());
}

fn scored(config: Value, addresses: &[&str]) -> Router {
    let mut config = config;
    config["emitEndpointScores"] = json!(true);
    router(config, addresses)
}

#[test]
fn decisions_carry_the_primary_profiles_weighted_scores_when_asked() {
    let config = json!({"plugins": [{"type": "queue-scorer"}, {"type": "max-score-picker"}],
        "schedulingProfiles": [{"name": "default", "plugins": [
            {"pluginRef": "queue-scorer", "weight": 2}, {"pluginRef": "max-score-picker"}]}]});
    let off = router(config.clone(), &[A, B, C]);
    assert_eq!(route(&off, &[]).endpoint_scores, None);
    let r = scored(config, &[A, B, C]);
    waiting(&r, A, 0);
    waiting(&r, B, 5);
    waiting(&r, C, 10);
    let d = route(&r, &[]);
    let mut s = d.endpoint_scores.unwrap().into_vec();
    s.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(s, vec![(A.into(), 2.0), (B.into(), 1.0), (C.into(), 0.0)]);
    // Endpoints the proxy's subset leaves out are not scored.
    let only = [B.to_owned()];
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
    assert_eq!(
        d.endpoint_scores.as_deref(),
        Some(&[(B.to_owned(), 2.0)][..])
    );
}

#[test]
fn disaggregated_decisions_report_the_decode_profile_and_data_parallel_none() {
    let config = json!({
        "plugins": [
            {"type": "prefill-filter"}, {"type": "decode-filter"}, {"type": "queue-scorer"},
            {"type": "always-disagg-pd-decider"},
            {"type": "disagg-profile-handler", "parameters": {"deciders": {"prefill": "always-disagg-pd-decider"}}}],
        "schedulingProfiles": [
            {"name": "prefill", "plugins": [{"pluginRef": "prefill-filter"}, {"pluginRef": "queue-scorer"}]},
            {"name": "decode", "plugins": [{"pluginRef": "decode-filter"}, {"pluginRef": "queue-scorer"}]}]});
    let r = Router::from_json(
        &{
            let mut c = config;
            c["emitEndpointScores"] = json!(true);
            c
        }
        .to_string(),
    )
    .unwrap();
    let role = "llm-d.ai/role";
    r.set_endpoints(&[
        spec(A, &[(role, "prefill")]),
        spec(B, &[(role, "decode")]),
        spec(C, &[(role, "decode")]),
    ]);
    waiting(&r, A, 0);
    waiting(&r, B, 0);
    waiting(&r, C, 4);
    let d = route(&r, &[]);
    assert_eq!(d.primary(), B);
    assert_eq!(
        d.headers,
        vec![("x-prefiller-host-port".to_owned(), A.to_owned())]
    );
    let mut s = d.endpoint_scores.unwrap().into_vec();
    s.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(s, vec![(B.into(), 1.0), (C.into(), 0.0)]);
    let dp = scored(
        json!({"plugins": [{"type": "data-parallel-profile-handler", "parameters": {"primaryPort": 9000}},
                           {"type": "queue-scorer"}]}),
        &[A],
    );
    let d = route(&dp, &[]);
    assert_eq!(d.endpoints, "10.0.0.1:9000");
    assert_eq!(
        d.headers,
        vec![("x-data-parallel-host-port".to_owned(), A.to_owned())]
    );
    assert_eq!(d.endpoint_scores, None);
}

/// P/D with a session filter per stage, as upstream's README pairs them: decode writes
/// `x-session-token`, prefill (`profileName: prefill`) `x-session-token-prefill`; the first
/// `session` strategy is "encoded_endpoint_header" or "session_id".
fn pd_with_session_filters(strategy: &str) -> Value {
    let (decode, prefill) = if strategy == "session_id" {
        (
            json!({"strategy": "session_id"}),
            json!({"strategy": "session_id", "profileName": "prefill"}),
        )
    } else {
        (
            json!({}),
            json!({"profileName": "prefill",
                   "encodedEndpointHeaderConfig": {"header": "x-session-token-prefill"}}),
        )
    };
    json!({
        "plugins": [
            {"type": "prefill-filter"}, {"type": "decode-filter"}, {"type": "queue-scorer"},
            {"type": "always-disagg-pd-decider"},
            {"type": "disagg-profile-handler", "parameters": {"deciders": {"prefill": "always-disagg-pd-decider"}}},
            {"name": "session-decode", "type": "session-affinity-filter", "parameters": decode},
            {"name": "session-prefill", "type": "session-affinity-filter", "parameters": prefill}
        ],
        "schedulingProfiles": [
            {"name": "prefill", "plugins": [{"pluginRef": "prefill-filter"}, {"pluginRef": "session-prefill"},
                                             {"pluginRef": "queue-scorer"}]},
            {"name": "decode", "plugins": [{"pluginRef": "decode-filter"}, {"pluginRef": "session-decode"},
                                            {"pluginRef": "queue-scorer"}]}
        ]
    })
}

/// Prefill A, B and decode C, D (names pod-1 … pod-4), all idle.
fn pd_pool(config: Value) -> Router {
    let r = Router::from_json(&config.to_string()).unwrap();
    let role = |a: &str, role: &str| spec(a, &[("llm-d.ai/role", role)]);
    r.set_endpoints(&[
        role(A, "prefill"),
        role(B, "prefill"),
        role(C, "decode"),
        role("10.0.0.4:8000", "decode"),
    ]);
    for a in [A, B, C, "10.0.0.4:8000"] {
        waiting(&r, a, 0);
    }
    r
}

fn prefill_of(d: &Decision) -> &str {
    let (_, v) = d
        .headers
        .iter()
        .find(|(k, _)| k == "x-prefiller-host-port")
        .expect("a prefill stage");
    v
}

#[test]
fn profile_name_writes_the_prefill_pick_in_its_own_token_and_pins_it() {
    let r = pd_pool(pd_with_session_filters("encoded_endpoint_header"));
    waiting(&r, A, 0);
    waiting(&r, B, 9);
    waiting(&r, C, 0);
    waiting(&r, "10.0.0.4:8000", 9);
    let first = route(&r, &[]);
    assert_eq!((first.primary(), prefill_of(&first)), (C, A));
    let mut tokens = first.response_headers.to_vec();
    tokens.sort();
    assert_eq!(
        tokens,
        vec![
            ("x-session-token".to_owned(), session_token("pod-3")),
            ("x-session-token-prefill".to_owned(), session_token("pod-1")),
        ]
    );
    // The loads turn; both tokens sent back keep both stages where they were.
    waiting(&r, A, 9);
    waiting(&r, B, 0);
    waiting(&r, C, 9);
    waiting(&r, "10.0.0.4:8000", 0);
    let again = route(&r, &tokens);
    assert_eq!((again.primary(), prefill_of(&again)), (C, A));
    let fresh = route(&r, &[]);
    assert_eq!((fresh.primary(), prefill_of(&fresh)), ("10.0.0.4:8000", B));
}

#[test]
fn profile_name_binds_a_session_id_to_the_prefill_pick() {
    let r = pd_pool(pd_with_session_filters("session_id"));
    waiting(&r, B, 9);
    waiting(&r, "10.0.0.4:8000", 9);
    let sid = headers(&[("x-session-id", "s-1")]);
    let first = route(&r, &sid);
    assert_eq!((first.primary(), prefill_of(&first)), (C, A));
    waiting(&r, A, 9);
    waiting(&r, B, 0);
    waiting(&r, C, 9);
    waiting(&r, "10.0.0.4:8000", 0);
    let again = route(&r, &sid);
    assert_eq!((again.primary(), prefill_of(&again)), (C, A));
}

#[test]
fn profile_name_must_be_a_scheduling_profile() {
    let mut config = pd_with_session_filters("encoded_endpoint_header");
    config["plugins"][6]["parameters"]["profileName"] = json!("prefil");
    let e = Router::from_json(&config.to_string())
        .err()
        .expect("refused");
    assert!(
        e.to_string().contains("plugin 'session-prefill' (session-affinity-filter): parameters.profileName: 'prefil' is not a scheduling profile (profiles: prefill, decode)"),
        "{e}"
    );
}
