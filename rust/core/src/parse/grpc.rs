//! gRPC request bodies (vLLM's engine API, Vertex AI's prediction API): the 5-byte gRPC frame is
//! stripped and the protobuf message decoded with prost; the response's frames are read for
//! the token usage the model server reports. Field numbers follow `proto/` (the real APIs').

use prost::Message;

use super::usage::find_usage;
use super::{parse_request, ApiKind, ParseError, ParsedRequest, Usage};

/// Which gRPC method a request calls, for reading its request and response messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcMethod {
    /// `vllm.grpc.engine.VllmEngine/Generate`: GenerateRequest → stream of GenerateResponse.
    VllmGenerate,
    /// `vllm.grpc.engine.VllmEngine/Embed`: EmbedRequest → EmbedResponse.
    VllmEmbed,
    /// `google.cloud.aiplatform.v1beta1.PredictionService/ChatCompletions`: an OpenAI chat body
    /// in `http_body`; the answers are `google.api.HttpBody` messages.
    VertexChatCompletions,
    /// `…PredictionService/RawPredict` and `/StreamRawPredict`: read as OpenAI `/responses`.
    VertexRawPredict,
}

impl GrpcMethod {
    fn message(self) -> &'static str {
        match self {
            GrpcMethod::VllmGenerate => "GenerateRequest",
            GrpcMethod::VllmEmbed => "EmbedRequest",
            GrpcMethod::VertexChatCompletions => "ChatCompletionsRequest",
            GrpcMethod::VertexRawPredict => "RawPredictRequest",
        }
    }
}

const FRAME_HEADER: usize = 5;

