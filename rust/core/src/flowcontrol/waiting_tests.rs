//! Requests that wait for their own candidates: a subset hint naming no endpoint of a non-empty
//! pool, and a request whose TTL is its scale-from-zero grace period.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

/// Requests name the endpoint they need (None = any); `no_ttl_cut` requests carry their own
/// wait for endpoints.
#[derive(Default)]
struct Named {
    up: Mutex<HashSet<String>>,
}

type Req = (Option<String>, bool);

impl Dispatcher for Named {
    type Request = Req;
    type Output = Option<String>;
    fn dispatch(&self, r: &Req) -> Dispatch<Option<String>> {
        if self.no_candidates(r) {
            Dispatch::NoCandidates
        } else {
            Dispatch::Done(r.0.clone())
        }
    }
    fn pool_empty(&self) -> bool {
        self.up.lock().unwrap().is_empty()
    }
    fn no_candidates(&self, r: &Req) -> bool {
        let up = self.up.lock().unwrap();
        up.is_empty() || r.0.as_ref().is_some_and(|n| !up.contains(n))
    }
    fn no_endpoint_ttl_applies(&self, r: &Req) -> bool {
        !r.1
    }
}

type Seen = Arc<Mutex<Vec<(u64, Result<Option<String>, Rejection>)>>>;

fn start(
    json: &str,
    up: &[&str],
) -> (
    FlowController<Named, impl CompletionSink<Option<String>>>,
    Seen,
) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let sink = move |b: &mut Vec<Completion<Option<String>>>| {
        s.lock().unwrap().extend(b.drain(..).map(|c| {
            let outcome = match c.outcome {
                Outcome::Dispatched(o) => Ok(o),
                Outcome::Rejected(r) => Err(r),
            };
            (c.id, outcome)
        }))
    };
    let named = Named::default();
    named
        .up
        .lock()
        .unwrap()
        .extend(up.iter().map(|s| s.to_string()));
    let detector = SaturationDetector::Concurrency {
        store: None,
        max_concurrency: u64::MAX,
    };
    let config = FlowControlConfig::from_json(json).unwrap();
    (
        FlowController::start(config, detector, named, sink).unwrap(),
        seen,
    )
}

fn outcome_of(seen: &Seen, id: u64) -> Result<Option<String>, Rejection> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some((_, o)) = seen.lock().unwrap().iter().find(|(i, _)| *i == id) {
            return o.clone();
        }
        assert!(Instant::now() < deadline, "no outcome for {id}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn admission(ttl_ms: Option<u64>) -> Admission<'static> {
    Admission {
        flow: "f",
        ttl: ttl_ms.map(Duration::from_millis),
        ..Default::default()
    }
}

#[test]
fn a_request_for_an_absent_subset_waits_without_holding_up_the_others() {
    let (fc, seen) = start("{}", &["a"]);
    let waiting = fc
        .enqueue(&admission(None), (Some("b".into()), false))
        .unwrap();
    let other = fc
        .enqueue(&admission(None), (Some("a".into()), false))
        .unwrap();
    assert_eq!(outcome_of(&seen, other.id), Ok(Some("a".into())));
    assert!(waiting.is_queued());
    fc.dispatcher().up.lock().unwrap().insert("b".into());
    fc.notify();
    assert_eq!(outcome_of(&seen, waiting.id), Ok(Some("b".into())));
}

#[test]
fn a_request_for_an_absent_subset_expires_as_no_endpoints() {
    let (fc, seen) = start(r#"{"noEndpointRequestTtlMs": 30}"#, &["a"]);
    let waiting = fc
        .enqueue(&admission(None), (Some("b".into()), false))
        .unwrap();
    assert_eq!(outcome_of(&seen, waiting.id), Err(Rejection::NoEndpoints));
    let timed = fc
        .enqueue(&admission(Some(30)), (Some("b".into()), true))
        .unwrap();
    assert_eq!(outcome_of(&seen, timed.id), Err(Rejection::NoEndpoints));
    assert_eq!(fc.stats().expired_no_endpoints, 2);
}

#[test]
fn a_request_with_its_own_wait_outlives_the_no_endpoint_ttl() {
    let (fc, seen) = start(r#"{"noEndpointRequestTtlMs": 10}"#, &[]);
    let cut = fc.enqueue(&admission(None), (None, false)).unwrap();
    let held = fc.enqueue(&admission(Some(60_000)), (None, true)).unwrap();
    assert_eq!(outcome_of(&seen, cut.id), Err(Rejection::NoEndpoints));
    assert!(
        held.is_queued(),
        "the grace period, not the no-endpoint TTL, ends it"
    );
    fc.dispatcher().up.lock().unwrap().insert("a".into());
    fc.notify();
    assert_eq!(outcome_of(&seen, held.id), Ok(None));
}
