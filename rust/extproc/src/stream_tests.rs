//! The stream state machine message by message, over a real Router with real endpoints: what
//! is answered when, in every body mode, and that each request is released exactly once.

use std::collections::HashMap;
use std::sync::Arc;

use sluicegate_core::datalayer::EndpointSpec;
use sluicegate_core::scheduling::Router;

use super::*;
use crate::pb::body_mutation::Mutation;
use crate::pb::processing_response::Response;
use crate::pb::{
    CommonResponse, HeaderMap, HttpTrailers, ListValue, ProtocolConfiguration, Struct, Value,
};

pub(crate) const A: &str = "10.0.0.1:8000";
pub(crate) const B: &str = "10.0.0.2:8000";
const CHAT: &str = "/v1/chat/completions";
const MODELS: &str = "/v1/models";
pub(crate) const BODY: &[u8] = br#"{"model":"llama","messages":[{"role":"user","content":"hi"}]}"#;

pub(crate) fn router(addresses: &[&str]) -> Arc<Router> {
    let r = Router::from_json("{}").unwrap();
    let specs: Vec<EndpointSpec> = addresses
        .iter()
        .map(|a| EndpointSpec {
            name: a.to_string(),
            address: a.to_string(),
            labels: vec![],
        })
        .collect();
    r.set_endpoints(&specs);
    Arc::new(r)
}

pub(crate) fn in_flight(r: &Router) -> u32 {
    r.status().iter().map(|s| s.in_flight).sum()
}

fn stream(r: &Arc<Router>, skip_response: bool) -> RequestStream {
    RequestStream::new(r.clone(), skip_response)
}

/// A pool of one endpoint (A) and a fresh stream on it.
fn single_endpoint(skip_response: bool) -> (Arc<Router>, RequestStream) {
    let r = router(&[A]);
    let s = stream(&r, skip_response);
    (r, s)
}

/// A request with a body in one message: its headers, then the body with end_of_stream.
pub(crate) fn chat_request(
    mode: i32,
    extra: Vec<HeaderValue>,
    body: &[u8],
) -> Vec<ProcessingRequest> {
    vec![headers_msg(mode, false, extra), body_msg(body, true, false)]
}

pub(crate) fn header(key: &str, value: &str) -> HeaderValue {
    HeaderValue {
        key: key.to_owned(),
        value: String::new(),
        raw_value: Bytes::copy_from_slice(value.as_bytes()),
    }
}

fn headers_msg(mode: i32, end_of_stream: bool, extra: Vec<HeaderValue>) -> ProcessingRequest {
    // A request without a body is a GET of the model list; one with a body a chat completion.
    let (path, method) = if end_of_stream {
        (MODELS, "GET")
    } else {
        (CHAT, "POST")
    };
    let mut headers = vec![header(":path", path), header(":method", method)];
    headers.extend(extra);
    ProcessingRequest {
        request: Some(Request::RequestHeaders(HttpHeaders {
            headers: Some(HeaderMap { headers }),
            end_of_stream,
        })),
        metadata_context: None,
        protocol_config: Some(ProtocolConfiguration {
            request_body_mode: mode,
            response_body_mode: mode,
            send_body_without_waiting_for_header_response: false,
        }),
    }
}

pub(crate) fn with_subset(mut req: ProcessingRequest, hint: Value) -> ProcessingRequest {
    let fields = HashMap::from([(protocol::SUBSET_KEY.to_owned(), hint)]);
    req.metadata_context = Some(Metadata {
        filter_metadata: HashMap::from([(
            protocol::SUBSET_NAMESPACE.to_owned(),
            Struct { fields },
        )]),
    });
    req
}

pub(crate) fn list(items: &[&str]) -> Value {
    Value {
        kind: Some(value::Kind::ListValue(ListValue {
            values: items.iter().map(|s| Value::string(*s)).collect(),
        })),
    }
}

pub(crate) fn body_msg(data: &[u8], end_of_stream: bool, response: bool) -> ProcessingRequest {
    let body = HttpBody {
        body: Bytes::copy_from_slice(data),
        end_of_stream,
    };
    ProcessingRequest {
        request: Some(if response {
            Request::ResponseBody(body)
        } else {
            Request::RequestBody(body)
        }),
        ..Default::default()
    }
}

pub(crate) fn response_headers_msg(served: Option<&str>) -> ProcessingRequest {
    let metadata = served.map(|s| Metadata {
        filter_metadata: HashMap::from([(
            protocol::DESTINATION_NAMESPACE.to_owned(),
            Struct {
                fields: HashMap::from([(protocol::SERVED_ENDPOINT.to_owned(), Value::string(s))]),
            },
        )]),
    });
    ProcessingRequest {
        request: Some(Request::ResponseHeaders(HttpHeaders::default())),
        metadata_context: metadata,
        protocol_config: None,
    }
}