/// The first message of a gRPC request body: 1 byte compressed flag, 4 bytes big-endian length.
pub fn grpc_payload(body: &[u8]) -> Result<&[u8], ParseError> {
    let bad = |m: String| ParseError::Protobuf(format!("invalid gRPC frame: {m}"));
    if body.len() < FRAME_HEADER {
        return Err(bad(format!(
            "expected a {FRAME_HEADER}-byte header, got {} bytes",
            body.len()
        )));
    }
    match body[0] {
        0 => {}
        1 => {
            return Err(ParseError::Protobuf(
                "compressed gRPC messages are not supported (send with grpc-encoding identity)"
                    .into(),
            ))
        }
        flag => return Err(bad(format!("compressed-flag byte is {flag}, not 0 or 1"))),
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    let rest = &body[FRAME_HEADER..];
    if rest.len() < len {
        return Err(bad(format!(
            "the header announces {len} message bytes, only {} arrived",
            rest.len()
        )));
    }
    Ok(&rest[..len])
}

// vllm.grpc.engine (proto/vllm_engine.proto): the fields routing reads; prost skips the rest.

#[derive(Clone, PartialEq, Message)]
struct GenerateRequest {
    #[prost(oneof = "generate_request::Input", tags = "2, 3")]
    input: Option<generate_request::Input>,
    #[prost(message, optional, tag = "4")]
    sampling_params: Option<SamplingParams>,
    #[prost(bool, tag = "5")]
    stream: bool,
}

mod generate_request {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Input {
        #[prost(message, tag = "2")]
        Tokenized(super::TokenizedInput),
        #[prost(string, tag = "3")]
        Text(String),
    }
}

#[derive(Clone, PartialEq, Message)]
struct TokenizedInput {
    #[prost(uint32, repeated, tag = "2")]
    input_ids: Vec<u32>,
}

#[derive(Clone, PartialEq, Message)]
struct SamplingParams {
    #[prost(uint32, optional, tag = "8")]
    max_tokens: Option<u32>,
}

#[derive(Clone, PartialEq, Message)]
struct EmbedRequest {
    #[prost(message, optional, tag = "2")]
    tokenized: Option<TokenizedInput>,
}

#[derive(Clone, PartialEq, Message)]
struct GenerateResponse {
    #[prost(oneof = "generate_response::Response", tags = "1, 2")]
    response: Option<generate_response::Response>,
}

mod generate_response {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Response {
        #[prost(message, tag = "1")]
        Chunk(super::GenerateStreamChunk),
        #[prost(message, tag = "2")]
        Complete(super::GenerateComplete),
    }
}

#[derive(Clone, PartialEq, Message)]
struct GenerateStreamChunk {
    #[prost(uint32, tag = "2")]
    prompt_tokens: u32,
    #[prost(uint32, tag = "3")]
    completion_tokens: u32,
    #[prost(uint32, tag = "4")]
    cached_tokens: u32,
}

#[derive(Clone, PartialEq, Message)]
struct GenerateComplete {
    #[prost(uint32, tag = "3")]
    prompt_tokens: u32,
    #[prost(uint32, tag = "4")]
    completion_tokens: u32,
    #[prost(uint32, tag = "5")]
    cached_tokens: u32,
}

#[derive(Clone, PartialEq, Message)]
struct EmbedResponse {
    #[prost(uint32, tag = "2")]
    prompt_tokens: u32,
}

// google.api.HttpBody and the Vertex AI requests that carry one (endpoint = 1, http_body = 2).

#[derive(Clone, PartialEq, Message)]
struct HttpBody {
    #[prost(bytes = "vec", tag = "2")]
    data: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct HttpBodyRequest {
    #[prost(message, optional, tag = "2")]
    http_body: Option<HttpBody>,
}

fn decode<M: Message + Default>(what: &str, bytes: &[u8]) -> Result<M, ParseError> {
    M::decode(bytes).map_err(|e| ParseError::Protobuf(format!("{what} is not valid protobuf: {e}")))
}

/// What routing needs from a gRPC request; `token_text` turns token ids into a prompt.
pub fn parse_grpc_request(
    method: GrpcMethod,
    body: &[u8],
    token_text: fn(&[u32]) -> String,
) -> Result<ParsedRequest, ParseError> {
    let payload = grpc_payload(body)?;
    let what = method.message();
    let mut parsed = match method {
        GrpcMethod::VllmGenerate => {
            let req: GenerateRequest = decode(what, payload)?;
            let prompt = match req.input {
                Some(generate_request::Input::Text(text)) => text,
                Some(generate_request::Input::Tokenized(t)) => token_text(&t.input_ids),
                None => {
                    return Err(ParseError::Protobuf(format!(
                        "{what} has no input: field 2 (tokenized) or 3 (text) is required"
                    )))
                }
            };
            let max_tokens = req.sampling_params.and_then(|s| s.max_tokens);
            vllm(prompt, req.stream, max_tokens.map(u64::from))
        }
        GrpcMethod::VllmEmbed => {
            let req: EmbedRequest = decode(what, payload)?;
            let t = req.tokenized.ok_or_else(|| {
                ParseError::Protobuf(format!("{what} has no tokenized input (field 2)"))
            })?;
            vllm(token_text(&t.input_ids), false, None)
        }
        GrpcMethod::VertexChatCompletions | GrpcMethod::VertexRawPredict => {
            let req: HttpBodyRequest = decode(what, payload)?;
            let http_body = req.http_body.ok_or_else(|| {
                ParseError::Protobuf(format!("{what} has no http_body (field 2)"))
            })?;
            let path = match method {
                GrpcMethod::VertexChatCompletions => "/chat/completions",
                _ => "/responses",
            };
            parse_request(path, &http_body.data).map_err(|e| {
                ParseError::Protobuf(format!("{what}.http_body.data (OpenAI {path}): {e}"))
            })?
        }
    };
    parsed.grpc = Some(method);
    Ok(parsed)
}

/// vLLM's engine API names no model: routing uses the pool's endpoints as they are.
fn vllm(prompt: String, stream: bool, max_tokens: Option<u64>) -> ParsedRequest {
    ParsedRequest {
        kind: ApiKind::Passthrough,
        model: None,
        stream,
        max_tokens,
        cache_salt: None,
        prompt,
        grpc: None,
        model_span: None,
    }
}

/// Reads a gRPC response body as it streams by (frames may be split across chunks) and keeps
/// the usage its messages report. Messages above `MAX_MESSAGE` bytes are skipped unread.
#[derive(Debug)]
pub struct GrpcResponse {
    method: GrpcMethod,
    header: Vec<u8>,
    /// Bytes of the current message still to come.
    remaining: usize,
    message: Vec<u8>,
    skipping: bool,
    usage: Usage,
    seen: bool,
    /// Vertex AI: the end of the JSON its HttpBody messages carried, where the usage is.
    json_tail: Vec<u8>,
}

const MAX_MESSAGE: usize = 4 * 1024 * 1024;
const JSON_TAIL: usize = 2048;

impl GrpcResponse {
    pub fn new(method: GrpcMethod) -> GrpcResponse {
        GrpcResponse {
            method,
            header: Vec::with_capacity(FRAME_HEADER),
            remaining: 0,
            message: Vec::new(),
            skipping: false,
            usage: Usage::default(),
            seen: false,
            json_tail: Vec::new(),
        }
    }

    pub fn feed(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() {
            if self.header.len() < FRAME_HEADER {
                let take = (FRAME_HEADER - self.header.len()).min(chunk.len());
                self.header.extend_from_slice(&chunk[..take]);
                chunk = &chunk[take..];
                if self.header.len() < FRAME_HEADER {
                    return;
                }
                let h = &self.header;
                self.remaining = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
                self.skipping = h[0] != 0 || self.remaining > MAX_MESSAGE;
                self.message.clear();
            }
            let take = self.remaining.min(chunk.len());
            if !self.skipping {
                self.message.extend_from_slice(&chunk[..take]);
            }
            self.remaining -= take;
            chunk = &chunk[take..];
            if self.remaining == 0 {
                if !self.skipping {
                    let message = std::mem::take(&mut self.message);
                    self.read_message(&message);
                    self.message = message;
                }
                self.header.clear();
            }
        }
    }

    fn read_message(&mut self, bytes: &[u8]) {
        let (prompt, completion, cached) = match self.method {
            GrpcMethod::VllmGenerate => match GenerateResponse::decode(bytes)
                .ok()
                .and_then(|r| r.response)
            {
                Some(generate_response::Response::Chunk(c)) => {
                    (c.prompt_tokens, c.completion_tokens, c.cached_tokens)
                }
                Some(generate_response::Response::Complete(c)) => {
                    (c.prompt_tokens, c.completion_tokens, c.cached_tokens)
                }
                None => return,
            },
            GrpcMethod::VllmEmbed => match EmbedResponse::decode(bytes) {
                Ok(r) => (r.prompt_tokens, 0, 0),
                Err(_) => return,
            },
            GrpcMethod::VertexChatCompletions | GrpcMethod::VertexRawPredict => {
                if let Ok(body) = HttpBody::decode(bytes) {
                    let keep = body.data.len().min(JSON_TAIL);
                    let drop = (self.json_tail.len() + keep).saturating_sub(JSON_TAIL);
                    self.json_tail.drain(..drop);
                    self.json_tail
                        .extend_from_slice(&body.data[body.data.len() - keep..]);
                }
                return;
            }
        };
        // As upstream: a message reporting no prompt and no completion tokens changes nothing;
        // each field reported replaces what earlier messages said.
        if prompt == 0 && completion == 0 {
            return;
        }
        self.seen = true;
        if prompt > 0 {
            self.usage.prompt_tokens = u64::from(prompt);
        }
        if completion > 0 {
            self.usage.completion_tokens = u64::from(completion);
        }
        self.usage.prompt_tokens_details = u64::from(cached);
    }

    /// The usage the response reported so far, if any.
    pub fn usage(&self) -> Option<Usage> {
        match self.method {
            GrpcMethod::VertexChatCompletions | GrpcMethod::VertexRawPredict => {
                find_usage(&self.json_tail)
            }
            _ => self.seen.then_some(self.usage),
        }
    }

    /// The usage as an OpenAI `usage` object (for request-attribute-reporter expressions).
    pub fn usage_object(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        if matches!(
            self.method,
            GrpcMethod::VertexChatCompletions | GrpcMethod::VertexRawPredict
        ) {
            return super::find_usage_object(&self.json_tail);
        }
        let u = self.usage()?;
        let value = serde_json::json!({
            "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens,
            "total_tokens": u.prompt_tokens + u.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": u.prompt_tokens_details},
        });
        match value {
            serde_json::Value::Object(map) => Some(map),
            _ => None,
        }
    }
}

#[cfg(test)]
#[path = "grpc_tests.rs"]
mod tests;
