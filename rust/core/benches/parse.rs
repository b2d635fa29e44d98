//! Per-request parsing costs: a typical 2 KiB chat body and a 32 KiB one, each against a
//! `serde_json::Value` parse of the same bytes as baseline; prefix hashing of a 32 KiB prompt;
//! gRPC bodies (vllmgrpc / vertexai parsers) against the JSON parse of what they carry.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluicegate_core::datalayer::{parse_metrics, Engine};
use sluicegate_core::parse::{
    parse_grpc_request, parse_request, replace_model_in_chunk, rewrite_model, GrpcMethod,
};
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

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited protobuf field.
fn field(tag: u64, value: &[u8], out: &mut Vec<u8>) {
    varint(tag << 3 | 2, out);
    varint(value.len() as u64, out);
    out.extend_from_slice(value);
}

fn grpc_frame(message: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// Four characters per id, as the parsers' own token text.
fn token_text(ids: &[u32]) -> String {
    let mut out = String::with_capacity(ids.len() * 4);
    for &id in ids {
        for shift in [18, 12, 6, 0] {
            out.push(char::from(b'0' + ((id >> shift) & 63) as u8));
        }
    }
    out
}

fn bench_grpc(c: &mut Criterion) {
    let chat = chat_body(2 * 1024);
    let mut http_body = Vec::new();
    field(2, &chat, &mut http_body);
    let mut request = Vec::new();
    field(1, b"projects/p/locations/l/endpoints/e", &mut request);
    field(2, &http_body, &mut request);
    let vertex = grpc_frame(&request);
    // vLLM Generate of 4096 pre-tokenized ids (packed varints), as a router would send it.
    let mut ids = Vec::new();
    for i in 0..4096u64 {
        varint(i * 31 % 128_000, &mut ids);
    }
    let mut tokenized = Vec::new();
    field(2, &ids, &mut tokenized);
    let mut generate = Vec::new();
    field(2, &tokenized, &mut generate);
    let vllm = grpc_frame(&generate);
    let mut group = c.benchmark_group("parse_grpc");
    group.bench_function("vertex_chat_2KiB", |b| {
        b.iter(|| {
            parse_grpc_request(
                GrpcMethod::VertexChatCompletions,
                black_box(&vertex),
                token_text,
            )
            .unwrap()
        })
    });
    group.bench_function("baseline_json_chat_2KiB", |b| {
        b.iter(|| parse_request(CHAT, black_box(&chat)).unwrap())
    });
    group.bench_function("vllm_generate_4096_tokens", |b| {
        b.iter(|| {
            parse_grpc_request(GrpcMethod::VllmGenerate, black_box(&vllm), token_text).unwrap()
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_parse,
    bench_grpc,
    bench_prefix,
    bench_chunk,
    bench_scrape
);
criterion_main!(benches);