pub(crate) fn run(
    s: &mut RequestStream,
    messages: Vec<ProcessingRequest>,
) -> Vec<ProcessingResponse> {
    let mut out = Outbox::new();
    for m in messages {
        s.handle(m, &mut out);
    }
    out.into()
}

fn kind(r: &ProcessingResponse) -> &'static str {
    match &r.response {
        Some(Response::RequestHeaders(_)) => "request_headers",
        Some(Response::ResponseHeaders(_)) => "response_headers",
        Some(Response::RequestBody(_)) => "request_body",
        Some(Response::ResponseBody(_)) => "response_body",
        Some(Response::RequestTrailers(_)) => "request_trailers",
        Some(Response::ResponseTrailers(_)) => "response_trailers",
        Some(Response::ImmediateResponse(_)) => "immediate_response",
        None => "none",
    }
}

fn kinds(out: &[ProcessingResponse]) -> Vec<&'static str> {
    out.iter().map(kind).collect()
}

fn common(r: &ProcessingResponse) -> &CommonResponse {
    let common = match &r.response {
        Some(Response::RequestHeaders(h) | Response::ResponseHeaders(h)) => h.response.as_ref(),
        Some(Response::RequestBody(b) | Response::ResponseBody(b)) => b.response.as_ref(),
        _ => None,
    };
    common.expect("a common response")
}

fn set_headers(c: &CommonResponse) -> HashMap<String, String> {
    c.header_mutation
        .iter()
        .flat_map(|m| m.set_headers.iter())
        .filter_map(|o| o.header.as_ref())
        .map(|h| (h.key.clone(), header_text(h)))
        .collect()
}

pub(crate) fn destination(r: &ProcessingResponse) -> String {
    set_headers(common(r))[protocol::DESTINATION_ENDPOINT].clone()
}

/// The streamed_response chunks among `out`: (their bodies, the end_of_stream flags).
pub(crate) fn streamed(out: &[ProcessingResponse]) -> (Vec<Bytes>, Vec<bool>) {
    out.iter()
        .filter_map(|r| match &common(r).body_mutation.as_ref()?.mutation {
            Some(Mutation::StreamedResponse(s)) => Some((s.body.clone(), s.end_of_stream)),
            _ => None,
        })
        .unzip()
}

pub(crate) fn immediate_of(
    r: &ProcessingResponse,
) -> (i32, serde_json::Value, HashMap<String, String>) {
    let Some(Response::ImmediateResponse(i)) = &r.response else {
        panic!("not an immediate response: {r:?}")
    };
    let headers = i
        .headers
        .iter()
        .flat_map(|m| m.set_headers.iter())
        .filter_map(|o| o.header.as_ref())
        .map(|h| (h.key.clone(), header_text(h)))
        .collect();
    let body = serde_json::from_slice(&i.body).unwrap();
    (i.status.as_ref().unwrap().code, body, headers)
}

