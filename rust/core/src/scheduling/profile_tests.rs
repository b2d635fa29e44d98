//! Filters, scorers and the profile over real snapshots built by the endpoint store.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::datalayer::{EndpointSpec, EndpointStore, MetricsUpdate, Snapshot};
use crate::scheduling::config::RouterConfig;
use crate::scheduling::contracts::scorer::{Picks, Scorer};
use crate::scheduling::cycle::{Cycle, ScheduleError};
use crate::scheduling::scheduler::Scheduler;
use crate::scheduling::scorers::active_request_scorer::ActiveRequestScorer;
use crate::scheduling::scorers::kv_cache_utilization_scorer::KvCacheUtilizationScorer;
use crate::scheduling::scorers::queue_scorer::{InFlight, QueueScorer};

const STALENESS: Duration = Duration::from_secs(2);

/// Endpoints 10.0.0.{1..} :8000 with (waiting, kv) each, scraped at `t0`; None = never scraped.
fn snapshot(t0: Instant, loads: &[Option<(u32, f64)>]) -> Arc<Snapshot> {
    let store = EndpointStore::default();
    let specs: Vec<EndpointSpec> = (0..loads.len())
        .map(|i| EndpointSpec {
            name: format!("ep{i}"),
            address: format!("10.0.0.{}:8000", i + 1),
            labels: vec![],
        })
        .collect();
    store.set_endpoints(&specs);
    for (spec, load) in specs.iter().zip(loads) {
        if let Some((waiting, kv)) = load {
            let u = MetricsUpdate {
                waiting: Some(*waiting),
                kv_usage: Some(*kv),
                ..Default::default()
            };
            store.ingest(&spec.address, &u, t0);
        }
    }
    store.snapshot()
}

fn cycle<'a>(snap: &'a Snapshot, now: Instant, subset: Option<&'a [String]>) -> Cycle<'a> {
    let mut c = Cycle::new(snap, now, STALENESS);
    c.subset = subset;
    c
}

fn scores(scorer: &dyn Scorer, c: &Cycle<'_>) -> Vec<f64> {
    let candidates: Vec<u32> = (0..c.snapshot.endpoints.len() as u32).collect();
    let mut out = vec![f64::NAN; candidates.len()];
    scorer.score(c, &candidates, &mut out);
    out
}

fn profile(json: &str) -> Scheduler {
    Scheduler::from_config(&RouterConfig::from_json(json).unwrap()).unwrap()
}

/// The default scorers with a max-score-picker naming `n` endpoints.
fn with_fallbacks(n: usize) -> String {
    format!(
        r#"{{"plugins": [{{"type": "queue-scorer"}}, {{"type": "kv-cache-utilization-scorer"}},
            {{"type": "max-score-picker", "parameters": {{"maxNumOfEndpoints": {n}}}}}]}}"#
    )
}

fn pick(p: &Scheduler, c: &Cycle<'_>) -> Result<Vec<String>, ScheduleError> {
    let mut picks = Picks::default();
    p.schedule(c, &mut picks)?;
    Ok(picks
        .primary
        .iter()
        .map(|&i| c.endpoint(i).address().to_owned())
        .collect())
}

const UPSTREAM_QUEUE: QueueScorer = QueueScorer {
    in_flight: InFlight::Never,
    free_slots: 0,
    weight: 1.0,
};

/// Requests sent since the scrape counted whole beyond `free_slots` (`inFlightWeight: 1`).
fn free_slots(free_slots: u32) -> QueueScorer {
    QueueScorer {
        free_slots,
        weight: 1.0,
        ..QueueScorer::default()
    }
}

#[test]
fn queue_scorer_normalises_min_to_one_and_max_to_zero() {
    let t = Instant::now();
    let snap = snapshot(t, &[Some((0, 0.0)), Some((5, 0.0)), Some((10, 0.0))]);
    for scorer in [QueueScorer::default(), free_slots(0), UPSTREAM_QUEUE] {
        assert_eq!(scores(&scorer, &cycle(&snap, t, None)), vec![1.0, 0.5, 0.0]);
    }
}

#[test]
fn queue_scorer_gives_all_equal_queues_one() {
    let t = Instant::now();
    let snap = snapshot(t, &[Some((4, 0.0)), Some((4, 0.0))]);
    assert_eq!(
        scores(&QueueScorer::default(), &cycle(&snap, t, None)),
        vec![1.0, 1.0]
    );
}

