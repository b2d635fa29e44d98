//! Specification of request parsing, model rewriting and chunk rewriting.

use proptest::prelude::*;

use super::*;

const CHAT: &str = "/v1/chat/completions";

fn parse(path: &str, body: &str) -> Result<ParsedRequest, ParseError> {
    parse_request(path, body.as_bytes())
}

fn wrong(field: &'static str, expected: &'static str) -> ParseError {
    ParseError::WrongType { field, expected }
}

// --- API selection by path ---

#[test]
fn path_suffix_picks_the_api() {
    let cases = [
        ("/v1/chat/completions", ApiKind::ChatCompletions),
        ("chat/completions", ApiKind::ChatCompletions),
        ("/v1/completions", ApiKind::Completions),
        ("/v1/embeddings", ApiKind::Embeddings),
        ("/v1/responses", ApiKind::Responses),
        ("/v1/messages", ApiKind::AnthropicMessages),
        (
            "/openai/deployments/x/chat/completions",
            ApiKind::ChatCompletions,
        ),
        ("/v1/models", ApiKind::Passthrough),
        ("/", ApiKind::Passthrough),
        ("", ApiKind::Passthrough),
    ];
    for (path, kind) in cases {
        assert_eq!(ApiKind::from_path(path), kind, "{path}");
    }
}

#[test]
fn path_query_string_and_trailing_slash_are_ignored() {
    assert_eq!(
        ApiKind::from_path("/v1/chat/completions?api-version=2024"),
        ApiKind::ChatCompletions
    );
    assert_eq!(ApiKind::from_path("/v1/completions/"), ApiKind::Completions);
    assert_eq!(
        ApiKind::from_path("/v1/models?x=/v1/completions"),
        ApiKind::Passthrough
    );
}

#[test]
fn path_suffix_counts_only_at_a_segment_boundary() {
    assert_eq!(
        ApiKind::from_path("/v1/textcompletions"),
        ApiKind::Passthrough
    );
    assert_eq!(
        ApiKind::from_path("/v1/mychat/completions"),
        ApiKind::Completions
    );
}

// --- chat completions ---

#[test]
fn chat_extracts_routing_fields() {
    let body = r#"{"model":"llama","messages":[{"role":"user","content":"hi"}],"stream":true,
        "max_tokens":100,"cache_salt":"tenant-a","temperature":0.2}"#;
    let req = parse(CHAT, body).unwrap();
    assert_eq!(req.kind, ApiKind::ChatCompletions);
    assert_eq!(req.model.as_deref(), Some("llama"));
    assert!(req.stream);
    assert_eq!(req.max_tokens, Some(100));
    assert_eq!(req.cache_salt.as_deref(), Some("tenant-a"));
    assert_eq!(req.prompt, "\u{1e}user\u{1f}hi");
}

#[test]
fn chat_defaults_when_optional_fields_are_absent_or_null() {
    let body = r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":null,"max_tokens":null}"#;
    let req = parse(CHAT, body).unwrap();
    assert!(!req.stream);
    assert_eq!(req.max_tokens, None);
    assert_eq!(req.cache_salt, None);
}

#[test]
fn chat_prompt_keeps_message_order_and_roles() {
    let body = r#"{"model":"m","messages":[{"role":"system","content":"be brief"},
        {"content":"hello","role":"user"},{"role":"assistant","content":null,"tool_calls":[]}]}"#;
    let req = parse(CHAT, body).unwrap();
    assert_eq!(
        req.prompt,
        "\u{1e}system\u{1f}be brief\u{1e}user\u{1f}hello\u{1e}assistant\u{1f}"
    );
}

#[test]
fn chat_prompt_differs_when_only_the_role_differs() {
    let a = parse(
        CHAT,
        r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#,
    )
    .unwrap();
    let b = parse(
        CHAT,
        r#"{"model":"m","messages":[{"role":"system","content":"x"}]}"#,
    )
    .unwrap();
    assert_ne!(a.prompt, b.prompt);
}

#[test]
fn chat_content_parts_keep_text_and_skip_images() {
    let body = r#"{"model":"m","messages":[{"role":"user","content":[
        {"type":"text","text":"look: "},{"type":"image_url","image_url":{"url":"data:..."}},
        {"text":"a cat","type":"text"}]}]}"#;
    assert_eq!(
        parse(CHAT, body).unwrap().prompt,
        "\u{1e}user\u{1f}look: a cat"
    );
}