#[test]
fn full_duplex_answers_nothing_until_the_whole_body_then_routes_and_echoes_it_in_chunks() {
    let (r, mut s) = single_endpoint(false);
    let content = "x".repeat(150_000);
    let body =
        format!(r#"{{"model":"llama","messages":[{{"role":"user","content":"{content}"}}]}}"#)
            .into_bytes();
    let head = run(
        &mut s,
        vec![
            headers_msg(body_mode::FULL_DUPLEX_STREAMED, false, vec![]),
            body_msg(&body[..70_000], false, false),
        ],
    );
    assert!(head.is_empty());
    let out = run(&mut s, vec![body_msg(&body[70_000..], true, false)]);
    assert_eq!(
        kinds(&out),
        [
            "request_headers",
            "request_body",
            "request_body",
            "request_body"
        ]
    );
    let first = common(&out[0]);
    assert!(first.clear_route_cache);
    let set = set_headers(first);
    assert_eq!(set[protocol::DESTINATION_ENDPOINT], A);
    assert_eq!(set["content-length"], body.len().to_string());
    let md = out[0].dynamic_metadata.as_ref().unwrap();
    let Some(value::Kind::StructValue(lb)) = &md.fields[protocol::DESTINATION_NAMESPACE].kind
    else {
        panic!("envoy.lb is not a struct")
    };
    assert_eq!(lb.fields[protocol::DESTINATION_ENDPOINT].as_str(), A);
    let (chunks, eos) = streamed(&out[1..]);
    assert_eq!(chunks.concat(), body);
    assert!(chunks.iter().all(|c| c.len() <= protocol::BODY_CHUNK_BYTES));
    assert_eq!(eos, [false, false, true]);
    assert_eq!(in_flight(&r), 1);
}

#[test]
fn header_only_request_is_routed_on_the_headers_answer() {
    let (_r, mut s) = single_endpoint(false);
    let out = run(
        &mut s,
        vec![headers_msg(body_mode::FULL_DUPLEX_STREAMED, true, vec![])],
    );
    assert_eq!(kinds(&out), ["request_headers"]);
    assert_eq!(destination(&out[0]), A);
    assert!(!set_headers(common(&out[0])).contains_key("content-length"));
}

#[test]
fn buffered_mode_answers_headers_at_once_and_routes_on_the_body_answer() {
    let (_r, mut s) = single_endpoint(false);
    let out = run(&mut s, chat_request(body_mode::BUFFERED, vec![], BODY));
    assert_eq!(kinds(&out), ["request_headers", "request_body"]);
    assert!(out[0].dynamic_metadata.is_none() && common_or_none(&out[0]).is_none());
    assert_eq!(destination(&out[1]), A);
    assert!(out[1].dynamic_metadata.is_some());
    // Not rewritten: the body stays as the proxy holds it, no body mutation, no length.
    assert!(common(&out[1]).body_mutation.is_none());
    assert!(!set_headers(common(&out[1])).contains_key("content-length"));
}

fn common_or_none(r: &ProcessingResponse) -> Option<&CommonResponse> {
    match &r.response {
        Some(Response::RequestHeaders(h)) => h.response.as_ref(),
        _ => None,
    }
}

#[test]
fn buffered_rewrite_replaces_the_body_with_a_correct_length() {
    let (_r, mut s) = single_endpoint(false);
    let rewrite = vec![header("x-llm-d-model-name-rewrite", "lora-2")];
    let out = run(&mut s, chat_request(body_mode::BUFFERED, rewrite, BODY));
    let c = common(&out[1]);
    let Some(Mutation::Body(new_body)) = &c.body_mutation.as_ref().unwrap().mutation else {
        panic!("no body mutation")
    };
    let json: serde_json::Value = serde_json::from_slice(new_body).unwrap();
    assert_eq!(json["model"], "lora-2");
    assert_eq!(set_headers(c)["content-length"], new_body.len().to_string());
}

#[test]
fn streamed_mode_holds_each_chunk_and_answers_them_all_once_routed() {
    let (_r, mut s) = single_endpoint(false);
    let out = run(
        &mut s,
        vec![
            headers_msg(body_mode::STREAMED, false, vec![]),
            body_msg(&BODY[..10], false, false),
            body_msg(&BODY[10..20], false, false),
        ],
    );
    assert_eq!(kinds(&out), ["request_headers"]);
    let out = run(&mut s, vec![body_msg(&BODY[20..], true, false)]);
    assert_eq!(
        kinds(&out),
        ["request_body", "request_body", "request_body"]
    );
    assert!(out[0].response == responses::empty_request_body().response);
    assert_eq!(destination(&out[2]), A);
}

#[test]
fn streamed_rewrite_clears_the_held_chunks_and_sends_the_new_body() {
    let (_r, mut s) = single_endpoint(false);
    let rewrite = vec![header("x-gateway-model-name-rewrite", "lora-1")];
    let out = run(
        &mut s,
        vec![
            headers_msg(body_mode::STREAMED, false, rewrite),
            body_msg(&BODY[..10], false, false),
            body_msg(&BODY[10..], true, false),
        ],
    );
    assert_eq!(out[1], responses::cleared_request_body());
    let Some(Mutation::Body(new_body)) = &common(&out[2]).body_mutation.as_ref().unwrap().mutation
    else {
        panic!("no body mutation")
    };
    assert!(new_body.windows(8).any(|w| w == b"\"lora-1\""));
}

#[test]
fn trailers_after_a_body_without_end_of_stream_route_and_are_answered_last() {
    let (_r, mut s) = single_endpoint(false);
    let trailers = ProcessingRequest {
        request: Some(Request::RequestTrailers(HttpTrailers::default())),
        ..Default::default()
    };
    let out = run(
        &mut s,
        vec![
            headers_msg(body_mode::FULL_DUPLEX_STREAMED, false, vec![]),
            body_msg(BODY, false, false),
            trailers,
        ],
    );
    assert_eq!(
        kinds(&out),
        ["request_headers", "request_body", "request_trailers"]
    );
    let (chunks, eos) = streamed(&out[1..2]);
    assert_eq!((chunks.concat(), eos), (BODY.to_vec(), vec![false]));
}

#[test]
fn subset_hint_as_a_list_or_a_comma_string_restricts_the_candidates() {
    let r = router(&[A, B]);
    for hint in [list(&[B]), Value::string(format!(" {B} ,"))] {
        let mut s = stream(&r, false);
        let headers = with_subset(
            headers_msg(body_mode::FULL_DUPLEX_STREAMED, true, vec![]),
            hint,
        );
        let out = run(&mut s, vec![headers]);
        assert_eq!(destination(&out[0]), B);
    }
}

#[test]
fn empty_or_unmatched_subset_is_a_503_that_names_the_reason_and_finishes() {
    let r = router(&[A]);
    for hint in [list(&[]), list(&["10.9.9.9:1"]), Value::default()] {
        let mut s = stream(&r, false);
        let headers = with_subset(
            headers_msg(body_mode::FULL_DUPLEX_STREAMED, false, vec![]),
            hint,
        );
        let out = run(&mut s, vec![headers, body_msg(BODY, true, false)]);
        assert_eq!(kinds(&out), ["immediate_response"]);
        let (status, body, headers) = immediate_of(&out[0]);
        assert_eq!(status, 503);
        assert_eq!(headers[protocol::DROPPED_REASON], "rejected-no-endpoints");
        assert_eq!(body["error"]["code"], 503);
        assert!(s.finished());
    }
    assert_eq!(in_flight(&r), 0);
}

#[test]
fn a_bad_body_is_a_400_naming_the_problem_with_nothing_left_in_flight() {
    let (r, mut s) = single_endpoint(false);
    let out = run(
        &mut s,
        chat_request(body_mode::FULL_DUPLEX_STREAMED, vec![], b"{not json"),
    );
    let (status, body, headers) = immediate_of(&out[0]);
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("JSON"));
    assert_eq!(headers["content-type"], "application/json");
    assert!(!headers.contains_key(protocol::DROPPED_REASON));
    assert!(s.finished());
    assert_eq!(in_flight(&r), 0);
}

