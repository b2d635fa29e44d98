use super::*;

/// One gRPC frame around `message` (uncompressed).
fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

fn tokens(ids: &[u32]) -> String {
    ids.iter().map(|i| format!("<{i}>")).collect()
}

/// A length-delimited field (wire type 2) of a short value.
fn field(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag << 3 | 2, value.len() as u8];
    out.extend_from_slice(value);
    out
}

#[test]
fn a_text_generate_request_gives_prompt_stream_and_max_tokens() {
    // text = 3 "hi there", stream = 5 true, sampling_params = 4 { max_tokens = 8: 7 }
    let mut msg = field(1, b"req-1");
    msg.extend(field(3, b"hi there"));
    msg.extend([5 << 3, 1]);
    msg.extend(field(4, &[8 << 3, 7]));
    let r = parse_grpc_request(GrpcMethod::VllmGenerate, &frame(&msg), tokens).unwrap();
    assert_eq!(r.prompt, "hi there");
    assert!(r.stream);
    assert_eq!(r.max_tokens, Some(7));
    assert_eq!(r.model, None);
    assert_eq!(r.grpc, Some(GrpcMethod::VllmGenerate));
}

#[test]
fn a_tokenized_generate_request_reads_its_packed_token_ids() {
    // tokenized = 2 { original_text = 1 "ab", input_ids = 2 packed [1, 300] }
    let mut inner = field(1, b"ab");
    inner.extend(field(2, &[1, 0xac, 0x02]));
    let msg = field(2, &inner);
    let r = parse_grpc_request(GrpcMethod::VllmGenerate, &frame(&msg), tokens).unwrap();
    assert_eq!(r.prompt, "<1><300>");
    assert!(!r.stream);
    assert_eq!(r.max_tokens, None);
}

#[test]
fn an_embed_request_needs_its_tokenized_input() {
    let msg = field(2, &field(2, &[5, 6]));
    let r = parse_grpc_request(GrpcMethod::VllmEmbed, &frame(&msg), tokens).unwrap();
    assert_eq!(r.prompt, "<5><6>");
    let e = parse_grpc_request(GrpcMethod::VllmEmbed, &frame(&field(1, b"id")), tokens);
    assert_eq!(
        e.unwrap_err().to_string(),
        "EmbedRequest has no tokenized input (field 2)"
    );
}

#[test]
fn a_vertex_chat_request_is_read_as_the_openai_body_it_carries() {
    let json = br#"{"model":"gemma","messages":[{"role":"user","content":"hello"}],"stream":true,"max_tokens":9}"#;
    let mut http_body = field(1, b"application/json");
    http_body.push(2 << 3 | 2);
    http_body.push(json.len() as u8);
    http_body.extend_from_slice(json);
    let mut msg = field(1, b"projects/p/locations/l/endpoints/e");
    msg.extend(field(2, &http_body));
    let r = parse_grpc_request(GrpcMethod::VertexChatCompletions, &frame(&msg), tokens).unwrap();
    assert_eq!(r.model.as_deref(), Some("gemma"));
    assert_eq!(r.kind, ApiKind::ChatCompletions);
    assert!(r.stream);
    assert_eq!(r.max_tokens, Some(9));
    assert!(r.prompt.contains("hello"));
    assert_eq!(r.grpc, Some(GrpcMethod::VertexChatCompletions));
}

#[test]
fn a_vertex_request_names_what_is_wrong_inside_it() {
    let no_body = field(1, b"projects/p/locations/l/endpoints/e");
    let e = parse_grpc_request(GrpcMethod::VertexRawPredict, &frame(&no_body), tokens);
    assert_eq!(
        e.unwrap_err().to_string(),
        "RawPredictRequest has no http_body (field 2)"
    );
    let bad_json = field(2, &field(2, b"{\"input\":"));
    let e = parse_grpc_request(GrpcMethod::VertexChatCompletions, &frame(&bad_json), tokens)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("ChatCompletionsRequest.http_body.data (OpenAI /chat/completions): "),
        "{e}"
    );
}

