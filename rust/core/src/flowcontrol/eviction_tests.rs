//! The tracker and reclamation decisions on their own: victim filter and order, sizing, the
//! bound on victim priority, stop-and-wait pacing and timeouts.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

const GRACE: Duration = Duration::from_millis(10);

/// Tracks `priority`, recording its label in `revoked` when it is revoked.
fn track(
    ev: &Eviction,
    priority: i32,
    label: &'static str,
    revoked: &Arc<Mutex<Vec<&'static str>>>,
) -> u64 {
    let revoked = revoked.clone();
    ev.track(
        priority,
        Box::new(move || revoked.lock().unwrap().push(label)),
    )
}

#[test]
fn only_sheddable_requests_are_victims_lowest_priority_then_newest_first() {
    let ev = Eviction::new(GRACE, CONFIRMATION_TIMEOUT);
    let revoked = Arc::new(Mutex::new(Vec::new()));
    let mut tokens = Vec::new();
    for (priority, label) in [
        (-1, "a-1"),
        (-5, "b-5"),
        (0, "c0"),
        (-5, "d-5"),
        (-1, "e-1"),
    ] {
        tokens.push((label, track(&ev, priority, label, &revoked)));
    }
    let stats = ev.stats();
    assert_eq!((stats.tracked, stats.evictable), (5, 4));
    let mut now = Instant::now();
    let mut order = Vec::new();
    // One revocation per decision here (saturation at the ceiling: the boundary case), each
    // confirmed and its grace waited out before the next decision may run.
    for _ in 0..6 {
        let n = ev.on_blocked(now, 1.0, [(10, 1.0)]);
        let last = revoked.lock().unwrap().last().copied();
        if n == 0 {
            break;
        }
        let victim = last.unwrap();
        order.push(victim);
        let token = tokens.iter().find(|(l, _)| *l == victim).unwrap().1;
        ev.untrack(token, now);
        now += GRACE;
    }
    assert_eq!(
        order,
        ["d-5", "b-5", "e-1", "a-1"],
        "priority 0 is never a victim"
    );
    let stats = ev.stats();
    assert_eq!((stats.confirmed, stats.timed_out), (4, 0));
    assert_eq!(stats.issued, vec![(10, 4)]);
    assert_eq!(stats.confirmation.count(), 4);
}

#[test]
fn no_victim_at_or_above_the_waiting_band() {
    let ev = Eviction::new(GRACE, CONFIRMATION_TIMEOUT);
    let revoked = Arc::new(Mutex::new(Vec::new()));
    track(&ev, -3, "x", &revoked);
    let now = Instant::now();
    // Waiting band -3 (same priority: no same-band churn) and -4 (below): nothing revoked.
    assert_eq!(ev.on_blocked(now, 1.0, [(-3, 1.0), (-4, 1.0)]), 0);
    // A band whose ceiling is 0 never dispatches: no demand. Nor one below its ceiling.
    assert_eq!(ev.on_blocked(now, 1.0, [(5, 0.0), (4, 1.5)]), 0);
    // The next band down that is blocked and above the victim is the demand.
    assert_eq!(ev.on_blocked(now, 1.0, [(5, 0.0), (4, 1.5), (2, 0.5)]), 1);
    assert_eq!(*revoked.lock().unwrap(), ["x"]);
    assert_eq!(ev.stats().issued, vec![(2, 1)]);
}

#[test]
fn a_decision_sizes_by_the_deficit_capped_at_two_and_waits_for_confirmations() {
    let ev = Eviction::new(GRACE, CONFIRMATION_TIMEOUT);
    let revoked = Arc::new(Mutex::new(Vec::new()));
    let tokens: Vec<u64> = (0..4).map(|_| track(&ev, -1, "v", &revoked)).collect();
    let now = Instant::now();
    // Saturation 1.0 over 4 tracked: credit 0.25; ceiling 0.3 → deficit 0.7 → 3, capped at 2.
    assert_eq!(ev.on_blocked(now, 1.0, [(0, 0.3)]), 2);
    let stats = ev.stats();
    assert!(
        (stats.reclaim_target - 0.7).abs() < 1e-9,
        "{}",
        stats.reclaim_target
    );
    assert!(
        (stats.pending_reclaim - 0.5).abs() < 1e-9,
        "{}",
        stats.pending_reclaim
    );
    assert!(ev.busy());
    // Outstanding: the gate stays shut.
    assert_eq!(ev.on_blocked(now, 1.0, [(0, 0.3)]), 0);
    // Both victims' streams end (the newest two were revoked); cooling until the grace passes.
    ev.untrack(tokens[3], now);
    ev.untrack(tokens[2], now);
    assert_eq!(ev.on_blocked(now + GRACE / 2, 1.0, [(0, 0.3)]), 0);
    assert_eq!(ev.on_blocked(now + GRACE, 0.5, [(0, 0.3)]), 1);
    assert_eq!(ev.stats().confirmed, 2);
}