#[test]
fn a_message_with_no_request_kind_is_a_400() {
    let (_r, mut s) = single_endpoint(false);
    let out = run(&mut s, vec![ProcessingRequest::default()]);
    assert_eq!(immediate_of(&out[0]).0, 400);
    assert!(s.finished());
}

#[test]
fn response_chunks_are_echoed_and_the_request_released_once_at_end_of_stream() {
    let (r, mut s) = single_endpoint(false);
    let mut other = stream(&r, false);
    run(
        &mut other,
        vec![headers_msg(body_mode::FULL_DUPLEX_STREAMED, true, vec![])],
    );
    let out = run(
        &mut s,
        vec![
            headers_msg(body_mode::FULL_DUPLEX_STREAMED, false, vec![]),
            body_msg(BODY, true, false),
            response_headers_msg(Some(A)),
            body_msg(b"data: 1\n\n", false, true),
        ],
    );
    assert_eq!(s.served(), A);
    assert_eq!(out[2], responses::empty_response_headers());
    assert_eq!(in_flight(&r), 2);
    let out = run(&mut s, vec![body_msg(b"data: [DONE]\n\n", true, true)]);
    assert_eq!(
        streamed(&out),
        (vec![Bytes::from_static(b"data: [DONE]\n\n")], vec![true])
    );
    assert_eq!(in_flight(&r), 1);
    s.close();
    drop(s);
    assert_eq!(in_flight(&r), 1, "released again after end of stream");
    drop(other);
    assert_eq!(in_flight(&r), 0, "a stream dropped mid-request is released");
}

