//! Per-request parsing costs: a typical 2 KiB chat body and a 32 KiB one, each against a
//! `serde_json::Value` parse of the same bytes as baseline; prefix hashing of a 32 KiB prompt.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluicegate_core::datalayer::{parse_metrics, Engine};
use sluicegate_core::parse::{parse_request, replace_model_in_chunk, rewrite_model};
use sluicegate_core::prefix::{block_hashes, PrefixIndex};

const CHAT: &str = "/v1/chat/completions";

/// A chat body of about `size` bytes: a system message, then user/assistant turns, keys in the
/// order the OpenAI SDKs send them (role before content).
fn chat_body(size: usize) -> Vec<u8> {
    let turn = "The quick brown fox jumps over the lazy dog, then asks about KV caches. ".repeat(3);
    let mut messages =
        vec![r#"{"role":"system","content":"You are a helpful assistant."}"#.to_string()];
    let mut len = 250;
    while len < size {
        let role = if messages.len() % 2 == 1 {
            "user"
        } else {
            "assistant"
        };
        let message = format!(r#"{{"role":"{role}","content":"{turn}"}}"#);
        len += message.len() + 1;
        messages.push(message);
    }
    format!(
        r#"{{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{}],"stream":true,"max_completion_tokens":256,"temperature":0.7,"stream_options":{{"include_usage":true}}}}"#,
        messages.join(",")
    )
    .into_bytes()
}

fn bench_parse(c: &mut Criterion) {
    for (name, size) in [("2KiB", 2 * 1024), ("32KiB", 32 * 1024)] {
        let body = chat_body(size);
        let mut group = c.benchmark_group(format!("parse_chat_{name}"));
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function("parse_request", |b| {
            b.iter(|| parse_request(CHAT, black_box(&body)).unwrap())
        });
        group.bench_function("baseline_serde_value", |b| {
            b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&body)).unwrap())
        });
        group.bench_function("rewrite_model", |b| {
            b.iter(|| rewrite_model(black_box(&body), "llama-8b").unwrap())
        });
        group.finish();
    }
}

fn bench_prefix(c: &mut Criterion) {
    let prompt = parse_request(CHAT, &chat_body(40 * 1024))
        .unwrap()
        .prompt
        .into_bytes();
    let prompt = &prompt[..32 * 1024];
    let mut group = c.benchmark_group("prefix_32KiB");
    group.throughput(Throughput::Bytes(prompt.len() as u64));
    group.bench_function("block_hashes_256B", |b| {
        b.iter(|| block_hashes("m", Some("salt"), black_box(prompt), 256))
    });
    let hashes = block_hashes("m", None, prompt, 256);
    let index = PrefixIndex::new(100_000);
    for endpoint in 0..16 {
        index.insert(
            endpoint,
            &hashes[..(endpoint as usize * 8).min(hashes.len())],
            None,
        );
    }
    group.bench_function("match_16_endpoints", |b| {
        b.iter(|| {
            (0..16)
                .map(|e| index.longest_prefix_match(e, black_box(&hashes)))
                .sum::<usize>()
        })
    });
    group.bench_function("insert_128_blocks", |b| {
        b.iter(|| index.insert(99, black_box(&hashes), None))
    });
    group.finish();
}

fn bench_chunk(c: &mut Criterion) {
    let chunk = br#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"llama-8b","choices":[{"index":0,"delta":{"content":"hello"}}]}

"#;
    let mut group = c.benchmark_group("replace_model_in_chunk");
    group.bench_function("match", |b| {
        b.iter(|| {
            replace_model_in_chunk(
                black_box(chunk),
                "llama-8b",
                "meta-llama/Llama-3.1-8B-Instruct",
            )
        })
    });
    group.bench_function("no_match", |b| {
        b.iter(|| replace_model_in_chunk(black_box(chunk), "other", "x"))
    });
    group.finish();
}

/// A vLLM-like scrape of about 20 KB: the gauges the EPP reads among 400 histogram bucket lines
/// it skips, as real vLLM output is mostly buckets.
fn vllm_scrape() -> String {
    let model = "model_name=\"meta-llama/Llama-3.1-8B-Instruct\"";
    let mut text = format!(
        "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{{engine=\"0\",{model}}} 3.0\n\
         # TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{{engine=\"0\",{model}}} 12.0\n\
         # TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{{engine=\"0\",{model}}} 0.42\n"
    );
    for h in 0..20 {
        for b in 0..20 {
            text +=
                &format!("vllm:h{h}_seconds_bucket{{engine=\"0\",le=\"{b}.5\",{model}}} 12.0\n");
        }
    }
    text
}

fn bench_scrape(c: &mut Criterion) {
    let text = vllm_scrape();
    let mut group = c.benchmark_group("scrape_vllm");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("parse_metrics", |b| {
        b.iter(|| parse_metrics(black_box(&text), Engine::Vllm))
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_parse,
    bench_prefix,
    bench_chunk,
    bench_scrape
);
criterion_main!(benches);
