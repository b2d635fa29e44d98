//! Admitters: probabilistic-admitter's shedding curve and rate (seeded), latency-slo-admitter's
//! refusal when no endpoint is predicted to meet the TTFT SLO, and both through the Router.

use serde_json::json;

use crate::datalayer::{EndpointSpec, Engine, MetricsUpdate};
use crate::scheduling::admitters::probabilistic_admitter::ProbabilisticAdmitter;
use crate::scheduling::contracts::admitter::Admitter;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::cycle::{LatencyState, ScheduleError};
use crate::scheduling::router::{RouteError, RouteOptions, Router};
use crate::scheduling::test_pool::{all, built, cycle, pool, Ep};

const CHAT: &str = "/v1/chat/completions";
const BODY: &[u8] = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

fn loaded(waiting: u32, kv: f64) -> Ep {
    Ep::with(MetricsUpdate {
        waiting: Some(waiting),
        kv_usage: Some(kv),
        running: Some(3),
        ..Default::default()
    })
}

fn admitter(kind: &str, params: &str) -> std::sync::Arc<dyn Admitter> {
    match built(kind, params) {
        Plugin::Admitter(a) => a,
        _ => panic!("{kind} is not an admitter"),
    }
}

#[test]
fn probabilistic_rejection_rate_follows_the_curve_within_bounds() {
    // Two endpoints at roofline 0.2 and 0.3 (queue 1/5, KV 0.24/0.8): saturation 0.25,
    // p = 0.25^5 · 300 = 0.29297.
    let (_store, snap) = pool(vec![loaded(1, 0.1), loaded(0, 0.24)]);
    let mut c = cycle(&snap);
    c.request.priority = -1;
    let a = ProbabilisticAdmitter::seeded(7);
    let candidates = all(&c);
    assert!((a.saturation(&c, &candidates) - 0.25).abs() < 1e-9);
    let p = a.probability(0.25);
    assert!((p - 0.29296875).abs() < 1e-9);
    let n = 20_000;
    let refused = (0..n).filter(|_| a.admit(&c, &candidates).is_err()).count();
    let rate = refused as f64 / n as f64;
    // 5 standard deviations of a binomial at n = 20000: ±0.016.
    assert!((rate - p).abs() < 0.016, "rate {rate} vs p {p}");
    // Critical and standard requests are never shed, however full the pool.
    c.request.priority = 0;
    assert!((0..1000).all(|_| a.admit(&c, &candidates).is_ok()));
}

#[test]
fn probabilistic_curve_matches_upstreams_table_and_counts_unscraped_endpoints_full() {
    let a = ProbabilisticAdmitter::seeded(1);
    assert!(a.probability(0.08) < 1e-3);
    assert!((a.probability(0.15) - 0.0228).abs() < 1e-3);
    assert_eq!(a.probability(0.35), 1.0);
    let (store, _) = pool(vec![loaded(0, 0.0)]);
    store.set_endpoints(&[
        EndpointSpec {
            name: "ep0".into(),
            address: "10.0.0.1:8000".into(),
            labels: vec![],
        },
        EndpointSpec {
            name: "new".into(),
            address: "10.0.0.9:8000".into(),
            labels: vec![],
        },
    ]);
    let snap = store.snapshot();
    let c = cycle(&snap);
    assert!((a.saturation(&c, &all(&c)) - 0.5).abs() < 1e-9);
}

#[test]
fn probabilistic_parameters_are_upstreams() {
    let plugin =
        crate::scheduling::registry::build(&crate::scheduling::contracts::params::Params {
            name: "p",
            kind: "probabilistic-admitter",
            raw: Some(&json!({"k": 0})),
        });
    let Err(e) = plugin else {
        panic!("k = 0 accepted")
    };
    assert!(e.to_string().contains("parameters.k: must be > 0"), "{e}");
    admitter(
        "probabilistic-admitter",
        r#"{"queueDepthThreshold": 10, "kvCacheUtilThreshold": 0.9, "power": 2, "k": 100}"#,
    );
}

fn predicted(c: &crate::scheduling::cycle::Cycle<'_>, ttft: &[f64], slo: f64) {
    c.state.borrow_mut().latency = Some(LatencyState {
        predicted: ttft.iter().map(|t| Some((*t, 10.0))).collect(),
        ttft_slo: slo,
        tpot_slo: None,
    });
}