/// Scraped queues 2, 2, 0, 0 (none running); this EPP has since sent 6 to ep1, 1 to ep2 and
/// 3 to ep3.
fn sent_since_the_scrape(t: Instant) -> Arc<Snapshot> {
    let snap = snapshot(
        t,
        &[
            Some((2, 0.0)),
            Some((2, 0.0)),
            Some((0, 0.0)),
            Some((0, 0.0)),
        ],
    );
    for (ep, n) in [(1, 6), (2, 1), (3, 3)] {
        snap.endpoints[ep]
            .info
            .in_flight
            .store(n, Ordering::Relaxed);
    }
    snap
}

#[test]
fn queue_scorer_counts_requests_sent_since_the_scrape_beyond_the_free_slots() {
    let t = Instant::now();
    let snap = sent_since_the_scrape(t);
    // ep1 had no free slot: its 6 wait. ep2 and ep3 reported none waiting: with two free
    // slots they started two of what was sent since, and ep3's third waits (2, 6, 0, 1).
    let s = scores(&free_slots(2), &cycle(&snap, t, None));
    assert_eq!(s, vec![4.0 / 6.0, 0.0, 1.0, 5.0 / 6.0]);
    // With room for all three, only ep1's count beyond its scraped queue (2, 6, 0, 0).
    let s = scores(&free_slots(3), &cycle(&snap, t, None));
    assert_eq!(s, vec![4.0 / 6.0, 0.0, 1.0, 1.0]);
}

#[test]
fn queue_scorer_by_default_counts_every_request_sent_since_the_scrape() {
    let t = Instant::now();
    let snap = sent_since_the_scrape(t);
    // A burst between two scrapes spreads: ep1 reports a queue, so its 6 count whole; ep2
    // and ep3 report none, so theirs count half (queues 2, 6, 0.5, 1.5).
    let s = scores(&QueueScorer::default(), &cycle(&snap, t, None));
    assert_eq!(s, vec![4.0 / 5.5, 0.0, 1.0, 4.5 / 5.5]);
    // Counted whole (`inFlightWeight: 1`, the default until session 10): 2, 6, 1, 3.
    let s = scores(&free_slots(0), &cycle(&snap, t, None));
    assert_eq!(s, vec![0.8, 0.0, 1.0, 0.6]);
    // Upstream's: the scraped queues alone (2, 2, 0, 0).
    let s = scores(&UPSTREAM_QUEUE, &cycle(&snap, t, None));
    assert_eq!(s, vec![0.0, 0.0, 1.0, 1.0]);
}

#[test]
fn queue_scorer_weighs_requests_sent_to_a_server_reporting_no_queue_by_in_flight_weight() {
    let t = Instant::now();
    let snap = sent_since_the_scrape(t);
    let light = QueueScorer {
        weight: 0.25,
        ..QueueScorer::default()
    };
    // ep1 reports a queue: its 6 count whole. ep2 and ep3 report none: a quarter each
    // (2, 6, 0.25, 0.75).
    let s = scores(&light, &cycle(&snap, t, None));
    assert_eq!(s, vec![4.0 / 5.75, 0.0, 1.0, 5.25 / 5.75]);
    // Where no server reports a queue, one request sent since the scrape moves a quarter of
    // the scorer's weight, not all of it: scores are min-max over at least one waiting.
    let idle = snapshot(t, &[Some((0, 0.0)), Some((0, 0.0))]);
    idle.endpoints[0].info.in_flight.store(1, Ordering::Relaxed);
    assert_eq!(scores(&light, &cycle(&idle, t, None)), vec![0.75, 1.0]);
    assert_eq!(
        scores(&QueueScorer::default(), &cycle(&idle, t, None)),
        vec![0.5, 1.0]
    );
    assert_eq!(
        scores(&free_slots(0), &cycle(&idle, t, None)),
        vec![0.0, 1.0]
    );
}

#[test]
fn kv_cache_scorer_is_one_minus_usage() {
    let t = Instant::now();
    let snap = snapshot(t, &[Some((0, 0.25)), Some((0, 1.0))]);
    assert_eq!(
        scores(&KvCacheUtilizationScorer, &cycle(&snap, t, None)),
        vec![0.75, 0.0]
    );
}

#[test]
fn active_request_scorer_scales_busy_endpoints_below_the_idle_ones() {
    let t = Instant::now();
    let snap = snapshot(t, &[Some((0, 0.0)), Some((0, 0.0)), None]);
    snap.endpoints[0].info.in_flight.store(4, Ordering::Relaxed);
    snap.endpoints[1].info.in_flight.store(2, Ordering::Relaxed);
    let c = cycle(&snap, t, None);
    assert_eq!(
        scores(&ActiveRequestScorer::default(), &c),
        vec![0.0, 0.5, 1.0]
    );
    let tolerant = ActiveRequestScorer {
        idle_threshold: 2,
        max_busy_score: 0.5,
    };
    assert_eq!(scores(&tolerant, &c), vec![0.0, 1.0, 1.0]);
}