#[test]
fn an_unconfirmed_revocation_times_out_and_reopens_the_gate() {
    let timeout = Duration::from_millis(100);
    let ev = Eviction::new(GRACE, timeout);
    let revoked = Arc::new(Mutex::new(Vec::new()));
    track(&ev, -1, "older", &revoked);
    track(&ev, -1, "newer", &revoked);
    let now = Instant::now();
    assert_eq!(ev.on_blocked(now, 1.0, [(0, 1.0)]), 1);
    assert_eq!(ev.on_blocked(now + timeout / 2, 1.0, [(0, 1.0)]), 0);
    // Past the timeout it counts as timed out and cools; after the grace the next goes.
    assert_eq!(ev.on_blocked(now + timeout, 1.0, [(0, 1.0)]), 0);
    assert_eq!(ev.on_blocked(now + timeout + GRACE, 1.0, [(0, 1.0)]), 1);
    let stats = ev.stats();
    assert_eq!((stats.confirmed, stats.timed_out), (0, 1));
    assert_eq!(*revoked.lock().unwrap(), ["newer", "older"]);
}

#[test]
fn a_request_that_ends_before_revocation_is_no_victim() {
    let ev = Eviction::new(GRACE, CONFIRMATION_TIMEOUT);
    let revoked = Arc::new(Mutex::new(Vec::new()));
    let t = track(&ev, -1, "gone", &revoked);
    ev.untrack(t, Instant::now());
    assert_eq!(ev.on_blocked(Instant::now(), 1.0, [(0, 1.0)]), 0);
    assert!(revoked.lock().unwrap().is_empty());
    assert_eq!(ev.stats().confirmed, 0, "an ordinary end confirms nothing");
}

#[test]
fn a_blocked_controller_revokes_a_running_sheddable_request_for_a_waiting_higher_one() {
    use crate::flowcontrol::{
        Admission, Admit, FlowControlConfig, FlowController, SaturationDetector,
    };
    let config = FlowControlConfig::from_json(r#"{"enableEviction": true}"#).unwrap();
    let detector = SaturationDetector::Concurrency {
        store: None,
        max_concurrency: 1,
    };
    let done = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let done = done.clone();
        move |b: &mut Vec<crate::flowcontrol::Completion<()>>| {
            done.lock().unwrap().extend(b.drain(..).map(|c| c.id))
        }
    };
    let fc = FlowController::start(config, detector, Admit, sink).unwrap();
    let ev = fc.eviction().expect("enableEviction");
    assert_eq!(
        ev.grace(),
        LEADING_SENSOR_GRACE,
        "derived from the concurrency detector"
    );
    // A sheddable request takes the one place and runs.
    let batch = Admission {
        flow: "batch",
        priority: -1,
        size: 10,
        ..Default::default()
    };
    assert!(fc.dispatch_now(&batch, &()).is_some());
    let (tx, rx) = std::sync::mpsc::channel();
    let token = ev.track(-1, Box::new(move || tx.send(()).unwrap()));
    // A priority-0 request waits: the dispatcher revokes the running one.
    let premium = Admission {
        flow: "premium",
        priority: 0,
        size: 10,
        ..Default::default()
    };
    let item = fc.enqueue(&premium, ()).unwrap();
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the running request revoked");
    assert!(
        !done.lock().unwrap().contains(&item.id),
        "dispatched before the victim ended"
    );
    // Its stream ends (as the ext_proc server ends it): the waiting request goes.
    ev.untrack(token, Instant::now());
    fc.release();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done.lock().unwrap().contains(&item.id) {
        assert!(
            Instant::now() < deadline,
            "the waiting request was not dispatched"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let stats = fc.stats().eviction.unwrap();
    assert_eq!((stats.issued.clone(), stats.confirmed), (vec![(0, 1)], 1));
    fc.release();
}

#[test]
fn eviction_is_off_unless_enabled() {
    use crate::flowcontrol::FlowControlConfig;
    assert!(FlowControlConfig::default().eviction(true).is_none());
    let scraped = FlowControlConfig::from_json(r#"{"enableEviction": true}"#).unwrap();
    // The utilization detector: refresh (50 ms) + staleness (200 ms) + engine reclaim (250 ms).
    assert_eq!(
        scraped.eviction(false).unwrap().grace(),
        Duration::from_millis(500)
    );
    assert_eq!(
        scraped.eviction(true).unwrap().grace(),
        LEADING_SENSOR_GRACE
    );
    let e = FlowControlConfig::from_json(
        r#"{"enableEviction": true, "evictionConfirmationTimeoutMs": 0}"#,
    );
    assert!(e.unwrap_err().0.contains("evictionConfirmationTimeoutMs"));
}
