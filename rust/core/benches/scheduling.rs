//! One full route (parse + schedule over the snapshot + in-flight count) over pools of
//! 10 / 100 / 1000 endpoints with the default profile (queue 2, kv-cache 2, prefix-cache 3),
//! with parse alone as the baseline it is compared against: route - parse = one scheduling
//! cycle. Also prefix hashing of a 32 KiB prompt against one xxh3 pass over the same bytes.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use sluicegate_core::datalayer::{EndpointSpec, Engine};
use sluicegate_core::parse::parse_request;
use sluicegate_core::prefix::block_hashes;
use sluicegate_core::scheduling::Router;

const PATH: &str = "/v1/chat/completions";
const BODY: &[u8] = br#"{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Summarise the plot of Hamlet in three sentences."}],"max_tokens":128,"stream":true}"#;

/// Upstream's default profile written out, the picker naming two fallbacks.
const DEFAULT_WITH_3_ENDPOINTS: &str = r#"{"plugins": [{"type": "queue-scorer"},
    {"type": "kv-cache-utilization-scorer"}, {"type": "prefix-cache-scorer"},
    {"type": "max-score-picker", "parameters": {"maxNumOfEndpoints": 3}}],
  "schedulingProfiles": [{"name": "default", "plugins": [{"pluginRef": "queue-scorer", "weight": 2},
    {"pluginRef": "kv-cache-utilization-scorer", "weight": 2},
    {"pluginRef": "prefix-cache-scorer", "weight": 3}, {"pluginRef": "max-score-picker"}]}]}"#;

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
        let r3 = router(n, DEFAULT_WITH_3_ENDPOINTS);
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

/// A chat body whose system prompt is `bytes` long, so the prefix scorer hashes and matches it.
fn long_body(bytes: usize) -> Vec<u8> {
    let text: String = "lorem ipsum dolor sit amet "
        .chars()
        .cycle()
        .take(bytes)
        .collect();
    format!(
        r#"{{"model":"m","messages":[{{"role":"system","content":"{text}"}},{{"role":"user","content":"hi"}}]}}"#
    )
    .into_bytes()
}

fn bench_long_prompt_route(c: &mut Criterion) {
    let body = long_body(8 * 1024);
    let mut g = c.benchmark_group("route_8KiB_prompt");
    g.bench_function("parse_only_baseline", |b| {
        b.iter(|| black_box(parse_request(PATH, black_box(&body)).unwrap()))
    });
    for n in [10, 100, 1000] {
        let r = router(n, "{}");
        g.bench_with_input(BenchmarkId::new("parse_schedule", n), &n, |b, _| {
            b.iter(|| {
                let d = r.route(PATH, black_box(&body), None, None).unwrap();
                r.release(d.primary());
                black_box(d)
            })
        });
    }
    g.finish();
}

fn bench_prefix_hashing(c: &mut Criterion) {
    let prompt = long_body(32 * 1024);
    let mut g = c.benchmark_group("prefix_hash_32KiB");
    g.bench_function("xxh3_one_pass_baseline", |b| {
        b.iter(|| black_box(xxhash_rust::xxh3::xxh3_64(black_box(&prompt))))
    });
    g.bench_function("block_hashes_64_token_blocks", |b| {
        b.iter(|| black_box(block_hashes("m", None, black_box(&prompt), 256)))
    });
    g.bench_function("block_hashes_16_token_blocks", |b| {
        b.iter(|| black_box(block_hashes("m", None, black_box(&prompt), 64)))
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_route,
    bench_long_prompt_route,
    bench_prefix_hashing
);
criterion_main!(benches);
