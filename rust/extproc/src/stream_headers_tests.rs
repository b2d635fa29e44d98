//! What a decision adds to the ext_proc answers: its request headers (stage peers, data-parallel
//! rank), the primary profile's scores in envoy.lb metadata, the session token on the response,
//! and request headers read only when a plugin reads them.

use std::collections::HashMap;
use std::sync::Arc;

use sluicegate_core::datalayer::EndpointSpec;
use sluicegate_core::scheduling::{session_token, Router};

use super::tests::{chat_request, header, response_headers_msg, run, A, B, BODY};
use super::*;
use crate::pb::processing_response::Response;

fn router(config: serde_json::Value) -> Arc<Router> {
    let r = Router::from_json(&config.to_string()).unwrap();
    r.set_endpoints(&[A, B].map(|a| EndpointSpec {
        name: format!("pod-{a}"),
        address: a.into(),
        labels: vec![],
    }));
    Arc::new(r)
}

/// The header mutation of a headers answer (none when it mutates nothing).
fn mutation(r: &ProcessingResponse) -> Option<&crate::pb::HeaderMutation> {
    let (Some(Response::RequestHeaders(h)) | Some(Response::ResponseHeaders(h))) = &r.response
    else {
        panic!("not a headers answer: {r:?}")
    };
    h.response.as_ref()?.header_mutation.as_ref()
}

fn set_headers(r: &ProcessingResponse) -> HashMap<String, String> {
    mutation(r)
        .iter()
        .flat_map(|m| m.set_headers.iter())
        .filter_map(|o| o.header.as_ref())
        .map(|h| (h.key.clone(), header_text(h)))
        .collect()
}

fn lb_field<'r>(r: &'r ProcessingResponse, key: &str) -> Option<&'r value::Kind> {
    let md = r.dynamic_metadata.as_ref()?;
    let Some(value::Kind::StructValue(lb)) = &md.fields[protocol::DESTINATION_NAMESPACE].kind
    else {
        panic!("envoy.lb is not a struct")
    };
    lb.fields.get(key)?.kind.as_ref()
}

#[test]
fn the_session_token_pins_and_comes_back_on_the_response_with_the_scores() {
    let r = router(serde_json::json!({
        "emitEndpointScores": true,
        "plugins": [{"type": "queue-scorer"}, {"type": "session-affinity-scorer"}],
        "schedulingProfiles": [{"name": "p", "plugins": [
            {"pluginRef": "queue-scorer"}, {"pluginRef": "session-affinity-scorer", "weight": 5}]}]
    }));
    let token = session_token(&format!("pod-{B}"));
    // skip_response: still answers the response phase, which carries the token.
    let mut s = RequestStream::new(r.clone(), true);
    let extra = vec![header(protocol::SESSION_TOKEN_HEADER, &token)];
    let out = run(
        &mut s,
        chat_request(body_mode::FULL_DUPLEX_STREAMED, extra, BODY),
    );
    assert_eq!(set_headers(&out[0])[protocol::DESTINATION_ENDPOINT], B);
    let Some(value::Kind::StructValue(scores)) =
        lb_field(&out[0], protocol::DESTINATION_ENDPOINT_SCORES)
    else {
        panic!("no scores struct")
    };
    let number = |a: &str| match scores.fields[a].kind {
        Some(value::Kind::NumberValue(n)) => n,
        ref other => panic!("{other:?}"),
    };
    // Neither endpoint has metrics yet (both stale): the filters leave both, queue-scorer 0 each.
    assert_eq!((number(A), number(B)), (0.0, 5.0));
    assert!(!s.finished());
    let out = run(&mut s, vec![response_headers_msg(Some(B))]);
    assert_eq!(set_headers(&out[0])[protocol::SESSION_TOKEN_HEADER], token);
}

#[test]
fn without_a_header_plugin_nothing_is_collected_and_no_scores_are_sent() {
    let r = router(serde_json::json!({"plugins": [{"type": "queue-scorer"}]}));
    let mut s = RequestStream::new(r.clone(), false);
    let extra = vec![header("x-session-id", "s1")];
    let out = run(
        &mut s,
        chat_request(body_mode::FULL_DUPLEX_STREAMED, extra, BODY),
    );
    assert!(s.headers.is_empty());
    assert!(lb_field(&out[0], protocol::DESTINATION_ENDPOINT_SCORES).is_none());
    let out = run(&mut s, vec![response_headers_msg(None)]);
    assert!(set_headers(&out[0]).is_empty());
}

