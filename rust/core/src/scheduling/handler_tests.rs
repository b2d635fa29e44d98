//! Profile handlers in upstream's current shapes: disaggregation stages chosen by deciders
//! (P/D, E/PD, E/P/D, prefill-first), data-parallel and header-selected profiles, end to end
//! through the Router so the headers the decode endpoint reads are checked too.

use serde_json::json;

use crate::datalayer::{EndpointSpec, Engine};
use crate::scheduling::config::RouterConfig;
use crate::scheduling::router::Router;
use crate::scheduling::scheduler::Scheduler;

const CHAT: &str = "/v1/chat/completions";

fn text_body(words: usize) -> Vec<u8> {
    let prompt = "lorem ".repeat(words);
    json!({"model": "m", "messages": [{"role": "user", "content": prompt}]})
        .to_string()
        .into_bytes()
}

fn image_body() -> Vec<u8> {
    json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    ]}]})
    .to_string()
    .into_bytes()
}

/// Endpoints 10.0.0.{1..}: one per role given, each scraped idle.
fn router(config: serde_json::Value, roles: &[&str]) -> Router {
    let r = Router::from_json(&config.to_string()).unwrap();
    let specs: Vec<EndpointSpec> = roles
        .iter()
        .enumerate()
        .map(|(i, role)| EndpointSpec {
            name: format!("{role}{i}"),
            address: format!("10.0.0.{}:8000", i + 1),
            labels: vec![("llm-d.ai/role".into(), (*role).into())],
        })
        .collect();
    r.set_endpoints(&specs);
    for s in &specs {
        assert!(r.ingest_metrics(&s.address, "vllm:num_requests_waiting 0\n", Engine::Vllm));
    }
    r
}

fn header<'a>(d: &'a crate::scheduling::Decision, name: &str) -> Option<&'a str> {
    d.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn epd(handler_params: serde_json::Value) -> serde_json::Value {
    json!({
        "plugins": [
            {"type": "encode-filter"}, {"type": "prefill-filter"}, {"type": "decode-filter"},
            {"type": "queue-scorer"}, {"type": "prefix-cache-scorer"},
            {"type": "always-disagg-multimodal-decider"},
            {"type": "prefix-based-pd-decider", "parameters": {"nonCachedTokens": 16, "promptTokens": 64}},
            {"type": "disagg-profile-handler", "parameters": handler_params}
        ],
        "schedulingProfiles": [
            {"name": "encode", "plugins": [{"pluginRef": "encode-filter"}]},
            {"name": "prefill", "plugins": [{"pluginRef": "prefill-filter"}, {"pluginRef": "queue-scorer"}]},
            {"name": "decode", "plugins": [{"pluginRef": "decode-filter"}, {"pluginRef": "queue-scorer"},
                                            {"pluginRef": "prefix-cache-scorer"}]}
        ]
    })
}

const ROLES: [&str; 3] = ["encode", "prefill", "decode"];

#[test]
fn epd_encodes_media_elsewhere_and_prefills_long_uncached_prompts_elsewhere() {
    let r = router(
        epd(
            json!({"deciders": {"encode": "always-disagg-multimodal-decider",
                               "prefill": "prefix-based-pd-decider"}}),
        ),
        &ROLES,
    );
    let d = r.route(CHAT, &image_body(), None, None).unwrap();
    assert_eq!(d.primary(), "10.0.0.3:8000");
    assert_eq!(header(&d, "x-encoder-hosts-ports"), Some("10.0.0.1:8000"));
    // Short prompt: below promptTokens, so no prefill stage.
    assert_eq!(header(&d, "x-prefiller-host-port"), None);
    let long = r.route(CHAT, &text_body(400), None, None).unwrap();
    assert_eq!(
        header(&long, "x-prefiller-host-port"),
        Some("10.0.0.2:8000")
    );
    assert_eq!(header(&long, "x-encoder-hosts-ports"), None);
}

#[test]
fn e_pd_runs_only_the_encode_stage() {
    let r = router(
        epd(json!({"deciders": {"encode": "always-disagg-multimodal-decider"}})),
        &ROLES,
    );
    let d = r.route(CHAT, &text_body(400), None, None).unwrap();
    assert!(d.headers.is_empty(), "{:?}", d.headers);
    let d = r.route(CHAT, &image_body(), None, None).unwrap();
    assert_eq!(header(&d, "x-encoder-hosts-ports"), Some("10.0.0.1:8000"));
}

#[test]
fn prefill_first_always_prefills() {
    let r = router(epd(json!({"stageOrder": "prefill-first"})), &ROLES);
    let d = r.route(CHAT, &text_body(2), None, None).unwrap();
    assert_eq!(d.primary(), "10.0.0.3:8000");
    assert_eq!(header(&d, "x-prefiller-host-port"), Some("10.0.0.2:8000"));
}

