//! The stream with flow control in front of routing: dispatched at once when there is room,
//! else queued and answered when its turn comes; a stream that goes away while queued leaves
//! its queue; shutdown answers queued requests 503; the gate off sheds sheddable requests.

use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use sluicegate_core::admission::Objectives;
use sluicegate_core::flowcontrol::FlowControlConfig;

use super::tests::*;
use super::*;
use crate::admission::Gate;

fn gate(r: &Arc<sluicegate_core::scheduling::Router>, json: &str, queueing: bool) -> Arc<Gate> {
    let config = FlowControlConfig::from_json(json).unwrap();
    Gate::start(r.clone(), config, queueing, Default::default()).unwrap()
}

const ONE_AT_A_TIME: &str =
    r#"{"saturationDetector": {"type": "concurrency-detector", "maxConcurrency": 1}}"#;
const ROOMY: &str =
    r#"{"saturationDetector": {"type": "concurrency-detector", "maxConcurrency": 100}}"#;

fn gated(r: &Arc<sluicegate_core::scheduling::Router>, g: &Arc<Gate>) -> RequestStream {
    RequestStream::new(r.clone(), false).with_gate(Some(g.clone()))
}

/// Poll the admission until it is decided (bounded), returning the answers it queued.
pub(crate) fn settle(s: &mut RequestStream) -> Vec<ProcessingResponse> {
    let mut out = Outbox::new();
    let mut cx = Context::from_waker(Waker::noop());
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.poll_admission(&mut cx, &mut out).is_pending() {
        assert!(Instant::now() < deadline, "admission never decided");
        std::thread::sleep(Duration::from_millis(1));
    }
    out.into()
}

fn end_response(s: &mut RequestStream) {
    run(
        s,
        vec![response_headers_msg(None), body_msg(b"{}", true, true)],
    );
}

#[test]
fn with_room_a_request_is_routed_at_once_and_frees_its_place_at_the_end() {
    let r = router(&[A]);
    let g = gate(&r, ONE_AT_A_TIME, true);
    let mut s = gated(&r, &g);
    let out = run(
        &mut s,
        chat_request(body_mode::FULL_DUPLEX_STREAMED, vec![], BODY),
    );
    assert!(!s.waiting());
    assert_eq!(destination(&out[0]), A);
    assert_eq!(g.stats().in_flight, 1);
    end_response(&mut s);
    assert_eq!((g.stats().in_flight, in_flight(&r)), (0, 0));
}

#[test]
fn a_queued_request_is_answered_when_the_one_ahead_finishes() {
    let r = router(&[A]);
    let g = gate(&r, ONE_AT_A_TIME, true);
    let mut first = gated(&r, &g);
    run(
        &mut first,
        chat_request(body_mode::FULL_DUPLEX_STREAMED, vec![], BODY),
    );
    let mut second = gated(&r, &g);
    let out = run(
        &mut second,
        chat_request(body_mode::FULL_DUPLEX_STREAMED, vec![], BODY),
    );
    assert!(out.is_empty() && second.waiting());
    assert_eq!(g.stats().queued_requests, 1);
    end_response(&mut first);
    let out = settle(&mut second);
    assert_eq!(destination(&out[0]), A);
    assert_eq!(streamed(&out).0.concat(), BODY);
    end_response(&mut second);
    drop((first, second));
    let stats = g.stats();
    assert_eq!(
        (stats.in_flight, stats.queued_requests, stats.dispatched),
        (0, 0, 2)
    );
    assert_eq!(in_flight(&r), 0);
}

#[test]
fn a_stream_that_goes_away_while_queued_leaves_its_queue() {
    let r = router(&[A]);
    let g = gate(&r, ONE_AT_A_TIME, true);
    let mut first = gated(&r, &g);
    run(
        &mut first,
        chat_request(body_mode::FULL_DUPLEX_STREAMED, vec![], BODY),
    );
    let mut second = gated(&r, &g);
    run(
        &mut second,
        chat_request(body_mode::FULL_DUPLEX_STREAMED, vec![], BODY),
    );
    drop(second); // Envoy reset the stream
    let stats = g.stats();
    assert_eq!((stats.cancelled, stats.queued_requests), (1, 0));
    end_response(&mut first);
    drop(first);
    assert_eq!((g.stats().in_flight, in_flight(&r)), (0, 0));
    let series = &r.stats().snapshot();
    assert_eq!(series.iter().map(|s| s.running).sum::<i64>(), 0);
}

#[test]
fn shutdown_answers_a_queued_request_503_shutting_down() {
    let r = router(&[A]);
    let g = gate(&r, ONE_AT_A_TIME, true);
    let mut first = gated(&r, &g);
    run(
        &mut first,
        chat_request(body_mode::FULL_DUPLEX_STREAMED, vec![], BODY),
    );
    let mut second = gated(&r, &g);
    run(
        &mut second,
        chat_request(body_mode::FULL_DUPLEX_STREAMED, vec![], BODY),
    );
    g.shutdown();
    let out = settle(&mut second);
    let (status, _, headers) = immediate_of(&out[0]);
    assert_eq!(status, 503);
    assert_eq!(headers[protocol::DROPPED_REASON], "rejected-shutting-down");
    assert!(second.finished());
}