#[test]
fn latency_slo_refuses_a_sheddable_request_no_endpoint_can_serve_in_time() {
    let a = admitter("latency-slo-admitter", "{}");
    // Both busy (running 3) and warm (KV 0.5): only predictions can admit.
    let (_store, snap) = pool(vec![loaded(0, 0.5), loaded(0, 0.5)]);
    let mut c = cycle(&snap);
    c.request.priority = -1;
    predicted(&c, &[300.0, 250.0], 200.0);
    let e = a.admit(&c, &all(&c)).unwrap_err();
    assert!(e.contains("no valid endpoint"), "{e}");
    // One endpoint predicted within the SLO: admitted.
    predicted(&c, &[300.0, 150.0], 200.0);
    assert!(a.admit(&c, &all(&c)).is_ok());
    // Not sheddable: admitted whatever the predictions.
    predicted(&c, &[300.0, 250.0], 200.0);
    c.request.priority = 0;
    assert!(a.admit(&c, &all(&c)).is_ok());
}

#[test]
fn latency_slo_admits_on_an_idle_or_cold_endpoint_or_without_predictions() {
    let a = admitter("latency-slo-admitter", "{}");
    let idle = Ep::with(MetricsUpdate {
        kv_usage: Some(0.5),
        running: Some(0),
        ..Default::default()
    });
    let cold = Ep::with(MetricsUpdate {
        kv_usage: Some(0.01),
        running: Some(4),
        ..Default::default()
    });
    for spare in [idle, cold] {
        let (_store, snap) = pool(vec![loaded(0, 0.5), spare]);
        let mut c = cycle(&snap);
        c.request.priority = -1;
        predicted(&c, &[900.0, 900.0], 100.0);
        assert!(a.admit(&c, &all(&c)).is_ok());
    }
    let (_store, snap) = pool(vec![loaded(0, 0.5)]);
    let mut c = cycle(&snap);
    c.request.priority = -1;
    assert!(a.admit(&c, &all(&c)).is_ok(), "untrained: no predictions");
}

/// A Router with the latency producer, the admitter and a queue scorer over A and B.
fn slo_router() -> Router {
    let config = json!({
        "plugins": [
            {"type": "latency-slo-admitter", "name": "latency-admitter"},
            {"type": "queue-scorer"}
        ],
        "schedulingProfiles": [{"name": "default", "plugins": [
            {"pluginRef": "latency-admitter"}, {"pluginRef": "queue-scorer"}]}]
    });
    let r = Router::from_json(&config.to_string()).unwrap();
    let eps = ["10.0.0.1:8000", "10.0.0.2:8000"];
    r.set_endpoints(&eps.map(|a| EndpointSpec {
        name: a.into(),
        address: a.into(),
        labels: vec![],
    }));
    for a in eps {
        let text = "vllm:num_requests_waiting 4\nvllm:num_requests_running 2\nvllm:kv_cache_usage_perc 0.5\n";
        assert!(r.ingest_metrics(a, text, Engine::Vllm));
    }
    r
}

#[test]
fn latency_slo_admitter_through_the_router_refuses_when_predicted_ttft_exceeds_the_header() {
    let r = slo_router();
    assert!(r.has_admitters());
    // Train: every request on this load takes 400 ms to its first token.
    for _ in 0..30 {
        let d = r.route(CHAT, BODY, None, None).unwrap();
        r.release(d.primary());
        r.observe_latency(&d, 0.400, Some(0.010));
    }
    let route = |ttft_slo: &str, priority: i32| {
        let headers = vec![("x-llm-d-slo-ttft-ms".to_owned(), ttft_slo.to_owned())];
        let options = RouteOptions {
            headers: &headers,
            priority,
            ..Default::default()
        };
        let routed = r.route_with(CHAT, BODY, &options);
        if let Ok(d) = &routed {
            r.release(d.primary());
        }
        routed
    };
    match route("100", -1) {
        Err(RouteError::NoEndpoints(ScheduleError::NotAdmitted(why))) => {
            assert!(why.contains("no valid endpoint"), "{why}")
        }
        other => panic!("a sheddable request predicted past its SLO went: {other:?}"),
    }
    assert!(route("5000", -1).is_ok(), "within the SLO");
    assert!(route("100", 0).is_ok(), "not sheddable");
}
