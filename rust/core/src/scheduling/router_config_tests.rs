//! What the config's request-handler and data-layer parts change in the Router: which parser
//! reads a request, which engine an endpoint's metrics are read as, whether endpoints are scraped.

use super::*;
use crate::datalayer::Engine;

fn specs(labels: &[&[(&str, &str)]]) -> Vec<EndpointSpec> {
    labels
        .iter()
        .enumerate()
        .map(|(i, l)| EndpointSpec {
            name: format!("ep{i}"),
            address: format!("10.0.0.{}:8000", i + 1),
            labels: l
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
        .collect()
}

fn engines(r: &Router) -> Vec<Engine> {
    r.store()
        .snapshot()
        .endpoints
        .iter()
        .map(|e| e.info.engine)
        .collect()
}

#[test]
fn configured_parsers_decide_which_paths_are_served() {
    let r = Router::from_json(r#"{"parsers": ["openai-parser"]}"#).unwrap();
    r.set_endpoints(&specs(&[&[]]));
    let chat = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    assert!(r.route("/v1/chat/completions", chat, None, None).is_ok());
    let e = r.route("/v1/messages", chat, None, None).unwrap_err();
    assert_eq!(
        e,
        RouteError::BadRequest(ParseError::NoParser("/v1/messages".into()))
    );
    assert_eq!(
        r.describe()["parsers"],
        serde_json::json!(["openai-parser"])
    );
}

#[test]
fn passthrough_routes_any_body_and_the_defaults_include_it() {
    let r = Router::from_json(r#"{"parsers": ["passthrough-parser"]}"#).unwrap();
    r.set_endpoints(&specs(&[&[]]));
    let d = r
        .route("/v1/chat/completions", b"\x00 not json", None, None)
        .unwrap();
    assert_eq!((d.model, d.kind), (None, ApiKind::Passthrough));
    let defaults = Router::from_json("{}").unwrap();
    assert_eq!(
        defaults.describe()["parsers"],
        serde_json::json!([
            "openai-parser",
            "anthropic-parser",
            "vllmhttp-parser",
            "passthrough-parser"
        ])
    );
}

#[test]
fn the_default_engine_applies_to_endpoints_without_the_label() {
    let r = Router::from_json(r#"{"defaultEngine": "sglang"}"#).unwrap();
    r.set_endpoints(&specs(&[&[], &[("llm-d.ai/engine-type", "vllm")]]));
    assert_eq!(engines(&r), vec![Engine::Sglang, Engine::Vllm]);
}

#[test]
fn the_engine_label_key_names_where_the_engine_is_read() {
    let r = Router::from_json(r#"{"engineLabelKey": "example.com/engine"}"#).unwrap();
    r.set_endpoints(&specs(&[
        &[("example.com/engine", "trtllm-serve")],
        &[("llm-d.ai/engine-type", "sglang")],
    ]));
    // The second endpoint's label is not the configured key: the built-in default (vLLM).
    assert_eq!(engines(&r), vec![Engine::Trtllm, Engine::Vllm]);
}

#[test]
fn an_unknown_default_engine_is_refused_by_name() {
    let e = Router::from_json(r#"{"defaultEngine": "triton"}"#)
        .err()
        .unwrap();
    assert!(
        e.0.contains("defaultEngine") && e.0.contains("triton"),
        "{e}"
    );
}

#[test]
fn without_a_metrics_source_no_scraper_runs() {
    let r = Router::from_json(r#"{"scrapeMetrics": false}"#).unwrap();
    r.start_scraper().unwrap();
    assert!(r.scraper.lock().is_empty());
    let on = Router::from_json(r#"{"metricsIntervalMs": 1000}"#).unwrap();
    on.start_scraper().unwrap();
    assert!(on.scraper.lock().len() == 1);
    on.stop_scraper();
}
