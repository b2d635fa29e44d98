//! One behaviour per filter, over real snapshots.

use crate::datalayer::MetricsUpdate;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::filters::role_filter::{DECODE, ENCODE, PREFILL, ROLE_LABEL};
use crate::scheduling::registry;
use crate::scheduling::test_pool::{all, cycle, filter_of, kept, pool, Ep};

/// One endpoint per role upstream defines, then one without the label.
fn every_role() -> Vec<Ep> {
    let roles = [
        "encode",
        "prefill",
        "decode",
        "encode-prefill",
        "prefill-decode",
        "encode-prefill-decode",
        "both",
    ];
    let mut eps: Vec<Ep> = roles
        .iter()
        .map(|r| Ep::waiting(0).label(ROLE_LABEL, r))
        .collect();
    eps.push(Ep::waiting(0));
    eps
}

#[test]
fn decode_filter_keeps_every_role_that_decodes_and_unlabelled() {
    assert_eq!(kept(&DECODE, every_role()), vec![2, 4, 5, 6, 7]);
}

#[test]
fn prefill_filter_keeps_every_role_that_prefills() {
    assert_eq!(kept(&PREFILL, every_role()), vec![1, 3, 4, 5, 6]);
}

#[test]
fn encode_filter_keeps_every_role_that_encodes() {
    assert_eq!(kept(&ENCODE, every_role()), vec![0, 3, 5]);
}

#[test]
fn label_selector_filter_applies_match_labels_and_expressions() {
    let f = filter_of(
        "label-selector-filter",
        r#"{"matchLabels": {"zone": "a"},
            "matchExpressions": [{"key": "gpu", "operator": "In", "values": ["h100", "a100"]},
                                 {"key": "draining", "operator": "DoesNotExist"}]}"#,
    );
    let eps = vec![
        Ep::waiting(0).label("zone", "a").label("gpu", "h100"),
        Ep::waiting(0).label("zone", "b").label("gpu", "h100"),
        Ep::waiting(0).label("zone", "a").label("gpu", "l4"),
        Ep::waiting(0)
            .label("zone", "a")
            .label("gpu", "a100")
            .label("draining", "1"),
    ];
    assert_eq!(kept(&*f, eps), vec![0]);
}

fn loaded(waiting: u32, kv: f64) -> Ep {
    Ep::with(MetricsUpdate {
        waiting: Some(waiting),
        running: Some(3),
        kv_usage: Some(kv),
        ..Default::default()
    })
}

#[test]
fn utilization_filter_keeps_endpoints_under_every_condition() {
    let f = filter_of(
        "utilization-filter",
        r#"{"conditions": [{"metric": "waiting-queue", "maxValue": 5},
                           {"metric": "kv-cache-utilization", "maxValue": 0.9},
                           {"metric": "running-requests", "maxValue": 3}]}"#,
    );
    let eps = vec![loaded(1, 0.5), loaded(9, 0.5), loaded(1, 0.95)];
    assert_eq!(kept(&*f, eps), vec![0]);
    // Without fallbackOnEmpty, none left is none left (the profile then fails the cycle).
    assert_eq!(kept(&*f, vec![loaded(9, 0.5)]), Vec::<u32>::new());
}

#[test]
fn utilization_filter_falls_back_to_all_when_asked() {
    let f = filter_of(
        "utilization-filter",
        r#"{"conditions": [{"metric": "active-requests", "maxValue": 0}], "fallbackOnEmpty": true}"#,
    );
    let (_store, snap) = pool(vec![Ep::waiting(0), Ep::waiting(0)]);
    let c = cycle(&snap);
    snap.endpoints[0]
        .info
        .in_flight
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut candidates = all(&c);
    f.filter(&c, &mut candidates).unwrap();
    assert_eq!(candidates, vec![1]);
    snap.endpoints[1]
        .info
        .in_flight
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut candidates = all(&c);
    f.filter(&c, &mut candidates).unwrap();
    assert_eq!(candidates, vec![0, 1]);
}