#[test]
fn custom_profile_names_and_the_flat_format_are_read() {
    let mut config =
        epd(json!({"decodeProfile": "d", "prefillDeciderPluginName": "prefix-based-pd-decider"}));
    config["schedulingProfiles"][2]["name"] = json!("d");
    let r = router(config, &ROLES);
    let d = r.route(CHAT, &text_body(400), None, None).unwrap();
    assert_eq!(header(&d, "x-prefiller-host-port"), Some("10.0.0.2:8000"));
}

fn handler_error(params: serde_json::Value) -> String {
    let config = RouterConfig::from_json(&epd(params).to_string()).unwrap();
    match Scheduler::from_config(&config) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.0,
    }
}

#[test]
fn disagg_parameter_errors_name_the_field() {
    let cases = [
        (
            json!({"deciders": {"prefill": "nope"}}),
            "deciders.prefill: no decider plugin named 'nope'",
        ),
        (json!({"stageOrder": "sideways"}), "stageOrder: 'sideways'"),
        (
            json!({"stageOrder": "prefill-first", "deciders": {"prefill": "prefix-based-pd-decider"}}),
            "deciders.prefill",
        ),
        (
            json!({"profiles": {"decode": "x"}}),
            "no scheduling profile named 'x'",
        ),
        (
            json!({"deciders": {"prefill": "prefix-based-pd-decider"}, "decodeProfile": "decode"}),
            "use one format",
        ),
    ];
    for (params, needle) in cases {
        let e = handler_error(params.clone());
        assert!(e.contains(needle), "{params}: {e}");
    }
}

#[test]
fn a_zero_non_cached_threshold_disables_the_prefix_decider() {
    let mut config = epd(json!({"deciders": {"prefill": "prefix-based-pd-decider"}}));
    config["plugins"][6]["parameters"] = json!({"nonCachedTokens": 0});
    let r = router(config, &ROLES);
    let d = r.route(CHAT, &text_body(400), None, None).unwrap();
    assert_eq!(header(&d, "x-prefiller-host-port"), None);
}

#[test]
fn headers_handlers_must_name_the_disagg_handlers_profiles() {
    let mut config = epd(json!({"deciders": {"prefill": "prefix-based-pd-decider"}}));
    config["plugins"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "disagg-headers-handler", "parameters": {"prefillProfile": "p2"}}));
    let e = Scheduler::from_config(&RouterConfig::from_json(&config.to_string()).unwrap())
        .err()
        .unwrap();
    assert!(e.0.contains("prefillProfile 'p2'"), "{e}");
}

#[test]
fn data_parallel_sends_to_the_primary_port_and_names_the_rank_in_a_header() {
    let config = json!({
        "plugins": [{"type": "queue-scorer"},
                    {"type": "data-parallel-profile-handler", "parameters": {"primaryPort": 9000}}],
        "schedulingProfiles": [{"name": "default", "plugins": [{"pluginRef": "queue-scorer"}]}]
    });
    let r = router(config, &["decode"]);
    let d = r.route(CHAT, &text_body(2), None, None).unwrap();
    assert_eq!(d.endpoints, "10.0.0.1:9000");
    assert_eq!(
        header(&d, "x-data-parallel-host-port"),
        Some("10.0.0.1:8000")
    );
    // In-flight is counted on the picked rank, and released from it.
    assert_eq!(d.primary(), "10.0.0.1:8000");
    assert!(r.release(d.primary()));
    assert_eq!(r.status()[0].in_flight, 0);
}

#[test]
fn header_profile_handler_runs_the_named_profile_or_the_default() {
    let mut config = epd(json!({}));
    config["plugins"][7] =
        json!({"type": "header-profile-handler", "parameters": {"headerName": "X-Stage"}});
    let r = router(config, &ROLES);
    let route = |stage: Option<&str>| {
        let headers: Vec<(String, String)> = stage
            .map(|s| vec![("x-stage".to_owned(), s.to_owned())])
            .unwrap_or_default();
        let options = crate::scheduling::RouteOptions {
            headers: &headers,
            ..Default::default()
        };
        r.route_with(CHAT, &text_body(2), &options)
    };
    assert_eq!(route(Some("encode")).unwrap().primary(), "10.0.0.1:8000");
    assert_eq!(route(Some("prefill")).unwrap().primary(), "10.0.0.2:8000");
    assert_eq!(route(None).unwrap().primary(), "10.0.0.3:8000");
    assert!(route(Some("nope")).is_err());
}