#[test]
fn model_rewrite_is_undone_in_the_response_and_its_length_dropped() {
    let (_r, mut s) = single_endpoint(true); // skip_response must not skip a response that needs rewriting
    let rewrite = vec![header("x-llm-d-model-name-rewrite", "lora-3")];
    let out = run(
        &mut s,
        vec![
            headers_msg(body_mode::FULL_DUPLEX_STREAMED, false, rewrite),
            body_msg(BODY, true, false),
            response_headers_msg(None),
            body_msg(br#"data: {"model": "lora-3","x":1}"#, true, true),
        ],
    );
    let (sent, _) = streamed(&out[1..2]);
    let json: serde_json::Value = serde_json::from_slice(&sent[0]).unwrap();
    assert_eq!(json["model"], "lora-3");
    assert_eq!(
        set_headers(common(&out[0]))["content-length"],
        sent[0].len().to_string()
    );
    let removed = &common(&out[2])
        .header_mutation
        .as_ref()
        .unwrap()
        .remove_headers;
    assert_eq!(removed, &["content-length"]);
    let (back, eos) = streamed(&out[3..]);
    assert_eq!(
        (back[0].as_ref(), eos[0]),
        (&br#"data: {"model": "llama","x":1}"#[..], true)
    );
    assert!(!s.finished());
}

#[test]
fn buffered_response_with_rewrite_is_replaced_whole_with_its_new_length() {
    let (_r, mut s) = single_endpoint(false);
    let rewrite = vec![header("x-llm-d-model-name-rewrite", "lora-3")];
    let out = run(
        &mut s,
        vec![
            headers_msg(body_mode::BUFFERED, false, rewrite),
            body_msg(BODY, true, false),
            body_msg(br#"{"model":"lora-3"}"#, true, true),
        ],
    );
    let c = common(&out[2]);
    let Some(Mutation::Body(back)) = &c.body_mutation.as_ref().unwrap().mutation else {
        panic!("no body mutation")
    };
    assert_eq!(back.as_ref(), br#"{"model":"llama"}"#);
    assert_eq!(set_headers(c)["content-length"], back.len().to_string());
}

#[test]
fn buffered_response_without_rewrite_gets_an_empty_answer() {
    let (_r, mut s) = single_endpoint(false);
    let out = run(
        &mut s,
        vec![
            headers_msg(body_mode::BUFFERED, false, vec![]),
            body_msg(BODY, true, false),
            body_msg(b"{}", true, true),
        ],
    );
    assert_eq!(out[2], responses::empty_response_body());
}

#[test]
fn skip_response_finishes_the_stream_after_routing_and_releases() {
    let (r, mut s) = single_endpoint(true);
    let out = run(
        &mut s,
        chat_request(body_mode::FULL_DUPLEX_STREAMED, vec![], BODY),
    );
    assert_eq!(kinds(&out), ["request_headers", "request_body"]);
    assert!(s.finished());
    assert_eq!(in_flight(&r), 0);
    drop(s);
    assert_eq!(in_flight(&r), 0);
}

#[test]
fn objective_fairness_and_a_value_only_header_are_read() {
    let (r, mut s) = single_endpoint(false);
    let old_style = HeaderValue {
        key: "x-gateway-inference-fairness-id".to_owned(),
        value: "tenant-a".to_owned(),
        raw_value: Bytes::new(),
    };
    let extra = vec![header("x-llm-d-inference-objective", "chat-hi"), old_style];
    run(
        &mut s,
        vec![headers_msg(body_mode::FULL_DUPLEX_STREAMED, false, extra)],
    );
    assert_eq!((s.objective(), s.fairness_id()), ("chat-hi", "tenant-a"));
    let mut plain = stream(&r, false);
    run(
        &mut plain,
        vec![headers_msg(body_mode::FULL_DUPLEX_STREAMED, false, vec![])],
    );
    assert_eq!(plain.fairness_id(), protocol::DEFAULT_FAIRNESS_ID);
}

#[test]
fn agent_identity_names_the_fairness_queue_unless_the_request_does() {
    let config = r#"{"plugins": [{"type": "agent-identity",
        "parameters": {"additionalSessionHeaders": ["x-my-agent"]}}, {"type": "queue-scorer"}]}"#;
    let r = Arc::new(Router::from_json(config).unwrap());
    let fairness = |extra: Vec<HeaderValue>| {
        let mut s = stream(&r, false);
        run(
            &mut s,
            vec![headers_msg(body_mode::FULL_DUPLEX_STREAMED, false, extra)],
        );
        s.fairness_id().to_owned()
    };
    let claude = header("x-claude-code-session-id", "cc-42");
    assert_eq!(fairness(vec![claude.clone()]), "cc-42");
    assert_eq!(
        fairness(vec![claude.clone(), header("x-my-agent", "mine")]),
        "mine"
    );
    let explicit = header("x-llm-d-inference-fairness-id", "tenant-a");
    assert_eq!(fairness(vec![claude, explicit]), "tenant-a");
    assert_eq!(fairness(vec![]), protocol::DEFAULT_FAIRNESS_ID);
    // Without the plugin, session headers mean nothing to flow control.
    let (_plain, mut s) = single_endpoint(false);
    let claude = header("x-claude-code-session-id", "cc-42");
    run(
        &mut s,
        vec![headers_msg(
            body_mode::FULL_DUPLEX_STREAMED,
            false,
            vec![claude],
        )],
    );
    assert_eq!(s.fairness_id(), protocol::DEFAULT_FAIRNESS_ID);
}

#[test]
fn the_served_verifier_reports_the_endpoint_the_proxy_says_served() {
    let config = r#"{"plugins": [{"type": "destination-endpoint-served-verifier"}, {"type": "queue-scorer"}]}"#;
    let r = Arc::new(Router::from_json(config).unwrap());
    r.set_endpoints(&[EndpointSpec {
        name: "a".into(),
        address: A.into(),
        labels: vec![],
    }]);
    let verdict = |served: Option<&str>| {
        let mut s = stream(&r, false);
        let out = run(
            &mut s,
            vec![
                headers_msg(body_mode::FULL_DUPLEX_STREAMED, false, vec![]),
                body_msg(BODY, true, false),
                response_headers_msg(served),
            ],
        );
        set_headers(common(&out[2])).remove("x-conformance-test-served-endpoint")
    };
    assert_eq!(verdict(Some(A)).as_deref(), Some(A));
    assert_eq!(
        verdict(None).as_deref(),
        Some("fail: missing envoy lb metadata")
    );
}

#[test]
fn no_endpoints_in_the_pool_is_a_503() {
    let r = router(&[]);
    let mut s = stream(&r, false);
    let out = run(
        &mut s,
        vec![headers_msg(body_mode::FULL_DUPLEX_STREAMED, true, vec![])],
    );
    assert_eq!(immediate_of(&out[0]).0, 503);
}

#[test]
fn a_request_is_counted_running_then_finished_once_with_its_sizes_and_usage() {
    let (r, mut s) = single_endpoint(false);
    let tenant = vec![header("x-llm-d-inference-fairness-id", "tenant-a")];
    run(
        &mut s,
        chat_request(body_mode::FULL_DUPLEX_STREAMED, tenant, BODY),
    );
    let series = r.stats().snapshot();
    assert_eq!(series.len(), 1);
    assert_eq!(
        (series[0].model.as_str(), series[0].target_model.as_str()),
        ("llama", "llama")
    );
    assert_eq!(
        (series[0].fairness_id.as_str(), series[0].running),
        ("tenant-a", 1)
    );
    let end = br#"data: {"usage":{"prompt_tokens":5,"completion_tokens":7}}"#;
    run(
        &mut s,
        vec![response_headers_msg(None), body_msg(end, true, true)],
    );
    drop(s);
    let series = &r.stats().snapshot()[0];
    assert_eq!((series.requests, series.running), (1, 0));
    assert!(series.errors.is_empty());
    assert_eq!(series.request_size.count(), 1);
    assert_eq!(series.response_size.count(), 1);
    assert_eq!(series.output_tokens.count(), 1);
    assert_eq!(series.ttft[0].count(), 1);
}

#[test]
fn a_rejected_request_is_counted_once_under_its_error_code() {
    let (r, mut s) = single_endpoint(false);
    run(
        &mut s,
        chat_request(body_mode::FULL_DUPLEX_STREAMED, vec![], b"{not json"),
    );
    s.close();
    drop(s);
    let series = r.stats().snapshot();
    assert_eq!(series.len(), 1);
    assert_eq!(series[0].requests, 1);
    assert_eq!(series[0].errors, vec![("BadRequest".to_owned(), 1)]);
    assert_eq!(series[0].running, 0);
}

#[test]
fn a_body_over_the_limit_is_a_413_as_soon_as_it_crosses_it() {
    let r = router(&[A]);
    let mut s = stream(&r, false).with_max_body_bytes(100);
    let mode = body_mode::FULL_DUPLEX_STREAMED;
    let out = run(
        &mut s,
        vec![
            headers_msg(mode, false, vec![]),
            body_msg(&[b' '; 60], false, false),
            body_msg(&[b' '; 60], false, false), // crosses 100: answered before the end of the body
        ],
    );
    assert_eq!(kinds(&out), ["immediate_response"]);
    let (status, body, _) = immediate_of(&out[0]);
    assert_eq!(status, 413);
    assert!(
        body.to_string().contains("max-request-body-bytes"),
        "{body}"
    );
    assert!(s.finished() && s.parts.is_empty());
    assert_eq!(in_flight(&r), 0);
}

#[test]
fn a_body_after_the_trailers_is_refused_not_routed_twice() {
    let r = router(&[A, B]);
    let mut s = stream(&r, false);
    let mode = body_mode::FULL_DUPLEX_STREAMED;
    let trailers = ProcessingRequest {
        request: Some(Request::RequestTrailers(HttpTrailers::default())),
        metadata_context: None,
        protocol_config: None,
    };
    let routed = run(
        &mut s,
        vec![
            headers_msg(mode, false, vec![]),
            body_msg(BODY, false, false),
            trailers,
        ],
    );
    assert_eq!(kind(&routed[0]), "request_headers");
    assert_eq!(in_flight(&r), 1);
    let out = run(&mut s, vec![body_msg(BODY, true, false)]);
    assert_eq!(immediate_of(out.last().unwrap()).0, 400);
    s.close();
    assert_eq!(in_flight(&r), 0);
}

#[test]
fn a_body_after_the_response_ended_is_refused_and_nothing_stays_running() {
    let r = router(&[A, B]);
    let mut s = stream(&r, false);
    let mut ended = response_headers_msg(None);
    if let Some(Request::ResponseHeaders(h)) = ended.request.as_mut() {
        h.end_of_stream = true;
    }
    run(&mut s, vec![ended]);
    let out = run(&mut s, vec![body_msg(BODY, true, false)]);
    assert_eq!(immediate_of(out.last().unwrap()).0, 400);
    s.close();
    assert_eq!(in_flight(&r), 0);
    let running: i64 = r.stats().snapshot().iter().map(|x| x.running).sum();
    assert_eq!(running, 0);
}

#[test]
fn a_503_for_a_subset_naming_no_member_is_counted_under_the_requests_model() {
    let r = router(&[A]);
    let mut s = stream(&r, false);
    let headers = with_subset(
        headers_msg(body_mode::FULL_DUPLEX_STREAMED, false, vec![]),
        list(&["10.9.9.9:1"]),
    );
    run(&mut s, vec![headers, body_msg(BODY, true, false)]);
    drop(s);
    let series = r.stats().snapshot();
    assert_eq!(
        (series[0].model.as_str(), series[0].target_model.as_str()),
        ("llama", "llama")
    );
    assert_eq!(series[0].errors, vec![("ServiceUnavailable".to_owned(), 1)]);
    // the request phase ended (refused); no response phase
    assert_eq!(r.stats().request_processing.snapshot().count(), 1);
    assert_eq!(r.stats().response_processing.snapshot().count(), 0);
}

#[test]
fn a_streamed_response_records_the_gaps_between_its_chunks_and_the_epps_time_on_it() {
    let (r, mut s) = single_endpoint(false);
    let streamed =
        br#"{"model":"llama","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    run(
        &mut s,
        chat_request(body_mode::FULL_DUPLEX_STREAMED, vec![], streamed),
    );
    assert_eq!(r.stats().request_processing.snapshot().count(), 1);
    let chunks = [
        &b"data: {\"choices\":[]}\n\n"[..],
        b"", // an empty chunk is no token: no gap
        b"data: {\"choices\":[]}\n\n",
        b"data: [DONE]\n\n",
    ];
    let mut msgs = vec![response_headers_msg(None)];
    msgs.extend((chunks.iter().enumerate()).map(|(i, c)| body_msg(c, i == chunks.len() - 1, true)));
    run(&mut s, msgs);
    drop(s);
    let series = &r.stats().snapshot()[0];
    assert_eq!(series.itl.count(), 2); // three chunks with bytes: two gaps
    assert!(series.itl.sum >= 0.0);
    assert_eq!(r.stats().response_processing.snapshot().count(), 1);
}

