//! One full route (parse + schedule over the snapshot + in-flight count) over pools of
//! 10 / 100 / 1000 endpoints, with parse alone as the baseline it is compared against.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use sluicegate_core::datalayer::{EndpointSpec, Engine};
use sluicegate_core::parse::parse_request;
use sluicegate_core::scheduling::Router;

const PATH: &str = "/v1/chat/completions";
const BODY: &[u8] = br#"{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Summarise the plot of Hamlet in three sentences."}],"max_tokens":128,"stream":true}"#;

fn router(n: usize, config: &str) -> Router {
    let r = Router::from_json(config).unwrap();
    let specs: Vec<EndpointSpec> = (0..n)
        .map(|i| EndpointSpec {
            name: format!("pod-{i}"),
            address: format!("10.{}.{}.{}:8000", i / 65536, (i / 256) % 256, i % 256),
            labels: vec![("app".into(), "vllm".into())],
        })
        .collect();
    r.set_endpoints(&specs);
    for (i, s) in specs.iter().enumerate() {
        let text = format!(
            "vllm:num_requests_waiting{{model_name=\"m\"}} {}\nvllm:num_requests_running 4\nvllm:kv_cache_usage_perc {}\n",
            (i * 7) % 13,
            ((i * 31) % 100) as f64 / 100.0
        );
        r.ingest_metrics(&s.address, &text, Engine::Vllm);
    }
    r
}

fn bench_route(c: &mut Criterion) {
    let mut g = c.benchmark_group("route");
    g.bench_function("parse_only_baseline", |b| {
        b.iter(|| black_box(parse_request(PATH, black_box(BODY)).unwrap()))
    });
    for n in [10, 100, 1000] {
        let r = router(n, "{}");
        g.bench_with_input(BenchmarkId::new("parse_schedule", n), &n, |b, _| {
            b.iter(|| {
                let d = r.route(PATH, black_box(BODY), None, None).unwrap();
                r.release(d.primary());
                black_box(d)
            })
        });
        let r3 = router(n, r#"{"maxNumOfEndpoints": 3}"#);
        g.bench_with_input(
            BenchmarkId::new("parse_schedule_3_fallbacks", n),
            &n,
            |b, _| {
                b.iter(|| {
                    let d = r3.route(PATH, black_box(BODY), None, None).unwrap();
                    r3.release(d.primary());
                    black_box(d)
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench_route);
criterion_main!(benches);