#[test]
fn frame_errors_name_the_problem() {
    let err = |b: &[u8]| grpc_payload(b).unwrap_err().to_string();
    assert_eq!(
        err(b"\x00\x00"),
        "invalid gRPC frame: expected a 5-byte header, got 2 bytes"
    );
    assert!(err(b"\x01\x00\x00\x00\x00").starts_with("compressed gRPC messages"));
    assert_eq!(
        err(b"\x00\x00\x00\x00\x09abc"),
        "invalid gRPC frame: the header announces 9 message bytes, only 3 arrived"
    );
    assert_eq!(
        err(b"{\"model\":1}"),
        "invalid gRPC frame: compressed-flag byte is 123, not 0 or 1"
    );
}

#[test]
fn bytes_that_are_not_the_message_are_refused_by_name() {
    // field 3 (text) declared 10 bytes long with 2 present
    let e = parse_grpc_request(
        GrpcMethod::VllmGenerate,
        &frame(&[3 << 3 | 2, 10, b'h', b'i']),
        tokens,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("GenerateRequest is not valid protobuf: "),
        "{e}"
    );
    // text as a varint: the wire type does not match the field's
    let e = parse_grpc_request(GrpcMethod::VllmGenerate, &frame(&[3 << 3, 1]), tokens)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("GenerateRequest is not valid protobuf: "),
        "{e}"
    );
    let e = parse_grpc_request(GrpcMethod::VllmGenerate, &frame(&field(1, b"id")), tokens)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "GenerateRequest has no input: field 2 (tokenized) or 3 (text) is required"
    );
}

/// GenerateResponse { chunk = 1 { prompt_tokens = 2, completion_tokens = 3, cached = 4 } }
fn chunk(prompt: u8, completion: u8, cached: u8) -> Vec<u8> {
    frame(&field(
        1,
        &[2 << 3, prompt, 3 << 3, completion, 4 << 3, cached],
    ))
}

#[test]
fn streamed_generate_responses_report_the_last_usage_even_split_across_chunks() {
    let mut r = GrpcResponse::new(GrpcMethod::VllmGenerate);
    let mut body = chunk(0, 0, 0);
    body.extend(chunk(12, 1, 0));
    body.extend(chunk(12, 5, 8));
    for piece in body.chunks(3) {
        r.feed(piece);
    }
    let u = r.usage().unwrap();
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.cached_tokens()),
        (12, 5, 8)
    );
    let object = r.usage_object().unwrap();
    assert_eq!(object["total_tokens"], 17);
}

#[test]
fn a_complete_message_and_an_embed_response_carry_usage_too() {
    let mut r = GrpcResponse::new(GrpcMethod::VllmGenerate);
    // complete = 2 { finish_reason = 2 "stop", prompt = 3, completion = 4 }
    let mut complete = field(2, b"stop");
    complete.extend([3 << 3, 20, 4 << 3, 6]);
    r.feed(&frame(&field(2, &complete)));
    assert_eq!(r.usage().unwrap().completion_tokens, 6);
    let mut e = GrpcResponse::new(GrpcMethod::VllmEmbed);
    assert_eq!(e.usage(), None);
    e.feed(&frame(&[2 << 3, 4]));
    assert_eq!(e.usage().unwrap().prompt_tokens, 4);
}

#[test]
fn vertex_responses_read_usage_from_the_json_their_http_bodies_carry() {
    let mut r = GrpcResponse::new(GrpcMethod::VertexChatCompletions);
    for data in [
        &b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}],\"usage\":null}\n\n"[..],
        b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n",
    ] {
        let mut msg = field(1, b"text/event-stream");
        msg.push(2 << 3 | 2);
        msg.push(data.len() as u8);
        msg.extend_from_slice(data);
        r.feed(&frame(&msg));
    }
    assert_eq!(r.usage().unwrap().completion_tokens, 2);
}

#[test]
fn compressed_or_garbled_response_messages_are_skipped() {
    let mut r = GrpcResponse::new(GrpcMethod::VllmGenerate);
    let mut compressed = chunk(9, 9, 0);
    compressed[0] = 1;
    r.feed(&compressed);
    r.feed(&frame(&[0xff, 0xff]));
    assert_eq!(r.usage(), None);
    r.feed(&chunk(4, 2, 0));
    assert_eq!(r.usage().unwrap().prompt_tokens, 4);
}
