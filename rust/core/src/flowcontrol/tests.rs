use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::datalayer::{EndpointSpec, EndpointStore, MetricsUpdate};

/// Dispatches `(flow, tag)` requests only while open; reports an empty pool when asked to.
struct Gate {
    open: AtomicBool,
    empty_pool: bool,
    /// Times a closed gate turned a request away.
    refusals: AtomicU64,
}

impl Gate {
    fn new(open: bool, empty_pool: bool) -> Self {
        Gate {
            open: AtomicBool::new(open),
            empty_pool,
            refusals: AtomicU64::new(0),
        }
    }

    /// Open once the dispatcher has certainly merged everything enqueued so far: two refusals
    /// after now means a whole cycle (merge, then dispatch) started after the last enqueue.
    fn open_when_settled(&self) {
        let start = self.refusals.load(Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.refusals.load(Ordering::SeqCst) < start + 2 {
            assert!(Instant::now() < deadline, "dispatcher never retried");
            std::thread::yield_now();
        }
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Dispatcher for Gate {
    type Request = (String, u32);
    type Output = (String, u32);
    fn dispatch(&self, r: &(String, u32)) -> Dispatch<(String, u32)> {
        if self.open.load(Ordering::Acquire) {
            Dispatch::Done(r.clone())
        } else {
            self.refusals.fetch_add(1, Ordering::SeqCst);
            Dispatch::NoCandidates
        }
    }
    fn pool_empty(&self) -> bool {
        self.empty_pool
    }
}

type Seen = Arc<Mutex<Vec<Seen1>>>;
type Seen1 = (u64, Result<(String, u32), Rejection>);

fn collector() -> (Seen, impl CompletionSink<(String, u32)>) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let sink = move |b: &mut Vec<Completion<(String, u32)>>| {
        let mut s = s.lock().unwrap();
        for c in b.drain(..) {
            s.push((
                c.id,
                match c.outcome {
                    Outcome::Dispatched(o) => Ok(o),
                    Outcome::Rejected(r) => Err(r),
                },
            ));
        }
    };
    (seen, sink)
}

fn unlimited() -> SaturationDetector {
    SaturationDetector::Concurrency {
        store: None,
        max_concurrency: u64::MAX,
    }
}

fn gated(
    config: FlowControlConfig,
    empty_pool: bool,
) -> (
    FlowController<Gate, impl CompletionSink<(String, u32)>>,
    Seen,
) {
    let (seen, sink) = collector();
    let gate = Gate::new(false, empty_pool);
    (
        FlowController::start(config, unlimited(), gate, sink).unwrap(),
        seen,
    )
}

fn wait_for(seen: &Seen, n: usize) -> Vec<Seen1> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.lock().unwrap().len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} outcomes",
            seen.lock().unwrap().len()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    seen.lock().unwrap().clone()
}

fn adm(flow: &str, priority: i32) -> Admission<'_> {
    Admission {
        flow,
        priority,
        size: 10,
        ..Default::default()
    }
}

fn config(json: &str) -> FlowControlConfig {
    FlowControlConfig::from_json(json).unwrap()
}