#[test]
fn stale_and_unscraped_endpoints_score_zero_on_metric_scorers() {
    let t = Instant::now();
    let snap = snapshot(t, &[Some((9, 0.9)), None]);
    let later = t + STALENESS + Duration::from_millis(1);
    assert_eq!(
        scores(&QueueScorer::default(), &cycle(&snap, later, None)),
        vec![0.0, 0.0]
    );
    assert_eq!(
        scores(&KvCacheUtilizationScorer, &cycle(&snap, t, None)),
        vec![1.0 - 0.9, 0.0]
    );
}

#[test]
fn the_least_loaded_endpoint_is_picked() {
    let t = Instant::now();
    let snap = snapshot(t, &[Some((5, 0.5)), Some((0, 0.1)), Some((9, 0.9))]);
    assert_eq!(
        pick(&profile("{}"), &cycle(&snap, t, None)).unwrap(),
        vec!["10.0.0.2:8000"]
    );
}

#[test]
fn fallbacks_come_best_first() {
    let t = Instant::now();
    let snap = snapshot(
        t,
        &[
            Some((5, 0.5)),
            Some((0, 0.1)),
            Some((9, 0.9)),
            Some((2, 0.2)),
        ],
    );
    let got = pick(&profile(&with_fallbacks(3)), &cycle(&snap, t, None)).unwrap();
    assert_eq!(got, vec!["10.0.0.2:8000", "10.0.0.4:8000", "10.0.0.1:8000"]);
}

#[test]
fn stale_endpoints_are_dropped_while_fresh_ones_exist() {
    let t = Instant::now();
    // The idle endpoint was never scraped; the busy one is fresh and must win.
    let snap = snapshot(t, &[None, Some((50, 0.95))]);
    let got = pick(&profile(&with_fallbacks(2)), &cycle(&snap, t, None)).unwrap();
    assert_eq!(got, vec!["10.0.0.2:8000"]);
}

#[test]
fn stale_endpoints_are_used_when_nothing_fresh_is_left() {
    let t = Instant::now();
    let snap = snapshot(t, &[Some((0, 0.0)), Some((0, 0.0))]);
    snap.endpoints[0].info.in_flight.store(3, Ordering::Relaxed);
    let later = t + STALENESS * 2;
    // Metric scorers rate both 0 (stale); the EPP's own in-flight counts still tell them apart.
    let with_active =
        r#"{"plugins": [{"type": "queue-scorer"}, {"type": "active-request-scorer"}]}"#;
    assert_eq!(
        pick(&profile(with_active), &cycle(&snap, later, None)).unwrap(),
        vec!["10.0.0.2:8000"]
    );
}

#[test]
fn subset_hint_matches_by_ip_or_ip_port() {
    let t = Instant::now();
    let snap = snapshot(t, &[Some((0, 0.0)), Some((9, 0.9)), Some((9, 0.9))]);
    let by_ip = vec!["10.0.0.2".to_owned()];
    assert_eq!(
        pick(&profile("{}"), &cycle(&snap, t, Some(&by_ip))).unwrap(),
        vec!["10.0.0.2:8000"]
    );
    let by_addr = vec!["10.0.0.3:8000".to_owned(), "10.9.9.9:1".to_owned()];
    assert_eq!(
        pick(&profile("{}"), &cycle(&snap, t, Some(&by_addr))).unwrap(),
        vec!["10.0.0.3:8000"]
    );
}

#[test]
fn an_empty_or_unmatched_subset_means_no_endpoints() {
    let t = Instant::now();
    let snap = snapshot(t, &[Some((0, 0.0))]);
    let empty: Vec<String> = vec![];
    assert!(matches!(
        pick(&profile("{}"), &cycle(&snap, t, Some(&empty))),
        Err(ScheduleError::NoEndpoints(_))
    ));
    let other = vec!["10.0.0.1:9999".to_owned()];
    assert!(matches!(
        pick(&profile("{}"), &cycle(&snap, t, Some(&other))),
        Err(ScheduleError::NoEndpoints(_))
    ));
}

#[test]
fn an_empty_pool_means_no_endpoints() {
    let snap = snapshot(Instant::now(), &[]);
    assert!(pick(&profile("{}"), &cycle(&snap, Instant::now(), None)).is_err());
}