#[test]
fn utilization_filter_parameters_are_checked() {
    for (params, needle) in [
        (r#"{}"#, "conditions"),
        (
            r#"{"conditions": [{"metric": "gpu-heat", "maxValue": 1}]}"#,
            "gpu-heat",
        ),
        (
            r#"{"conditions": [{"metric": "kv-cache-utilization", "maxValue": 2}]}"#,
            "maxValue",
        ),
        (
            r#"{"conditions": [{"metric": "waiting-queue"}]}"#,
            "maxValue: required",
        ),
        (
            r#"{"conditions": [{"metric": "waiting-queue", "maxValue": 1}], "inFlightLoadProducerName": "x"}"#,
            "inFlightLoadProducerName",
        ),
    ] {
        let raw: serde_json::Value = serde_json::from_str(params).unwrap();
        let e = registry::build(&Params {
            name: "u",
            kind: "utilization-filter",
            raw: Some(&raw),
        })
        .err()
        .unwrap();
        assert!(e.0.contains(needle), "{params}: {e}");
    }
}

#[test]
fn header_based_testing_filter_keeps_what_the_header_names_in_its_order() {
    let f = filter_of("header-based-testing-filter", "null");
    let (_store, snap) = pool(vec![Ep::waiting(0), Ep::waiting(0), Ep::waiting(0)]);
    let run = |value: Option<&str>| {
        let headers: Vec<(String, String)> = value
            .map(|v| vec![("test-epp-endpoint-selection".into(), v.into())])
            .unwrap_or_default();
        let mut c = cycle(&snap);
        c.request.headers = &headers;
        let mut candidates = all(&c);
        f.filter(&c, &mut candidates).unwrap();
        candidates
    };
    assert_eq!(run(Some("10.0.0.3:8000, 10.0.0.1")), vec![2, 0]);
    assert_eq!(run(Some("10.0.0.2:9999,10.0.0.9")), Vec::<u32>::new());
    assert_eq!(run(Some("10.0.0.2,10.0.0.2:8000")), vec![1]);
    assert_eq!(run(None), Vec::<u32>::new());
}

#[test]
fn by_label_keeps_valid_values_and_unlabelled_only_when_allowed() {
    let eps = || {
        vec![
            Ep::waiting(0).label("tier", "gold"),
            Ep::waiting(0).label("tier", "bronze"),
            Ep::waiting(0),
        ]
    };
    let strict = filter_of("by-label", r#"{"label": "tier", "validValues": ["gold"]}"#);
    assert_eq!(kept(&*strict, eps()), vec![0]);
    let open = filter_of(
        "by-label",
        r#"{"label": "tier", "validValues": ["gold"], "allowsNoLabel": true}"#,
    );
    assert_eq!(kept(&*open, eps()), vec![0, 2]);
}

#[test]
fn utilization_detector_filter_widens_its_thresholds_by_headroom_and_fails_open() {
    let ep = |waiting: u32, kv: f64| {
        Ep::with(MetricsUpdate {
            waiting: Some(waiting),
            kv_usage: Some(kv),
            ..Default::default()
        })
    };
    let eps = vec![ep(4, 0.1), ep(5, 0.1), ep(0, 0.85), ep(6, 0.1)];
    let strict = filter_of("utilization-detector", "{}");
    assert_eq!(kept(&*strict, eps.clone()), vec![0]);
    // headroom 0.2: queue limit 6, KV limit 0.96.
    let burst = filter_of("utilization-detector", r#"{"headroom": 0.2}"#);
    assert_eq!(kept(&*burst, eps.clone()), vec![0, 1, 2]);
    // Every endpoint past its limit: all kept, the scorers pick the least bad.
    assert_eq!(kept(&*strict, vec![ep(9, 0.9), ep(7, 0.1)]), vec![0, 1]);
}

#[test]
fn concurrency_detector_filter_limits_in_flight_per_endpoint_with_headroom() {
    let (_store, snap) = pool(vec![Ep::waiting(0), Ep::waiting(0), Ep::waiting(0)]);
    for (i, n) in [(0, 1u32), (1, 2), (2, 3)] {
        snap.endpoints[i]
            .info
            .in_flight
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }
    let c = cycle(&snap);
    let run = |params: &str| {
        let f = filter_of("concurrency-detector", params);
        let mut cands = all(&c);
        f.filter(&c, &mut cands).unwrap();
        cands
    };
    assert_eq!(run(r#"{"maxConcurrency": 2}"#), vec![0]);
    // ⌊2 · 1.5⌋ = 3: two in flight may take one more, three may not.
    assert_eq!(run(r#"{"maxConcurrency": 2, "headroom": 0.5}"#), vec![0, 1]);
}

#[test]
fn detector_filters_refuse_what_they_cannot_honour_by_name() {
    for (kind, params, want) in [
        (
            "concurrency-detector",
            r#"{"concurrencyMode": "tokens"}"#,
            "concurrencyMode: 'tokens' is not supported",
        ),
        (
            "concurrency-detector",
            r#"{"headroom": -1}"#,
            "headroom: must be >= 0",
        ),
        (
            "utilization-detector",
            r#"{"kvCacheUtilThreshold": 2}"#,
            "kvCacheUtilThreshold",
        ),
        (
            "utilization-detector",
            r#"{"metricsStalenessThreshold": "soon"}"#,
            "metricsStalenessThreshold",
        ),
    ] {
        let raw: serde_json::Value = serde_json::from_str(params).unwrap();
        let Err(e) = registry::build(&Params {
            name: kind,
            kind,
            raw: Some(&raw),
        }) else {
            panic!("{kind} {params} accepted")
        };
        assert!(e.to_string().contains(want), "{e}");
    }
}