#[test]
fn every_enqueue_gets_exactly_one_outcome_under_concurrent_enqueue_cancel_dispatch() {
    let (seen, sink) = collector();
    let detector = SaturationDetector::Concurrency {
        store: None,
        max_concurrency: 4,
    };
    let fc = Arc::new(
        FlowController::start(config("{}"), detector, Gate::new(true, false), sink).unwrap(),
    );
    let outcomes: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let fc = fc.clone();
            let outcomes = outcomes.clone();
            std::thread::spawn(move || {
                let mut rejected = 0;
                for i in 0..5000u32 {
                    let flow = format!("f{}", i % 7);
                    match fc.enqueue(&adm(&flow, (i % 3) as i32), (flow.clone(), i)) {
                        Ok(item) if i % 3 == 0 && item.cancel() => {
                            *outcomes.lock().unwrap().entry(item.id).or_default() += 1;
                        }
                        Ok(_) => {}
                        Err(_) => rejected += 1,
                    }
                    let _ = p;
                }
                rejected
            })
        })
        .collect();
    // A releaser frees capacity as dispatches arrive, like finishing requests.
    let done = Arc::new(AtomicBool::new(false));
    let releaser = {
        let (fc, seen, done) = (fc.clone(), seen.clone(), done.clone());
        std::thread::spawn(move || {
            let mut released = 0;
            while !done.load(Ordering::Acquire) {
                let dispatched = seen.lock().unwrap().iter().filter(|s| s.1.is_ok()).count();
                while released < dispatched {
                    fc.release();
                    released += 1;
                }
                std::thread::yield_now();
            }
        })
    };
    let rejected: u32 = producers.into_iter().map(|h| h.join().unwrap()).sum();
    let stats_deadline = Instant::now() + Duration::from_secs(30);
    while fc.stats().queued_requests > 0 {
        assert!(
            Instant::now() < stats_deadline,
            "queue never drained: {:?}",
            fc.stats()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let cancelled = outcomes.lock().unwrap().len();
    let expected = 20_000 - rejected as usize - cancelled;
    let all = wait_for(&seen, expected);
    done.store(true, Ordering::Release);
    releaser.join().unwrap();
    let mut counts = outcomes.lock().unwrap().clone();
    for (id, _) in &all {
        *counts.entry(*id).or_default() += 1;
    }
    assert_eq!(counts.len(), 20_000 - rejected as usize);
    assert!(counts.values().all(|&n| n == 1), "an item had two outcomes");
    assert_eq!(all.len(), expected);
    let stats = fc.stats();
    assert_eq!(stats.dispatched as usize, expected);
    assert_eq!(stats.cancelled as usize, cancelled);
}

#[test]
fn higher_bands_are_served_strictly_first() {
    let (fc, seen) = gated(config("{}"), false);
    for i in 0..50 {
        fc.enqueue(&adm("low", -1), ("low".into(), i)).unwrap();
        fc.enqueue(&adm("mid", 0), ("mid".into(), i)).unwrap();
        fc.enqueue(&adm("high", 5), ("high".into(), i)).unwrap();
    }
    fc.dispatcher().open_when_settled();
    let order: Vec<String> = wait_for(&seen, 150)
        .into_iter()
        .map(|(_, o)| o.unwrap().0)
        .collect();
    let expected: Vec<String> = ["high", "mid", "low"]
        .iter()
        .flat_map(|f| std::iter::repeat_n(f.to_string(), 50))
        .collect();
    assert_eq!(order, expected);
}

#[test]
fn round_robin_gives_backlogged_flows_equal_shares() {
    let cfg = config(
        r#"{"defaultPriorityBand": {"fairnessPolicy": "round-robin-fairness-policy", "maxRequests": 0}}"#,
    );
    let (fc, seen) = gated(cfg, false);
    // Flows arrive in bursts of very different sizes; shares must not follow arrival.
    for (f, n) in [("a", 9000), ("b", 6000), ("c", 4000), ("d", 3000)] {
        for i in 0..n {
            fc.enqueue(&adm(f, 0), (f.into(), i)).unwrap();
        }
    }
    fc.dispatcher().open_when_settled();
    let first: Vec<_> = wait_for(&seen, 22_000).into_iter().take(10_000).collect();
    let mut share: HashMap<String, usize> = HashMap::new();
    for (_, o) in first {
        *share.entry(o.unwrap().0).or_default() += 1;
    }
    for f in ["a", "b", "c", "d"] {
        let n = share[f] as f64;
        assert!(
            (n - 2500.0).abs() <= 125.0,
            "flow {f} got {n} of 10000: {share:?}"
        );
    }
}

#[test]
fn strict_fairness_serves_the_oldest_head_across_flows() {
    let (fc, seen) = gated(config("{}"), false);
    let flows = ["x", "y", "x", "z", "y", "x"];
    for (i, f) in flows.iter().enumerate() {
        fc.enqueue(&adm(f, 0), (f.to_string(), i as u32)).unwrap();
    }
    fc.dispatcher().open_when_settled();
    let tags: Vec<u32> = wait_for(&seen, 6)
        .into_iter()
        .map(|(_, o)| o.unwrap().1)
        .collect();
    assert_eq!(tags, vec![0, 1, 2, 3, 4, 5]);
}

#[test]
fn strict_fairness_stays_in_arrival_order_over_many_flows_with_cancelled_heads() {
    let (fc, seen) = gated(config("{}"), false);
    let mut kept = Vec::new();
    for i in 0..600u32 {
        let flow = format!("tenant-{}", (i * 7) % 97);
        let item = fc.enqueue(&adm(&flow, 0), (flow.clone(), i)).unwrap();
        if i % 5 == 0 {
            assert!(item.cancel());
        } else {
            kept.push(i);
        }
    }
    fc.dispatcher().open_when_settled();
    let tags: Vec<u32> = wait_for(&seen, kept.len())
        .into_iter()
        .map(|(_, o)| o.unwrap().1)
        .collect();
    assert_eq!(tags, kept);
}

#[test]
fn edf_orders_a_flow_by_deadline() {
    let (fc, seen) = gated(
        config(r#"{"defaultPriorityBand": {"orderingPolicy": "edf-ordering-policy"}}"#),
        false,
    );
    for (i, ttl) in [40u64, 10, 30, 20, 50].iter().enumerate() {
        let a = Admission {
            ttl: Some(Duration::from_secs(*ttl)),
            ..adm("f", 0)
        };
        fc.enqueue(&a, ("f".into(), *ttl as u32)).unwrap();
        let _ = i;
    }
    fc.dispatcher().open_when_settled();
    let ttls: Vec<u32> = wait_for(&seen, 5)
        .into_iter()
        .map(|(_, o)| o.unwrap().1)
        .collect();
    assert_eq!(ttls, vec![10, 20, 30, 40, 50]);
}

#[test]
fn slo_deadline_ordering_uses_the_ttft_objective() {
    let (fc, seen) = gated(
        config(r#"{"defaultPriorityBand": {"orderingPolicy": "slo-deadline-ordering-policy"}}"#),
        false,
    );
    for slo in [300u64, 100, 200] {
        let a = Admission {
            slo_ttft: Some(Duration::from_millis(slo)),
            ..adm("f", 0)
        };
        fc.enqueue(&a, ("f".into(), slo as u32)).unwrap();
    }
    fc.dispatcher().open_when_settled();
    let slos: Vec<u32> = wait_for(&seen, 3)
        .into_iter()
        .map(|(_, o)| o.unwrap().1)
        .collect();
    assert_eq!(slos, vec![100, 200, 300]);
}

#[test]
fn a_request_past_its_ttl_expires_as_ttl_expired() {
    let (fc, seen) = gated(config("{}"), false);
    let a = Admission {
        ttl: Some(Duration::from_millis(20)),
        ..adm("f", 0)
    };
    let item = fc.enqueue(&a, ("f".into(), 0)).unwrap();
    assert_eq!(
        wait_for(&seen, 1),
        vec![(item.id, Err(Rejection::TtlExpired))]
    );
    assert_eq!(fc.stats().queued_requests, 0);
}

#[test]
fn while_the_pool_is_empty_requests_expire_after_the_no_endpoint_ttl() {
    let (fc, seen) = gated(config(r#"{"noEndpointRequestTtlMs": 20}"#), true);
    let item = fc.enqueue(&adm("f", 0), ("f".into(), 0)).unwrap();
    assert_eq!(
        wait_for(&seen, 1),
        vec![(item.id, Err(Rejection::NoEndpoints))]
    );
    assert_eq!(fc.stats().expired_no_endpoints, 1);
}

#[test]
fn a_full_band_rejects_at_enqueue() {
    let (fc, _seen) = gated(
        config(r#"{"priorityBands": [{"priority": 1, "maxRequests": 2}]}"#),
        false,
    );
    fc.enqueue(&adm("f", 1), ("f".into(), 0)).unwrap();
    fc.enqueue(&adm("f", 1), ("f".into(), 1)).unwrap();
    assert_eq!(
        fc.enqueue(&adm("f", 1), ("f".into(), 2)).err(),
        Some(Rejection::Capacity)
    );
    assert!(
        fc.enqueue(&adm("f", 0), ("f".into(), 3)).is_ok(),
        "other bands have their own room"
    );
}

#[test]
fn global_byte_capacity_spans_bands() {
    let (fc, _seen) = gated(config(r#"{"maxBytes": 25}"#), false);
    fc.enqueue(&adm("f", 1), ("f".into(), 0)).unwrap();
    fc.enqueue(&adm("f", 2), ("f".into(), 1)).unwrap();
    assert_eq!(
        fc.enqueue(&adm("f", 3), ("f".into(), 2)).err(),
        Some(Rejection::Capacity)
    );
}

#[test]
fn negative_priorities_take_the_negative_band_template() {
    let (fc, _seen) = gated(
        config(r#"{"defaultNegativePriorityBand": {"maxRequests": 1}}"#),
        false,
    );
    fc.enqueue(&adm("f", -1), ("f".into(), 0)).unwrap();
    assert_eq!(
        fc.enqueue(&adm("f", -1), ("f".into(), 1)).err(),
        Some(Rejection::Capacity)
    );
    assert!(
        fc.enqueue(&adm("f", -2), ("f".into(), 2)).is_ok(),
        "each negative priority gets its own band"
    );
    assert!(fc.enqueue(&adm("f", 0), ("f".into(), 3)).is_ok());
    assert!(fc.enqueue(&adm("f", 0), ("f".into(), 4)).is_ok());
}

#[test]
fn a_zero_default_ttl_means_no_expiry() {
    let c = config(r#"{"defaultRequestTtlMs": 0}"#);
    assert!(c.default_ttl() > Duration::from_secs(365 * 24 * 3600));
    let (fc, seen) = gated(c, false);
    fc.enqueue(&adm("f", 0), ("f".into(), 0)).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert!(seen.lock().unwrap().is_empty());
    assert_eq!(fc.stats().queued_requests, 1);
}

#[test]
fn a_cancelled_request_leaves_at_once_and_gets_no_other_outcome() {
    let (fc, seen) = gated(config("{}"), false);
    let a = fc.enqueue(&adm("f", 0), ("f".into(), 0)).unwrap();
    let b = fc.enqueue(&adm("f", 0), ("f".into(), 1)).unwrap();
    assert!(a.cancel());
    assert!(!a.cancel());
    assert_eq!(fc.stats().queued_requests, 1);
    fc.dispatcher().open_when_settled();
    assert_eq!(wait_for(&seen, 1), vec![(b.id, Ok(("f".into(), 1)))]);
}

#[test]
fn requests_handed_back_to_a_producer_that_goes_quiet_are_still_freed() {
    // The dispatcher hands the requests it is done with to the inbox shard of a producer, for
    // it to drop on its next enqueue; one that never comes back must not keep them alive.
    let (fc, seen) = gated(config("{}"), false);
    fc.dispatcher().open.store(true, Ordering::SeqCst);
    const N: u32 = 3000;
    let held: Vec<std::sync::Weak<Item<(String, u32)>>> = std::thread::scope(|s| {
        s.spawn(|| {
            (0..N)
                .map(|i| {
                    if i % 50 == 0 {
                        // Let merges happen while the producer is still here (hand-backs).
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    Arc::downgrade(&fc.enqueue(&adm("f", 0), ("f".into(), i)).unwrap())
                })
                .collect()
        })
        .join()
        .unwrap()
    });
    assert_eq!(wait_for(&seen, N as usize).len(), N as usize);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let alive = held.iter().filter(|w| w.strong_count() > 0).count();
        if alive == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{alive} finished requests still held"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn shutdown_evicts_queued_requests() {
    let (fc, seen) = gated(config("{}"), false);
    let a = fc.enqueue(&adm("f", 0), ("f".into(), 0)).unwrap();
    fc.shutdown();
    assert_eq!(
        wait_for(&seen, 1),
        vec![(a.id, Err(Rejection::ShuttingDown))]
    );
    assert_eq!(
        fc.enqueue(&adm("f", 0), ("f".into(), 1)).err(),
        Some(Rejection::ShuttingDown)
    );
}

#[test]
fn dispatch_now_goes_at_once_only_when_nothing_waits_and_there_is_room() {
    let (seen, sink) = collector();
    let detector = SaturationDetector::Concurrency {
        store: None,
        max_concurrency: 1,
    };
    let fc = FlowController::start(config("{}"), detector, Gate::new(true, false), sink).unwrap();
    let r = ("f".to_string(), 0);
    assert_eq!(fc.dispatch_now(&adm("f", 0), &r), Some(r.clone()));
    assert_eq!(
        fc.dispatch_now(&adm("f", 5), &r),
        None,
        "the one place is taken"
    );
    let queued = fc.enqueue(&adm("f", 0), ("f".into(), 1)).unwrap();
    fc.release();
    assert_eq!(wait_for(&seen, 1)[0].0, queued.id);
    fc.release();
    let s = fc.stats();
    assert_eq!((s.enqueued, s.dispatched, s.in_flight), (2, 2, 0));
}

#[test]
fn concurrency_limit_holds_requests_until_release() {
    let (seen, sink) = collector();
    let detector = SaturationDetector::Concurrency {
        store: None,
        max_concurrency: 2,
    };
    let fc = FlowController::start(config("{}"), detector, Gate::new(true, false), sink).unwrap();
    for i in 0..3 {
        fc.enqueue(&adm("f", 0), ("f".into(), i)).unwrap();
    }
    wait_for(&seen, 2);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "third must wait for a release"
    );
    fc.release();
    wait_for(&seen, 3);
}

#[test]
fn holdback_stops_a_lower_band_that_a_higher_one_would_pass() {
    let cfg = config(
        r#"{"usageLimitPolicy": {"type": "priority-holdback-policy", "maxCeiling": 1.0, "minCeiling": 0.5}}"#,
    );
    let (seen, sink) = collector();
    let detector = SaturationDetector::Concurrency {
        store: None,
        max_concurrency: 4,
    };
    let fc = FlowController::start(cfg, detector, Gate::new(true, false), sink).unwrap();
    fc.enqueue(&adm("hi", 1), ("hi".into(), 0)).unwrap(); // provisions both bands
    fc.enqueue(&adm("lo", 0), ("lo".into(), 0)).unwrap();
    wait_for(&seen, 2);
    // in flight 2 of 4 = 0.5: the low band (ceiling 0.5) must now hold, the high one (1.0) not.
    fc.enqueue(&adm("lo", 0), ("lo".into(), 1)).unwrap();
    fc.enqueue(&adm("hi", 1), ("hi".into(), 1)).unwrap();
    wait_for(&seen, 3);
    std::thread::sleep(Duration::from_millis(20));
    let got: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.1.clone().unwrap())
        .collect();
    assert_eq!(got.len(), 3);
    assert_eq!(got[2], ("hi".into(), 1));
}

fn store_with(metrics: &[Option<(u32, f64)>]) -> Arc<EndpointStore> {
    let store = Arc::new(EndpointStore::default());
    let specs: Vec<_> = (0..metrics.len())
        .map(|i| EndpointSpec {
            name: format!("e{i}"),
            address: format!("10.0.0.{i}:8000"),
            labels: vec![],
        })
        .collect();
    store.set_endpoints(&specs);
    for (i, m) in metrics.iter().enumerate() {
        if let Some((waiting, kv)) = m {
            let u = MetricsUpdate {
                waiting: Some(*waiting),
                kv_usage: Some(*kv),
                ..Default::default()
            };
            store.ingest(&format!("10.0.0.{i}:8000"), &u, Instant::now());
        }
    }
    store
}

fn util(store: Arc<EndpointStore>) -> f64 {
    let cfg = SaturationConfig::default();
    SaturationDetector::from_config(&cfg, Some(store))
        .unwrap()
        .saturation(Instant::now(), 0)
}

#[test]
fn utilization_is_the_mean_of_per_endpoint_maxima() {
    // e0: max(5/5, 0.4/0.8) = 1.0 ; e1: max(0/5, 0.4/0.8) = 0.5
    assert!((util(store_with(&[Some((5, 0.4)), Some((0, 0.4))])) - 0.75).abs() < 1e-9);
}

#[test]
fn endpoints_without_metrics_count_as_saturated() {
    assert!((util(store_with(&[None, Some((0, 0.0))])) - 0.5).abs() < 1e-9);
}

#[test]
fn an_empty_pool_is_saturated() {
    assert_eq!(util(store_with(&[])), 1.0);
}

#[test]
fn unknown_config_fields_are_errors_naming_them() {
    let e = FlowControlConfig::from_json(r#"{"maxRequest": 1}"#).unwrap_err();
    assert!(e.to_string().contains("maxRequest"), "{e}");
    let e = FlowControlConfig::from_json(r#"{"defaultPriorityBand": {"fairnessPolicy": "nope"}}"#)
        .unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
}

#[test]
fn soft_reflective_ceiling_lets_a_gated_band_through_without_a_release_and_stops_it_when_full() {
    let cfg = config(r#"{"usageLimitPolicy": {"type": "soft-reflective-ceiling-policy"}}"#);
    let (seen, sink) = collector();
    let detector = SaturationDetector::Concurrency {
        store: None,
        max_concurrency: 4,
    };
    let fc = FlowController::start(cfg, detector, Gate::new(true, false), sink).unwrap();
    for i in 0..3 {
        fc.enqueue(&adm("hi", 1), ("hi".into(), i)).unwrap();
    }
    wait_for(&seen, 3);
    // 3 of 4 in flight: saturation 0.75, past the low band's reflection (0.25), so it is open
    // one dispatch cycle in three; it goes although nothing is released.
    fc.enqueue(&adm("lo", 0), ("lo".into(), 0)).unwrap();
    wait_for(&seen, 4);
    // Now 4 of 4: saturation 1.0 closes every band below the top one for good.
    fc.enqueue(&adm("lo", 0), ("lo".into(), 1)).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(
        seen.lock().unwrap().len(),
        4,
        "the low band must wait at saturation 1.0"
    );
    fc.release();
    wait_for(&seen, 5);
}

#[test]
fn program_aware_fairness_serves_the_least_served_program_first_under_contention() {
    let cfg = config(
        r#"{"defaultPriorityBand": {"fairnessPolicy": "program-aware-fairness"},
            "programAware": {"lasWeightService": 1.0, "lasWeightHeadWait": 0.0}}"#,
    );
    let (seen, sink) = collector();
    let gate = Gate::new(false, false);
    let fc = FlowController::start(cfg, unlimited(), gate, sink).unwrap();
    // "heavy" has used far more tokens than "light" (responses' usage).
    fc.completed("heavy", 4000, 2000);
    fc.completed("light", 10, 10);
    // heavy's requests arrive first and all wait behind the closed gate.
    for i in 0..3 {
        fc.enqueue(&adm("heavy", 0), ("heavy".into(), i)).unwrap();
    }
    for i in 0..3 {
        fc.enqueue(&adm("light", 0), ("light".into(), i)).unwrap();
    }
    fc.dispatcher().open_when_settled();
    let got: Vec<String> = wait_for(&seen, 6)
        .into_iter()
        .map(|s| s.1.unwrap().0)
        .collect();
    // Service only changes on completion: light stays least served until none of it is left.
    assert_eq!(got, ["light", "light", "light", "heavy", "heavy", "heavy"]);
}

#[test]
fn holdback_ranks_a_band_among_the_configured_ones_before_any_arrives() {
    let cfg = config(
        r#"{"usageLimitPolicy": {"type": "priority-holdback-policy", "minCeiling": 0.5},
            "priorityBands": [{"priority": 1}, {"priority": -1}]}"#,
    );
    let (seen, sink) = collector();
    let detector = SaturationDetector::Concurrency {
        store: None,
        max_concurrency: 2,
    };
    let fc = FlowController::start(cfg, detector, Gate::new(true, false), sink).unwrap();
    // Fast path, nothing provisioned yet: priority -1 is still the lowest of two configured
    // bands, ceiling 0.5; saturation 0 passes, 0.5 does not.
    assert!(fc.dispatch_now(&adm("lo", -1), &("lo".into(), 0)).is_some());
    assert!(fc.dispatch_now(&adm("lo", -1), &("lo".into(), 1)).is_none());
    assert!(fc.dispatch_now(&adm("hi", 1), &("hi".into(), 0)).is_some());
    assert!(seen.lock().unwrap().is_empty());
}