#[test]
fn a_subset_with_no_endpoint_waits_and_goes_when_one_appears() {
    let r = router(&[A]);
    let g = gate(&r, ROOMY, true);
    let mut s = gated(&r, &g);
    let mut msgs = chat_request(body_mode::FULL_DUPLEX_STREAMED, vec![], BODY);
    msgs[0] = with_subset(msgs[0].clone(), list(&[B]));
    assert!(run(&mut s, msgs).is_empty() && s.waiting());
    r.set_endpoints(&[A, B].map(|a| sluicegate_core::datalayer::EndpointSpec {
        name: a.to_owned(),
        address: a.to_owned(),
        labels: vec![],
    }));
    g.notify();
    let out = settle(&mut s);
    assert_eq!(destination(&out[0]), B);
}

#[test]
fn the_objective_sets_the_priority_band() {
    let r = router(&[A]);
    r.set_objectives(Objectives::new([("critical".to_owned(), 5)]));
    let g = gate(&r, ONE_AT_A_TIME, true);
    let mut first = gated(&r, &g);
    run(
        &mut first,
        chat_request(body_mode::FULL_DUPLEX_STREAMED, vec![], BODY),
    );
    let mut s = gated(&r, &g);
    let critical = vec![header("x-llm-d-inference-objective", "critical")];
    run(
        &mut s,
        chat_request(body_mode::FULL_DUPLEX_STREAMED, critical, BODY),
    );
    assert_eq!(s.priority(), 5);
    assert_eq!(g.stats().bands, vec![(5, 1, BODY.len() as u64)]);
}

#[test]
fn gate_off_sheds_a_sheddable_request_while_saturated_and_routes_the_rest() {
    let r = router(&[]); // an empty pool counts as saturated
    r.set_objectives(Objectives::new([("batch".to_owned(), -1)]));
    let g = gate(&r, "{}", false);
    let mut shed = gated(&r, &g);
    let batch = vec![header("x-llm-d-inference-objective", "batch")];
    let out = run(
        &mut shed,
        chat_request(body_mode::FULL_DUPLEX_STREAMED, batch, BODY),
    );
    let (status, _, headers) = immediate_of(&out[0]);
    assert_eq!(
        (status, headers[protocol::DROPPED_REASON].as_str()),
        (429, "rejected-saturated")
    );
    let mut plain = gated(&r, &g);
    let out = run(
        &mut plain,
        chat_request(body_mode::FULL_DUPLEX_STREAMED, vec![], BODY),
    );
    assert_eq!(
        immediate_of(&out[0]).0,
        503,
        "not shed: routed, and the pool is empty"
    );
}

/// (outcome, count) of the queue-duration histograms, every flow and model together.
fn left_by_outcome(g: &Gate) -> Vec<(&'static str, u64)> {
    let mut out: Vec<(&'static str, u64)> = Vec::new();
    for s in g.queue_durations.snapshot() {
        match out.iter_mut().find(|(o, _)| *o == s.outcome) {
            Some((_, n)) => *n += s.duration.count(),
            None => out.push((s.outcome, s.duration.count())),
        }
    }
    out
}

#[test]
fn a_stream_gone_once_its_request_was_dispatched_counts_dispatched_everywhere() {
    let r = router(&[A]);
    let g = gate(&r, ONE_AT_A_TIME, true);
    let mut first = gated(&r, &g);
    run(
        &mut first,
        chat_request(body_mode::FULL_DUPLEX_STREAMED, vec![], BODY),
    );
    let mut second = gated(&r, &g);
    run(
        &mut second,
        chat_request(body_mode::FULL_DUPLEX_STREAMED, vec![], BODY),
    );
    // queued, labelled with its flow and the model its body names
    let (gauges, enqueued) = g.flow_metrics().snapshot();
    let held: Vec<_> = (gauges.iter())
        .map(|f| (f.fairness_id.as_str(), f.model.as_str(), f.requests))
        .collect();
    assert_eq!(held, vec![(protocol::DEFAULT_FAIRNESS_ID, "llama", 1)]);
    assert!(enqueued.len() <= 1, "one series");
    // its enqueue duration is observed when the dispatch thread takes it into its queue
    let deadline = Instant::now() + Duration::from_secs(10);
    while (g.flow_metrics().snapshot().1.iter()).all(|e| e.duration.count() == 0) {
        assert!(Instant::now() < deadline, "never taken into its queue");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(g.flow_metrics().snapshot().1[0].duration.count(), 1);
    end_response(&mut first);
    let deadline = Instant::now() + Duration::from_secs(10);
    while g.stats().dispatched < 2 {
        assert!(Instant::now() < deadline, "never dispatched");
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(second); // the client hangs up before its stream saw the outcome
    let stats = g.stats();
    assert_eq!(
        (stats.dispatched, stats.cancelled, stats.in_flight),
        (2, 0, 0)
    );
    assert_eq!(left_by_outcome(&g), vec![("Dispatched", 2)]);
    assert_eq!(g.queue_durations.totals(), vec![(0, "Dispatched", 2)]);
    assert_eq!(g.flow_metrics().snapshot().0[0].requests, 0);
}
