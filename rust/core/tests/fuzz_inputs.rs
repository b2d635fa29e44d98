//! Property fuzzing of the two parsers that read untrusted bytes: request bodies (from any
//! client) and model-server metrics (from any endpoint). Neither may panic, and each call must
//! finish quickly whatever it is fed; bad bodies must be refused with an error that names the
//! problem. Short runs in `cargo test`; `SLUICEGATE_SOAK=1` runs 1,000,000 cases per property.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::Config;
use sluicegate_core::datalayer::metrics::{parse_metrics, Engine};
use sluicegate_core::parse::{
    find_usage, parse_request, replace_model_in_chunk, rewrite_model, ParseError,
};

const PATHS: [&str; 7] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/responses",
    "/v1/embeddings",
    "/v1/messages",
    "/v1/models",
    "/anything/else",
];
const ENGINES: [Engine; 3] = [Engine::Vllm, Engine::Sglang, Engine::Trtllm];
/// A hang detector, not a performance target: inputs are at most a few hundred KiB.
const PER_CASE: Duration = Duration::from_secs(2);

fn cases() -> u32 {
    match std::env::var("SLUICEGATE_SOAK").as_deref() {
        Ok("1") => 1_000_000,
        _ => 256,
    }
}

fn config() -> Config {
    Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    }
}

fn bounded<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    assert!(
        start.elapsed() < PER_CASE,
        "{what} took {:?}",
        start.elapsed()
    );
    out
}

fn feed_request(path: &str, body: &[u8]) -> Result<(), ParseError> {
    bounded("parse/rewrite", || {
        let parsed = parse_request(path, body);
        let _ = rewrite_model(body, "m\"\u{e9}");
        let _ = replace_model_in_chunk(body, "model", "n");
        let _ = find_usage(body);
        parsed.map(|_| ())
    })
}

/// JSON values of any shape (scalars include NaN-ish and huge numbers as raw text).
fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("1e999999".to_owned()),
        Just("-1e-999999".to_owned()),
        Just("NaN".to_owned()),
        Just("Infinity".to_owned()),
        Just("-0".to_owned()),
        "[0-9]{1,400}",
        any::<f64>().prop_map(|f| f.to_string()),
        any::<i64>().prop_map(|i| i.to_string()),
        ".{0,24}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        Just("\"\\ud800\"".to_owned()), // lone surrogate escape
        Just("\"\\u0000\"".to_owned()),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((key(), inner), 0..6).prop_map(|kv| {
                let fields: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
                format!("{{{}}}", fields.join(","))
            }),
        ]
    })
}

/// Keys the parser looks for, mixed with others.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("model"),
        Just("messages"),
        Just("prompt"),
        Just("input"),
        Just("instructions"),
        Just("role"),
        Just("content"),
        Just("text"),
        Just("type"),
        Just("stream"),
        Just("max_tokens"),
        Just("cache_salt"),
        Just("usage"),
        Just("m\\u006fdel"), // "model" spelled with an escape
        Just("x"),
    ]
    .prop_map(|k| format!("\"{k}\""))
}