#[test]
fn chat_escaped_strings_are_unescaped() {
    let body = r#"{"model":"m\u00e9","messages":[{"role":"user","content":"a\"b\n"}]}"#;
    let req = parse(CHAT, body).unwrap();
    assert_eq!(req.model.as_deref(), Some("mé"));
    assert_eq!(req.prompt, "\u{1e}user\u{1f}a\"b\n");
}

#[test]
fn chat_requires_a_non_empty_messages_array() {
    let need = wrong("messages", "a non-empty array");
    assert_eq!(
        parse(CHAT, r#"{"model":"m"}"#),
        Err(ParseError::MissingField("messages"))
    );
    assert_eq!(
        parse(CHAT, r#"{"model":"m","messages":[]}"#),
        Err(need.clone())
    );
    assert_eq!(
        parse(CHAT, r#"{"model":"m","messages":"hi"}"#),
        Err(need.clone())
    );
    assert_eq!(parse(CHAT, r#"{"model":"m","messages":null}"#), Err(need));
}

#[test]
fn chat_message_must_be_an_object_with_a_string_role() {
    assert_eq!(
        parse(CHAT, r#"{"model":"m","messages":[1]}"#),
        Err(wrong("messages[]", "an object"))
    );
    assert_eq!(
        parse(CHAT, r#"{"model":"m","messages":[{"content":"x"}]}"#),
        Err(ParseError::MissingField("messages[].role"))
    );
    assert_eq!(
        parse(
            CHAT,
            r#"{"model":"m","messages":[{"role":7,"content":"x"}]}"#
        ),
        Err(wrong("messages[].role", "a string"))
    );
}

#[test]
fn chat_content_of_the_wrong_type_names_the_field() {
    assert_eq!(
        parse(
            CHAT,
            r#"{"model":"m","messages":[{"role":"user","content":5}]}"#
        ),
        Err(wrong(
            "messages[].content",
            "a string or an array of content parts"
        ))
    );
    assert_eq!(
        parse(
            CHAT,
            r#"{"model":"m","messages":[{"role":"user","content":["x"]}]}"#
        ),
        Err(wrong("messages[].content[]", "an object"))
    );
    assert_eq!(
        parse(
            CHAT,
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":1}]}]}"#
        ),
        Err(wrong("messages[].content[].text", "a string"))
    );
}

// --- top-level field validation ---

#[test]
fn model_is_required_and_must_be_a_string() {
    let msgs = r#""messages":[{"role":"user","content":"x"}]"#;
    assert_eq!(
        parse(CHAT, &format!("{{{msgs}}}")),
        Err(ParseError::MissingField("model"))
    );
    assert_eq!(
        parse(CHAT, &format!(r#"{{"model":3,{msgs}}}"#)),
        Err(wrong("model", "a string"))
    );
    assert_eq!(
        parse(CHAT, &format!(r#"{{"model":null,{msgs}}}"#)),
        Err(wrong("model", "a string"))
    );
    assert_eq!(
        parse(CHAT, &format!(r#"{{"model":{{"a":1}},{msgs}}}"#)),
        Err(wrong("model", "a string"))
    );
}

#[test]
fn duplicate_model_is_refused() {
    let body = r#"{"model":"a","messages":[{"role":"user","content":"x"}],"model":"b"}"#;
    let err = parse(CHAT, body).unwrap_err();
    assert_eq!(err, ParseError::DuplicateField("model"));
    assert_eq!(err.to_string(), "duplicate field 'model'");
}

#[test]
fn duplicate_messages_and_nested_keys_are_refused() {
    let m = r#"[{"role":"user","content":"x"}]"#;
    assert_eq!(
        parse(
            CHAT,
            &format!(r#"{{"model":"a","messages":{m},"messages":{m}}}"#)
        ),
        Err(ParseError::DuplicateField("messages"))
    );
    assert_eq!(
        parse(
            CHAT,
            r#"{"model":"a","messages":[{"role":"user","role":"system","content":"x"}]}"#
        ),
        Err(ParseError::DuplicateField("messages[].role"))
    );
}

#[test]
fn stream_must_be_a_boolean() {
    let body = r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#;
    let err = parse(CHAT, body).unwrap_err();
    assert_eq!(err, wrong("stream", "a boolean"));
    assert_eq!(err.to_string(), "field 'stream' must be a boolean");
}

#[test]
fn token_limits_must_be_non_negative_integers() {
    let msgs = r#""messages":[{"role":"user","content":"x"}]"#;
    for bad in [
        "-1",
        "1.5",
        "1e3",
        "1e400",
        "18446744073709551616",
        "\"100\"",
        "true",
        "[]",
    ] {
        for field in ["max_tokens", "max_completion_tokens", "max_output_tokens"] {
            let body = format!(r#"{{"model":"m",{msgs},"{field}":{bad}}}"#);
            let err = parse(CHAT, &body).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("field '{field}' must be a non-negative integer"),
                "{body}"
            );
        }
    }
}

#[test]
fn max_completion_tokens_wins_over_max_tokens() {
    let body = r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":5,"max_completion_tokens":9}"#;
    assert_eq!(parse(CHAT, body).unwrap().max_tokens, Some(9));
}

#[test]
fn cache_salt_must_be_a_string() {
    let body = r#"{"model":"m","messages":[{"role":"user","content":"x"}],"cache_salt":1}"#;
    assert_eq!(parse(CHAT, body), Err(wrong("cache_salt", "a string")));
}

// --- hostile bodies ---

#[test]
fn empty_and_blank_bodies_are_refused() {
    assert_eq!(parse(CHAT, ""), Err(ParseError::EmptyBody));
    assert_eq!(parse(CHAT, " \n\t"), Err(ParseError::EmptyBody));
}

#[test]
fn non_object_bodies_are_refused() {
    for body in ["[]", "\"x\"", "1", "null", "[{\"model\":\"m\"}]"] {
        assert_eq!(parse(CHAT, body), Err(ParseError::NotAnObject), "{body}");
    }
}

#[test]
fn broken_json_is_invalid_json() {
    for body in [
        "{",
        "{\"model\":}",
        "{\"model\":\"m\",}",
        "{} x",
        "{\"a\":NaN}",
    ] {
        assert!(
            matches!(parse(CHAT, body), Err(ParseError::InvalidJson(_))),
            "{body}"
        );
    }
}

#[test]
fn invalid_utf8_is_reported_with_its_offset() {
    let err = parse_request(CHAT, b"{\"model\":\"\xff\"}").unwrap_err();
    assert_eq!(
        err.to_string(),
        "body is not valid JSON: invalid UTF-8 at byte offset 10"
    );
}

#[test]
fn deep_nesting_does_not_overflow_the_stack() {
    let depth = 200_000;
    let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let ignored =
        format!(r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],"x":{deep}}}"#);
    assert_eq!(parse(CHAT, &ignored).unwrap().model.as_deref(), Some("m"));
    assert_eq!(parse(CHAT, &deep), Err(ParseError::NotAnObject));
    let unbalanced = format!(r#"{{"model":"m","x":{}"#, "[".repeat(depth));
    assert!(matches!(
        parse(CHAT, &unbalanced),
        Err(ParseError::InvalidJson(_))
    ));
    let in_model = format!(r#"{{"model":{}}}"#, "{\"a\":".repeat(depth));
    assert!(parse(CHAT, &in_model).is_err());
}

// --- other APIs ---

#[test]
fn completions_prompt_may_be_text_strings_or_token_ids() {
    let p = "/v1/completions";
    assert_eq!(
        parse(p, r#"{"model":"m","prompt":"once"}"#).unwrap().prompt,
        "once"
    );
    assert_eq!(
        parse(p, r#"{"model":"m","prompt":["a","b"]}"#)
            .unwrap()
            .prompt,
        "\u{1e}a\u{1e}b"
    );
    assert_eq!(
        parse(p, r#"{"model":"m","prompt":[1,2]}"#).unwrap().prompt,
        "1 2 "
    );
    assert_eq!(
        parse(p, r#"{"model":"m","prompt":[[1,2],[3]]}"#)
            .unwrap()
            .prompt,
        "\u{1e}1 2 \u{1e}3 "
    );
    assert_eq!(
        parse(p, r#"{"model":"m"}"#),
        Err(ParseError::MissingField("prompt"))
    );
    assert_eq!(
        parse(p, r#"{"model":"m","prompt":5}"#),
        Err(wrong(
            "prompt",
            "a string or an array of strings or token ids"
        ))
    );
    assert_eq!(
        parse(p, r#"{"model":"m","prompt":[[-1]]}"#),
        Err(wrong("prompt[][]", "a token id"))
    );
    assert_eq!(
        parse(p, r#"{"model":"m","prompt":[{"a":1}]}"#),
        Err(wrong(
            "prompt[]",
            "a string, a token id or an array of token ids"
        ))
    );
}

#[test]
fn embeddings_require_input() {
    let p = "/v1/embeddings";
    let req = parse(p, r#"{"model":"e5","input":["a","b"]}"#).unwrap();
    assert_eq!(
        (req.kind, req.model.as_deref()),
        (ApiKind::Embeddings, Some("e5"))
    );
    assert_eq!(
        parse(p, r#"{"model":"e5"}"#),
        Err(ParseError::MissingField("input"))
    );
    assert_eq!(
        parse(p, r#"{"model":"e5","input":true}"#),
        Err(wrong(
            "input",
            "a string or an array of strings or token ids"
        ))
    );
}

#[test]
fn responses_put_instructions_before_input() {
    let p = "/v1/responses";
    let body = r#"{"input":[{"role":"user","content":[{"type":"input_text","text":"hi"}]},
        {"type":"function_call_output","call_id":"c","output":"42"}],"model":"m",
        "instructions":"be nice","max_output_tokens":64}"#;
    let req = parse(p, body).unwrap();
    assert_eq!(req.kind, ApiKind::Responses);
    assert_eq!(req.prompt, "\u{1e}system\u{1f}be nice\u{1e}user\u{1f}hi");
    assert_eq!(req.max_tokens, Some(64));
    assert_eq!(
        parse(p, r#"{"model":"m","input":"hello"}"#).unwrap().prompt,
        "\u{1e}user\u{1f}hello"
    );
    assert_eq!(
        parse(p, r#"{"model":"m"}"#),
        Err(ParseError::MissingField("input"))
    );
    assert_eq!(
        parse(p, r#"{"model":"m","input":3}"#),
        Err(wrong("input", "a string or an array of input items"))
    );
}

#[test]
fn anthropic_messages_include_system() {
    let p = "/v1/messages";
    let body = r#"{"model":"claude","max_tokens":1024,"messages":[{"role":"user","content":[
        {"type":"text","text":"hi"},{"type":"image","source":{}}]}],"system":[{"type":"text","text":"sys"}]}"#;
    let req = parse(p, body).unwrap();
    assert_eq!(req.kind, ApiKind::AnthropicMessages);
    assert_eq!(req.prompt, "\u{1e}system\u{1f}sys\u{1e}user\u{1f}hi");
    assert_eq!(req.max_tokens, Some(1024));
    assert_eq!(
        parse(p, r#"{"model":"c","system":"s"}"#),
        Err(ParseError::MissingField("messages"))
    );
}

#[test]
fn passthrough_needs_no_json_but_reports_a_model() {
    let p = "/v1/models";
    let req = parse_request(p, b"\xff\x00 not json").unwrap();
    assert_eq!((req.kind, req.model), (ApiKind::Passthrough, None));
    let req = parse(p, r#"{"model":"m","stream":true,"anything":[1]}"#).unwrap();
    assert_eq!((req.model.as_deref(), req.stream), (Some("m"), true));
    assert_eq!(parse(p, r#"{"model":3}"#).unwrap().model, None);
    assert_eq!(parse(p, r#"["m"]"#).unwrap().model, None);
    assert_eq!(parse(p, "").unwrap().model, None);
}

// --- rewrite_model ---

#[test]
fn rewrite_model_splices_only_the_model_value() {
    let body = br#"{ "temperature" : 1.0e0, "model" :  "old" , "messages":[{"model":"inner"}] }"#;
    let out = rewrite_model(body, "new/\"quoted\"").unwrap();
    let expected = br#"{ "temperature" : 1.0e0, "model" :  "new/\"quoted\"" , "messages":[{"model":"inner"}] }"#;
    assert_eq!(out, expected);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["model"], "new/\"quoted\"");
}

#[test]
fn the_parse_locates_a_verbatim_model_and_splicing_there_rewrites_as_a_second_parse_would() {
    let body = br#"{ "temperature" : 1.0e0, "model" :  "old" , "messages":[{"role":"user","content":"hi","model":"x"}] }"#;
    let parsed = parse_request("/v1/chat/completions", body).unwrap();
    let span = parsed
        .model_span
        .clone()
        .expect("a verbatim model has a span");
    assert_eq!(&body[span.clone()], br#""old""#);
    let new = "new/\"quoted\"";
    assert_eq!(
        splice_model(body, span, new),
        rewrite_model(body, new).unwrap()
    );
}

#[test]
fn a_model_with_escapes_has_no_span_to_splice() {
    let parsed = parse_request("/v1/completions", br#"{"model":"a\"b","prompt":"p"}"#).unwrap();
    assert_eq!(parsed.model.as_deref(), Some("a\"b"));
    assert_eq!(
        parsed.model_span, None,
        "decoded into a copy: the rewrite parses again"
    );
}

#[test]
fn rewrite_model_handles_an_escaped_original() {
    let out = rewrite_model(br#"{"model":"a\"b\u00e9","x":1}"#, "c").unwrap();
    assert_eq!(out, br#"{"model":"c","x":1}"#);
}

#[test]
fn rewrite_model_refuses_bodies_without_a_single_string_model() {
    assert_eq!(
        rewrite_model(br#"{"x":1}"#, "m"),
        Err(ParseError::MissingField("model"))
    );
    assert_eq!(
        rewrite_model(br#"{"model":1}"#, "m"),
        Err(wrong("model", "a string"))
    );
    assert_eq!(
        rewrite_model(br#"{"model":"a","model":"b"}"#, "m"),
        Err(ParseError::DuplicateField("model"))
    );
    assert_eq!(rewrite_model(b"[]", "m"), Err(ParseError::NotAnObject));
    assert_eq!(rewrite_model(b"", "m"), Err(ParseError::EmptyBody));
}

// --- replace_model_in_chunk ---

#[test]
fn chunk_model_is_replaced_in_every_sse_event() {
    let chunk = b"data: {\"model\":\"t\",\"x\":1}\n\ndata: {\"id\":2,\"model\" : \"t\"}\n\ndata: [DONE]\n\n";
    let out = replace_model_in_chunk(chunk, "t", "client/name");
    assert_eq!(
        out,
        b"data: {\"model\":\"client/name\",\"x\":1}\n\ndata: {\"id\":2,\"model\" : \"client/name\"}\n\ndata: [DONE]\n\n"
    );
}

#[test]
fn chunk_without_the_old_model_is_borrowed_unchanged() {
    let chunk = br#"{"model":"other","note":"\"model\":\"t\""}"#;
    assert!(matches!(
        replace_model_in_chunk_cow(chunk, "t", "n"),
        std::borrow::Cow::Borrowed(_)
    ));
    assert!(matches!(
        replace_model_in_chunk_cow(b"{\"model\":\"t\"}", "t", "t"),
        std::borrow::Cow::Borrowed(_)
    ));
}

#[test]
fn chunk_model_prefix_of_a_longer_name_is_not_replaced() {
    let chunk = br#"{"model":"tt","object":"model","model":"t"}"#;
    assert_eq!(
        replace_model_in_chunk(chunk, "t", "n"),
        br#"{"model":"tt","object":"model","model":"n"}"#
    );
}

#[test]
fn chunk_names_are_json_escaped() {
    let out = replace_model_in_chunk(br#"{"model":"a\"b"}"#, "a\"b", "c\\d");
    assert_eq!(out, br#"{"model":"c\\d"}"#);
}

// --- no input makes anything panic ---

const PATHS: [&str; 6] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/messages",
    "/x",
];

fn json_ish() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        "\"model\"",
        "\"messages\"",
        "\"prompt\"",
        "\"input\"",
        "\"role\"",
        "\"content\"",
        "\"type\"",
        "\"text\"",
        "\"system\"",
        "\"instructions\"",
        "\"stream\"",
        "\"max_tokens\"",
        "\"cache_salt\"",
        "\"user\"",
        "\"x\\u00e9\"",
        "\"\\\"\"",
        "1",
        "-1",
        "1e400",
        "0.5",
        "null",
        "true",
        " ",
    ]);
    prop::collection::vec(token, 0..80).prop_map(|t| t.concat())
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512), path in 0..6usize) {
        let _ = parse_request(PATHS[path], &body);
        let _ = rewrite_model(&body, "m");
        let _ = replace_model_in_chunk(&body, "m", "n");
    }

    #[test]
    fn json_ish_strings_never_panic(body in json_ish(), path in 0..6usize) {
        let _ = parse_request(PATHS[path], body.as_bytes());
        let _ = rewrite_model(body.as_bytes(), "m\"é");
        let _ = replace_model_in_chunk(body.as_bytes(), "user", "n");
    }

    #[test]
    fn rewrite_changes_only_the_model(model in ".{0,20}", new in ".{0,20}", extra in ".{0,20}") {
        let body = serde_json::to_vec(&serde_json::json!({"a": extra, "model": model, "prompt": "p", "b": [1, {"model": "x"}]})).unwrap();
        let out = rewrite_model(&body, &new).unwrap();
        // Where the parse located the model (when it had no escapes), splicing gives the same bytes.
        let parsed = parse_request("/v1/completions", &body);
        if let Some(span) = parsed.ok().and_then(|p| p.model_span) {
            prop_assert_eq!(&splice_model(&body, span, &new), &out);
        }
        let mut v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        prop_assert_eq!(&v["model"], &serde_json::Value::from(new));
        v["model"] = serde_json::Value::from(model);
        prop_assert_eq!(v, serde_json::from_slice::<serde_json::Value>(&body).unwrap());
    }
}
