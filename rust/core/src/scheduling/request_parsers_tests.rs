use super::*;

fn parsers(kinds: &[&str]) -> Parsers {
    Parsers::new(kinds.iter().copied()).unwrap()
}

#[test]
fn the_longest_claimed_suffix_picks_the_parser() {
    let p = parsers(&[
        "openai-parser",
        "anthropic-parser",
        "vllmhttp-parser",
        "sglanghttp-parser",
    ]);
    assert_eq!(p.resolve("/v1/chat/completions"), Some("openai-parser"));
    assert_eq!(p.resolve("/v1/completions?x=1"), Some("openai-parser"));
    assert_eq!(p.resolve("/v1/messages"), Some("anthropic-parser"));
    // `generate` (SGLang) is a suffix of `inference/v1/generate` too; the longer claim wins.
    assert_eq!(p.resolve("/inference/v1/generate"), Some("vllmhttp-parser"));
    assert_eq!(p.resolve("/generate"), Some("sglanghttp-parser"));
    assert_eq!(p.resolve("/v1/textcompletions"), None);
}

#[test]
fn an_explicit_list_refuses_a_path_no_parser_claims() {
    let p = parsers(&["openai-parser"]);
    let e = p
        .parse("/v1/messages", br#"{"model":"m","messages":[]}"#)
        .unwrap_err();
    assert_eq!(e, ParseError::NoParser("/v1/messages".into()));
}

#[test]
fn passthrough_takes_the_rest_and_does_not_read_the_body() {
    let p = parsers(&["openai-parser", "passthrough-parser", "anthropic-parser"]);
    let r = p.parse("/v1/messages", b"not json at all").unwrap();
    assert_eq!(
        (r.kind, r.model, r.prompt.len()),
        (ApiKind::Passthrough, None, 0)
    );
    // Listed after the fallback: never reached.
    assert_eq!(p.resolve("/v1/messages"), Some("passthrough-parser"));
    assert_eq!(p.resolve("/v1/chat/completions"), Some("openai-parser"));
}

#[test]
fn the_defaults_forward_unknown_paths() {
    let p = Parsers::defaults();
    assert_eq!(p.resolve("/some/other/api"), Some("passthrough-parser"));
    assert_eq!(p.resolve("/generate"), Some("passthrough-parser"));
}

#[test]
fn vllm_generate_reads_token_ids_as_a_token_aligned_prompt() {
    let p = parsers(&["vllmhttp-parser"]);
    let body =
        br#"{"model":"m","token_ids":[1,2,3],"stream":true,"sampling_params":{"max_tokens":7}}"#;
    let r = p.parse("/inference/v1/generate", body).unwrap();
    assert_eq!(r.model.as_deref(), Some("m"));
    assert!(r.stream);
    assert_eq!(r.max_tokens, Some(7));
    assert_eq!(r.prompt.len(), 3 * BYTES_PER_TOKEN);
    // A shared token prefix is a shared byte prefix: prefix-cache affinity works on token ids.
    let longer = p
        .parse("/inference/v1/generate", br#"{"token_ids":[1,2,3,4]}"#)
        .unwrap();
    assert!(longer.prompt.starts_with(&r.prompt));
    assert_ne!(token_text(&[1]), token_text(&[2]));
}

#[test]
fn generate_requires_its_token_ids() {
    let p = parsers(&["vllmhttp-parser", "sglanghttp-parser"]);
    let missing = p.parse("/inference/v1/generate", br#"{"model":"m"}"#);
    assert_eq!(missing.unwrap_err(), ParseError::MissingField("token_ids"));
    let empty = p.parse("/generate", br#"{"input_ids":[]}"#).unwrap_err();
    assert!(
        matches!(
            empty,
            ParseError::WrongType {
                field: "input_ids",
                ..
            }
        ),
        "{empty:?}"
    );
    let text = p
        .parse("/generate", br#"{"input_ids":"hello"}"#)
        .unwrap_err();
    assert!(
        matches!(
            text,
            ParseError::WrongType {
                field: "input_ids",
                ..
            }
        ),
        "{text:?}"
    );
}

#[test]
fn sglang_generate_reads_input_ids_and_its_cache_salt() {
    let p = parsers(&["sglanghttp-parser"]);
    let body = br#"{"input_ids":[5,6],"extra_key":"salt","sampling_params":{"max_new_tokens":3}}"#;
    let r = p.parse("/generate", body).unwrap();
    assert_eq!(r.cache_salt.as_deref(), Some("salt"));
    assert_eq!(r.max_tokens, Some(3));
    assert_eq!(r.prompt, token_text(&[5, 6]));
}

#[test]
fn an_unknown_parser_type_is_refused_by_name() {
    let e = Parsers::new(["openai-parser", "tritongrpc-parser"])
        .err()
        .unwrap();
    assert!(e.0.contains("'tritongrpc-parser'"), "{e}");
}

#[test]
fn grpc_parsers_claim_their_service_methods_after_the_package() {
    let p = parsers(&["openai-parser", "vllmgrpc-parser", "vertexai-parser"]);
    let vllm = "/vllm.grpc.engine.VllmEngine/Generate";
    assert_eq!(p.resolve(vllm), Some("vllmgrpc-parser"));
    assert_eq!(
        p.resolve("/vllm.grpc.engine.VllmEngine/Embed"),
        Some("vllmgrpc-parser")
    );
    assert_eq!(p.resolve("/vllm.grpc.engine.VllmEngine/HealthCheck"), None);
    for method in ["ChatCompletions", "RawPredict", "StreamRawPredict"] {
        let path = format!("/google.cloud.aiplatform.v1beta1.PredictionService/{method}");
        assert_eq!(p.resolve(&path), Some("vertexai-parser"), "{path}");
    }
    // A package dot is no boundary for HTTP claims.
    assert_eq!(p.resolve("/v1/chat.completions"), None);
    assert_eq!(p.resolve("/v1/chat/completions"), Some("openai-parser"));
}

#[test]
fn a_vllm_grpc_body_is_decoded_and_a_json_body_there_refused() {
    let p = parsers(&["vllmgrpc-parser"]);
    // GenerateRequest { tokenized = 2 { input_ids = 2 packed [1, 2, 3] } } in one gRPC frame
    let body = [0, 0, 0, 0, 7, 0x12, 5, 0x12, 3, 1, 2, 3];
    let r = p
        .parse("/vllm.grpc.engine.VllmEngine/Generate", &body)
        .unwrap();
    assert_eq!(r.prompt, token_text(&[1, 2, 3]));
    assert_eq!(r.grpc, Some(GrpcMethod::VllmGenerate));
    let e = p
        .parse("/vllm.grpc.engine.VllmEngine/Generate", br#"{"model":"m"}"#)
        .unwrap_err();
    assert!(matches!(e, ParseError::Protobuf(_)), "{e:?}");
}