#[test]
fn the_data_parallel_rank_goes_upstream_as_a_request_header() {
    let r = router(serde_json::json!({"plugins": [
        {"type": "data-parallel-profile-handler", "parameters": {"primaryPort": 9000}},
        {"type": "queue-scorer"}]}));
    let only = [B];
    let mut s = RequestStream::new(r.clone(), false);
    let req = chat_request(body_mode::BUFFERED, vec![], BODY);
    let mut msgs = req.into_iter();
    let head = super::tests::with_subset(msgs.next().unwrap(), super::tests::list(&only));
    let out = run(&mut s, std::iter::once(head).chain(msgs).collect());
    let Some(Response::RequestBody(b)) = &out.last().unwrap().response else {
        panic!("{out:?}")
    };
    let set: HashMap<String, String> = b
        .response
        .iter()
        .flat_map(|c| c.header_mutation.iter())
        .flat_map(|m| m.set_headers.iter())
        .filter_map(|o| o.header.as_ref())
        .map(|h| (h.key.clone(), header_text(h)))
        .collect();
    assert_eq!(set[protocol::DESTINATION_ENDPOINT], "10.0.0.2:9000");
    assert_eq!(set[protocol::DATA_PARALLEL_HEADER], B);
}

#[test]
fn a_request_flow_control_queued_is_routed_with_its_headers() {
    use std::task::{Context, Waker};
    use std::time::{Duration, Instant};

    use sluicegate_core::flowcontrol::FlowControlConfig;

    use crate::admission::Gate;

    let r = router(serde_json::json!({
        "plugins": [{"type": "queue-scorer"}, {"type": "session-affinity-filter"}],
        "schedulingProfiles": [{"name": "p", "plugins": [
            {"pluginRef": "session-affinity-filter"}, {"pluginRef": "queue-scorer"}]}]
    }));
    let one_at_a_time =
        r#"{"saturationDetector": {"type": "concurrency-detector", "maxConcurrency": 1}}"#;
    let config = FlowControlConfig::from_json(one_at_a_time).unwrap();
    let gate = Gate::start(r.clone(), config, true, Default::default()).unwrap();
    let gated = || RequestStream::new(r.clone(), false).with_gate(Some(gate.clone()));
    let mut first = gated();
    run(
        &mut first,
        chat_request(body_mode::FULL_DUPLEX_STREAMED, vec![], BODY),
    );
    let token = session_token(&format!("pod-{B}"));
    let mut second = gated();
    let extra = vec![header(protocol::SESSION_TOKEN_HEADER, &token)];
    let out = run(
        &mut second,
        chat_request(body_mode::FULL_DUPLEX_STREAMED, extra, BODY),
    );
    // Routed by the gate (at once or when its turn comes), from the request it was handed.
    let out = if second.waiting() {
        run(
            &mut first,
            vec![
                response_headers_msg(None),
                super::tests::body_msg(b"{}", true, true),
            ],
        );
        let mut out = Outbox::new();
        let mut cx = Context::from_waker(Waker::noop());
        let deadline = Instant::now() + Duration::from_secs(10);
        while second.poll_admission(&mut cx, &mut out).is_pending() {
            assert!(Instant::now() < deadline, "admission never decided");
            std::thread::sleep(Duration::from_millis(1)); // poll interval of this bounded wait
        }
        Vec::from(out)
    } else {
        out
    };
    assert_eq!(set_headers(&out[0])[protocol::DESTINATION_ENDPOINT], B);
}

fn removed_headers(r: &ProcessingResponse) -> Vec<String> {
    mutation(r).map_or_else(Vec::new, |m| m.remove_headers.clone())
}

/// A chat body whose prompt is `text` repeated to five 64-token blocks (4 bytes a token).
fn long_chat(text: &str) -> Vec<u8> {
    let prompt = text.repeat(1280 / text.len());
    serde_json::json!({"model": "m", "messages": [{"role": "user", "content": prompt}]})
        .to_string()
        .into_bytes()
}