fn in_flight_tokens(r: &Router) -> u64 {
    r.status().iter().map(|s| s.in_flight_tokens).sum()
}

#[test]
fn prompt_tokens_are_held_until_the_first_response_byte_and_the_request_until_the_end() {
    let (r, mut s) = single_endpoint(false);
    run(
        &mut s,
        vec![
            headers_msg(body_mode::FULL_DUPLEX_STREAMED, false, vec![]),
            body_msg(BODY, true, false),
            response_headers_msg(Some(A)),
        ],
    );
    assert!(
        in_flight_tokens(&r) > 0,
        "the prompt is held while prefilling"
    );
    run(&mut s, vec![body_msg(b"data: 1\n\n", false, true)]);
    assert_eq!((in_flight_tokens(&r), in_flight(&r)), (0, 1));
    run(&mut s, vec![body_msg(b"data: [DONE]\n\n", true, true)]);
    assert_eq!((in_flight_tokens(&r), in_flight(&r)), (0, 0));
}

#[test]
fn a_stream_dropped_before_its_first_byte_gives_back_its_tokens() {
    let (r, mut s) = single_endpoint(false);
    run(
        &mut s,
        vec![
            headers_msg(body_mode::FULL_DUPLEX_STREAMED, false, vec![]),
            body_msg(BODY, true, false),
        ],
    );
    assert!(in_flight_tokens(&r) > 0);
    drop(s);
    assert_eq!((in_flight_tokens(&r), in_flight(&r)), (0, 0));
}