/// Request bodies shaped like real ones but with one thing wrong (types, duplicates, depth).
fn wrong_body() -> impl Strategy<Value = (String, Option<&'static str>)> {
    let m = r#""model":"llama""#;
    prop_oneof![
        // well-formed envelope, values of any shape
        prop::collection::vec((key(), json_value()), 0..8).prop_map(|kv| {
            let f: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
            (format!("{{{}}}", f.join(",")), None)
        }),
        // the model key twice, with anything between: always refused
        (json_value(), json_value()).prop_map(move |(a, b)| (
            format!(r#"{{{m},"x":{a},"model":{b},"messages":[]}}"#),
            Some("model")
        )),
        // nesting far beyond any recursion limit
        (1usize..100_000, 0..3usize).prop_map(move |(depth, shape)| {
            let body = match shape {
                0 => format!(
                    r#"{{{m},"messages":{}{}}}"#,
                    "[".repeat(depth),
                    "]".repeat(depth)
                ),
                1 => format!(
                    r#"{{{m},"x":{}1{}}}"#,
                    "{\"a\":".repeat(depth),
                    "}".repeat(depth)
                ),
                _ => format!(r#"{{{m},"prompt":{}"#, "[".repeat(depth)),
            };
            (body, None)
        }),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_are_refused_or_parsed_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..4096), path in 0..PATHS.len()
    ) {
        let _ = feed_request(PATHS[path], &body);
    }

    #[test]
    fn wrong_json_is_refused_with_a_reason(case in wrong_body(), path in 0..3usize) {
        let (body, must_refuse) = case;
        let result = feed_request(PATHS[path], body.as_bytes());
        if let Some(field) = must_refuse {
            // refused for the duplicate, or earlier for invalid JSON between the two
            let err = result.expect_err("a duplicate field must be refused");
            let msg = err.to_string();
            prop_assert!(msg.contains(field) || msg.contains("JSON"), "{msg}");
        }
        if let Err(e) = parse_request(PATHS[path], body.as_bytes()) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn invalid_utf8_names_the_offset(prefix in "[a-z ]{0,40}", bad in 0x80u8..0xC0) {
        let mut body = format!("{{\"model\":\"{prefix}").into_bytes();
        let at = body.len();
        body.push(bad);
        body.extend_from_slice(b"\",\"messages\":[]}");
        let err = feed_request(PATHS[0], &body).expect_err("invalid UTF-8 must be refused");
        prop_assert!(err.to_string().contains(&format!("offset {at}")), "{err}");
    }
}

/// Exposition lines: wanted metric names with every kind of broken label set and value.
fn metrics_line() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("vllm:num_requests_waiting".to_owned()),
        Just("vllm:num_requests_running".to_owned()),
        Just("vllm:kv_cache_usage_perc".to_owned()),
        Just("vllm:gpu_cache_usage_perc".to_owned()),
        Just("vllm:lora_requests_info".to_owned()),
        Just("vllm:cache_config_info".to_owned()),
        Just("sglang:num_queue_reqs".to_owned()),
        Just("sglang:token_usage".to_owned()),
        Just("trtllm_kv_cache_tokens_per_block".to_owned()),
        Just("trtllm_kv_cache_max_blocks".to_owned()),
        Just("# TYPE vllm:num_requests_waiting gauge".to_owned()),
        Just("# HELP x y".to_owned()),
        "[a-z_:]{0,12}",
    ];
    let labels = prop_oneof![
        Just(String::new()),
        Just("{}".to_owned()),
        Just(r#"{model_name="m"}"#.to_owned()),
        Just(r#"{running_lora_adapters="a,b",max_lora="x",waiting_lora_adapters=""}"#.to_owned()),
        Just(r#"{block_size="16",num_gpu_blocks="-3"}"#.to_owned()),
        Just(r#"{a="unterminated}"#.to_owned()),
        Just(r#"{a="\"\\\n"}"#.to_owned()),
        Just("{a=b}".to_owned()),
        Just("{{{".to_owned()),
        r#"\{[a-z]{0,4}="[^"]{0,8}"\}"#,
    ];
    let value = prop_oneof![
        Just("NaN".to_owned()),
        Just("+Inf".to_owned()),
        Just("-Inf".to_owned()),
        Just("1e400".to_owned()),
        Just("-1".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just(String::new()),
        any::<f64>().prop_map(|f| f.to_string()),
        "[0-9.eE+-]{0,12}",
    ];
    let ts = prop_oneof![
        Just(String::new()),
        Just(" 1700000000000".to_owned()),
        Just(" x".to_owned())
    ];
    (name, labels, value, ts).prop_map(|(n, l, v, t)| format!("{n}{l} {v}{t}"))
}

fn check_metrics(text: &str) -> Result<(), TestCaseError> {
    for engine in ENGINES {
        let update = bounded("parse_metrics", || parse_metrics(text, engine));
        if let Some(kv) = update.kv_usage {
            prop_assert!((0.0..=1.0).contains(&kv), "kv_usage {kv} out of range");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_metrics_text_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        check_metrics(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn broken_exposition_lines_never_panic(
        lines in prop::collection::vec(metrics_line(), 0..40),
        sep in prop_oneof![Just("\n"), Just("\r\n"), Just("\n\n"), Just("\r")],
    ) {
        check_metrics(&lines.join(sep))?;
    }
}

#[test]
fn huge_metrics_lines_are_read_in_bounded_time() {
    let label = "a".repeat(1 << 20);
    let text = format!(
        "vllm:num_requests_waiting{{x=\"{label}\"}} 3\n{}\nvllm:num_requests_running 2\n",
        "#".repeat(1 << 20)
    );
    let update = bounded("parse_metrics", || parse_metrics(&text, Engine::Vllm));
    assert_eq!((update.waiting, update.running), (Some(3), Some(2)));
}