#[test]
fn the_kv_cache_source_header_names_the_holder_and_an_inbound_one_is_stripped() {
    use sluicegate_core::datalayer::Engine;
    use sluicegate_core::scheduling::KV_CACHE_SOURCE_HEADER;
    let r = router(serde_json::json!({"plugins": [
        {"type": "approx-prefix-cache-producer", "parameters": {"autoTune": false}},
        {"type": "prefix-cache-scorer"},
        {"type": "queue-scorer"},
        {"type": "p2p-source-producer"}],
     "schedulingProfiles": [{"name": "default", "plugins": [
        {"pluginRef": "prefix-cache-scorer", "weight": 1},
        {"pluginRef": "queue-scorer", "weight": 3}]}]}));
    let load = |address: &str, waiting: u32| {
        let text = format!("vllm:num_requests_waiting {waiting}\nvllm:kv_cache_usage_perc 0.1\n");
        assert!(r.ingest_metrics(address, &text, Engine::Vllm));
    };
    load(A, 0);
    load(B, 0);
    let body = long_chat("the shared system prompt ");
    let forged = || vec![header(KV_CACHE_SOURCE_HEADER, "192.0.2.9:8000")];
    let mut s = RequestStream::new(r.clone(), true);
    let out = run(
        &mut s,
        chat_request(body_mode::FULL_DUPLEX_STREAMED, forged(), &body),
    );
    let holder = set_headers(&out[0])[protocol::DESTINATION_ENDPOINT].clone();
    // Nobody held the prompt: no source is named, and the forged one is removed.
    assert!(!set_headers(&out[0]).contains_key(KV_CACHE_SOURCE_HEADER));
    assert_eq!(removed_headers(&out[0]), [KV_CACHE_SOURCE_HEADER]);
    load(&holder, 10);
    let mut s = RequestStream::new(r.clone(), true);
    let out = run(
        &mut s,
        chat_request(body_mode::FULL_DUPLEX_STREAMED, forged(), &body),
    );
    let set = set_headers(&out[0]);
    assert_ne!(set[protocol::DESTINATION_ENDPOINT], holder);
    assert_eq!(set[KV_CACHE_SOURCE_HEADER], holder);
    assert!(removed_headers(&out[0]).is_empty());
}

#[test]
fn a_burst_of_streams_waits_for_its_window_and_each_prompt_lands_on_one_endpoint() {
    let r = router(serde_json::json!({"plugins": [
        {"type": "burst-prefix-cache-producer", "parameters": {"windowDurationMs": 1000}},
        {"type": "prefix-cache-scorer",
         "parameters": {"prefixMatchInfoProducerName": "burst-prefix-cache-producer"}},
        {"type": "max-score-picker"}]}));
    let bodies = [
        long_chat("rollout prompt one "),
        long_chat("rollout prompt two "),
    ];
    let mut streams: Vec<(usize, RequestStream)> = (0..6)
        .map(|i| {
            let mut s = RequestStream::new(r.clone(), true);
            let out = run(
                &mut s,
                chat_request(body_mode::FULL_DUPLEX_STREAMED, vec![], &bodies[i % 2]),
            );
            // Answered once the window seals, not before.
            assert!(s.waiting() && out.len() <= 1, "{out:?}");
            (i % 2, s)
        })
        .collect();
    let mut landed: [std::collections::BTreeSet<String>; 2] = Default::default();
    for (prompt, s) in &mut streams {
        let out = super::admission_tests::settle(s);
        let routed = out.iter().find(|o| {
            matches!(&o.response, Some(Response::RequestHeaders(_)))
                && set_headers(o).contains_key(protocol::DESTINATION_ENDPOINT)
        });
        let routed = routed.unwrap_or_else(|| panic!("not routed: {out:?}"));
        landed[*prompt].insert(set_headers(routed)[protocol::DESTINATION_ENDPOINT].clone());
    }
    assert_eq!(landed[0].len(), 1, "{landed:?}");
    assert_eq!(landed[1].len(), 1, "{landed:?}");
    assert_ne!(landed[0], landed[1]);
}