#[test]
fn the_attribute_reporter_sends_its_value_with_the_last_response_chunk() {
    let r = Router::from_json(
        r#"{"plugins": [{"type": "request-attribute-reporter", "parameters": {"attributes": [
            {"key": {"namespace": "envoy.lb", "name": "x-gateway-inference-request-cost"},
             "expression": "usage.prompt_tokens + usage.completion_tokens",
             "condition": "has(usage.completion_tokens)"}]}}]}"#,
    )
    .unwrap();
    r.set_endpoints(&[EndpointSpec {
        name: A.into(),
        address: A.into(),
        labels: vec![],
    }]);
    let r = Arc::new(r);
    let mut s = stream(&r, false);
    let out = run(
        &mut s,
        vec![
            headers_msg(body_mode::FULL_DUPLEX_STREAMED, false, vec![]),
            body_msg(BODY, true, false),
            response_headers_msg(Some(A)),
            body_msg(b"data: {\"choices\":[]}\n\n", false, true),
        ],
    );
    assert!(out.last().unwrap().dynamic_metadata.is_none());
    let last = br#"data: {"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":30}}

data: [DONE]

"#;
    let out = run(&mut s, vec![body_msg(last, true, true)]);
    let md = out.last().unwrap().dynamic_metadata.as_ref().unwrap();
    let Some(value::Kind::StructValue(lb)) = &md.fields["envoy.lb"].kind else {
        panic!("no envoy.lb struct: {md:?}")
    };
    assert_eq!(
        lb.fields["x-gateway-inference-request-cost"].kind,
        Some(value::Kind::NumberValue(42.0))
    );
}

/// One uncompressed gRPC frame around `message`.
fn grpc_frame(message: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

#[test]
fn a_grpc_request_is_routed_on_its_decoded_body_and_its_usage_read_from_response_frames() {
    let r = Arc::new(Router::from_json(r#"{"parsers": ["vllmgrpc-parser"]}"#).unwrap());
    r.set_endpoints(&[EndpointSpec {
        name: "a".into(),
        address: A.into(),
        labels: vec![],
    }]);
    let mut s = stream(&r, false);
    let path = vec![header(":path", "/vllm.grpc.engine.VllmEngine/Generate")];
    // GenerateRequest { text (3): "hi", stream (5): true }
    let body = grpc_frame(b"\x1a\x02hi\x28\x01");
    let out = run(
        &mut s,
        chat_request(body_mode::FULL_DUPLEX_STREAMED, path, &body),
    );
    assert_eq!(
        set_headers(common(&out[0]))[protocol::DESTINATION_ENDPOINT],
        A
    );
    // GenerateResponse { chunk (1) } then { complete (2) { prompt (3): 9, completion (4): 4 } },
    // the second frame split across two response chunks.
    let mut frames = grpc_frame(b"\x0a\x02\x08\x01");
    frames.extend(grpc_frame(b"\x12\x04\x18\x09\x20\x04"));
    let (first, second) = frames.split_at(frames.len() - 3);
    run(
        &mut s,
        vec![
            response_headers_msg(None),
            body_msg(first, false, true),
            body_msg(second, false, true),
            ProcessingRequest {
                request: Some(Request::ResponseTrailers(HttpTrailers::default())),
                ..Default::default()
            },
        ],
    );
    drop(s);
    let series = &r.stats().snapshot()[0];
    assert_eq!((series.requests, series.running), (1, 0));
    assert_eq!(series.input_tokens.count(), 1);
    assert_eq!(series.input_tokens.sum, 9.0);
    assert_eq!(series.output_tokens.sum, 4.0);
}

/// A Generate call on a one-endpoint pool reporting usage.prompt_tokens + completion_tokens as
/// envoy.lb/cost, in `mode`; returns the answers to its response headers and a body of a chunk and
/// the completion { prompt: 9, completion: 4 } without end of stream (a gRPC body never ends it).
fn reported_grpc_call(mode: i32) -> (RequestStream, Vec<ProcessingResponse>) {
    let r = Router::from_json(
        r#"{"parsers": ["vllmgrpc-parser"], "plugins": [{"type": "request-attribute-reporter", "parameters": {"attributes": [
            {"key": {"namespace": "envoy.lb", "name": "cost"},
             "expression": "usage.prompt_tokens + usage.completion_tokens"}]}}]}"#,
    )
    .unwrap();
    r.set_endpoints(&[EndpointSpec {
        name: "a".into(),
        address: A.into(),
        labels: vec![],
    }]);
    let r = Arc::new(r);
    let mut s = stream(&r, false);
    let path = vec![header(":path", "/vllm.grpc.engine.VllmEngine/Generate")];
    run(
        &mut s,
        chat_request(mode, path, &grpc_frame(b"\x1a\x02hi\x28\x01")),
    );
    let mut frames = grpc_frame(b"\x0a\x02\x08\x01");
    frames.extend(grpc_frame(b"\x12\x04\x18\x09\x20\x04"));
    let out = run(
        &mut s,
        vec![response_headers_msg(None), body_msg(&frames, false, true)],
    );
    (s, out)
}

fn reported_cost(md: &Struct) -> Option<value::Kind> {
    let Some(value::Kind::StructValue(lb)) = &md.fields["envoy.lb"].kind else {
        panic!("no envoy.lb struct: {md:?}")
    };
    lb.fields["cost"].kind.clone()
}

#[test]
fn the_attribute_reporter_sends_a_grpc_responses_value_with_its_trailers() {
    let (mut s, out) = reported_grpc_call(body_mode::FULL_DUPLEX_STREAMED);
    assert!(out.iter().all(|m| m.dynamic_metadata.is_none()));
    let out = run(
        &mut s,
        vec![ProcessingRequest {
            request: Some(Request::ResponseTrailers(HttpTrailers::default())),
            ..Default::default()
        }],
    );
    assert!(
        matches!(out[0].response, Some(Response::ResponseTrailers(_))),
        "{out:?}"
    );
    let md = out[0]
        .dynamic_metadata
        .as_ref()
        .expect("the reporter's value with the trailers");
    assert_eq!(reported_cost(md), Some(value::Kind::NumberValue(13.0)));
}

#[test]
fn in_buffered_mode_the_one_response_body_message_carries_the_reported_value() {
    // Envoy's BUFFERED mode skips trailers: a gRPC response's whole body comes in one message
    // without end of stream (trailers follow upstream), and nothing comes after it.
    let (_, out) = reported_grpc_call(body_mode::BUFFERED);
    let md = (out.last().and_then(|m| m.dynamic_metadata.as_ref()))
        .expect("the reporter's value with the body");
    assert_eq!(reported_cost(md), Some(value::Kind::NumberValue(13.0)));
}
