//! `requestHandler.parsers` (upstream's parser plugins): the parser that reads a request is the
//! one claiming the longest suffix of its path; a parser that claims no path (passthrough) takes
//! whatever is left, and parsers listed after it are never reached. An explicit list gains no
//! fallback, so a path no listed parser claims is refused (400), as upstream does.
//! The gRPC parsers claim `package.Service/Method` paths (`vllm.grpc.engine.VllmEngine/Generate`,
//! `PredictionService/ChatCompletions`), which also match after a package's `.`.

use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::parse::{self, ApiKind, GrpcMethod, ParseError, ParsedRequest};
use crate::scheduling::config::ConfigError;
use crate::scheduling::scorers::prefix_cache_scorer::BYTES_PER_TOKEN;
use crate::stats::{plugin_timing, PluginTiming};

/// Upstream's list when none is configured: a path none of the first three claims is forwarded.
pub const DEFAULT_PARSERS: [&str; 4] = [
    "openai-parser",
    "anthropic-parser",
    "vllmhttp-parser",
    "passthrough-parser",
];

/// How a parser reads a body.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Reader {
    /// The OpenAI/Anthropic JSON parser; it knows each API by path.
    Api,
    /// vLLM's `/inference/v1/generate`: pre-tokenized `token_ids`.
    VllmGenerate,
    /// SGLang's native `/generate`: pre-tokenized `input_ids`.
    SglangGenerate,
    /// vLLM's engine gRPC API: GenerateRequest / EmbedRequest protobuf.
    VllmGrpc,
    /// Vertex AI's gRPC prediction API: an OpenAI JSON body inside `http_body`.
    VertexAi,
    /// The body is not read: routing uses backend state only.
    Passthrough,
}

const VLLM_GENERATE: &str = "vllm.grpc.engine.VllmEngine/Generate";
const VLLM_EMBED: &str = "vllm.grpc.engine.VllmEngine/Embed";
const VERTEX_CHAT: &str = "PredictionService/ChatCompletions";
const VERTEX_STREAM_RAW: &str = "PredictionService/StreamRawPredict";
const VERTEX_RAW: &str = "PredictionService/RawPredict";

struct ParserType {
    kind: &'static str,
    claims: &'static [&'static str],
    reader: Reader,
}

const TYPES: [ParserType; 7] = [
    ParserType {
        kind: "openai-parser",
        claims: &[
            "chat/completions",
            "completions",
            "embeddings",
            "responses",
            "conversations",
            "chat/completions/render",
            "completions/render",
            "images/generations",
        ],
        reader: Reader::Api,
    },
    ParserType {
        kind: "anthropic-parser",
        claims: &["messages", "messages/count_tokens"],
        reader: Reader::Api,
    },
    ParserType {
        kind: "vllmhttp-parser",
        claims: &["inference/v1/generate"],
        reader: Reader::VllmGenerate,
    },
    ParserType {
        kind: "sglanghttp-parser",
        claims: &["generate"],
        reader: Reader::SglangGenerate,
    },
    ParserType {
        kind: "vllmgrpc-parser",
        claims: &[VLLM_GENERATE, VLLM_EMBED],
        reader: Reader::VllmGrpc,
    },
    ParserType {
        kind: "vertexai-parser",
        claims: &[VERTEX_CHAT, VERTEX_STREAM_RAW, VERTEX_RAW],
        reader: Reader::VertexAi,
    },
    ParserType {
        kind: "passthrough-parser",
        claims: &[],
        reader: Reader::Passthrough,
    },
];

/// The parser types this build can run, for config validation.
pub fn known_parsers() -> impl Iterator<Item = &'static str> {
    TYPES.iter().map(|t| t.kind)
}

/// The configured parsers, resolved once.
pub struct Parsers {
    claimed: Vec<&'static ParserType>,
    fallback: Option<&'static ParserType>,
    /// Per-call durations (upstream's RequestParsing plugin_duration_seconds), by parser type.
    timings: Vec<(&'static str, Arc<PluginTiming>)>,
}

impl Parsers {
    /// `kinds` in configured order; duplicates of a type count once, as upstream.
    pub fn new<'a>(kinds: impl IntoIterator<Item = &'a str>) -> Result<Parsers, ConfigError> {
        let mut parsers = Parsers {
            claimed: Vec::new(),
            fallback: None,
            timings: Vec::new(),
        };
        for kind in kinds {
            let t = TYPES.iter().find(|t| t.kind == kind).ok_or_else(|| {
                let known: Vec<_> = known_parsers().collect();
                ConfigError(format!(
                    "parsers: unknown parser type '{kind}' (known: {})",
                    known.join(", ")
                ))
            })?;
            if t.claims.is_empty() {
                parsers.fallback = Some(t);
                break;
            }
            if !parsers.claimed.iter().any(|c| c.kind == t.kind) {
                parsers.claimed.push(t);
            }
        }
        parsers.timings = (parsers.claimed.iter().chain(parsers.fallback.iter()))
            .map(|t| (t.kind, plugin_timing("RequestParsing", t.kind, t.kind)))
            .collect();
        Ok(parsers)
    }

    pub fn defaults() -> Parsers {
        Parsers::new(DEFAULT_PARSERS).expect("the default parsers are known")
    }

    /// The parser types in resolution order, the fallback (if any) last.
    pub fn kinds(&self) -> Vec<&'static str> {
        self.claimed
            .iter()
            .chain(self.fallback.iter())
            .map(|t| t.kind)
            .collect()
    }

    /// The parser type that reads `path`, or None when no configured parser claims it.
    #[cfg(test)]
    pub fn resolve(&self, path: &str) -> Option<&'static str> {
        self.pick(path).map(|t| t.kind)
    }

    fn pick(&self, path: &str) -> Option<&'static ParserType> {
        let path = path.split(['?', '#']).next().unwrap_or("");
        let path = path.trim_end_matches('/');
        let mut best: Option<(&'static ParserType, usize)> = None;
        for &t in &self.claimed {
            let grpc = matches!(t.reader, Reader::VllmGrpc | Reader::VertexAi);
            for suffix in t.claims {
                if claims(path, suffix, grpc) && best.is_none_or(|(_, len)| suffix.len() > len) {
                    best = Some((t, suffix.len()));
                }
            }
        }
        best.map(|(t, _)| t).or(self.fallback)
    }

    pub fn parse(&self, path: &str, body: &[u8]) -> Result<ParsedRequest, ParseError> {
        let t = self
            .pick(path)
            .ok_or_else(|| ParseError::NoParser(path.to_owned()))?;
        let started = Instant::now();
        let parsed = Self::read(t, path, body);
        if let Some((_, timing)) = self.timings.iter().find(|(k, _)| std::ptr::eq(*k, t.kind)) {
            timing.duration.observe_duration(started.elapsed());
        }
        parsed
    }

    fn read(t: &ParserType, path: &str, body: &[u8]) -> Result<ParsedRequest, ParseError> {
        match t.reader {
            Reader::Api => parse::parse_request(path, body),
            Reader::VllmGenerate => generate(body, "token_ids", Tokens::Vllm),
            Reader::SglangGenerate => generate(body, "input_ids", Tokens::Sglang),
            Reader::VllmGrpc | Reader::VertexAi => {
                parse::parse_grpc_request(grpc_method(path), body, token_text)
            }
            Reader::Passthrough => Ok(ParsedRequest {
                kind: ApiKind::Passthrough,
                model: None,
                stream: false,
                max_tokens: None,
                cache_salt: None,
                prompt: String::new(),
                grpc: None,
                model_span: None,
            }),
        }
    }
}

/// A suffix counts only at a path-segment boundary (`/v1/textcompletions` is not `completions`);
/// for a gRPC method also after the package's dot (`/google.cloud.aiplatform.v1beta1.` + claim).
fn claims(path: &str, suffix: &str, grpc: bool) -> bool {
    path.strip_suffix(suffix)
        .is_some_and(|head| head.is_empty() || head.ends_with('/') || (grpc && head.ends_with('.')))
}

/// The method a gRPC parser's claimed path names (the path is one its parser claims).
fn grpc_method(path: &str) -> GrpcMethod {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let path = path.trim_end_matches('/');
    if path.ends_with(VLLM_GENERATE) {
        GrpcMethod::VllmGenerate
    } else if path.ends_with(VLLM_EMBED) {
        GrpcMethod::VllmEmbed
    } else if path.ends_with(VERTEX_CHAT) {
        GrpcMethod::VertexChatCompletions
    } else {
        GrpcMethod::VertexRawPredict
    }
}

#[derive(Clone, Copy)]
enum Tokens {
    Vllm,
    Sglang,
}

#[derive(Deserialize)]
struct GenerateBody<'a> {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default, borrow)]
    token_ids: Option<&'a RawValue>,
    #[serde(default, borrow)]
    input_ids: Option<&'a RawValue>,
    #[serde(default)]
    sampling_params: Option<SamplingParams>,
    /// SGLang's cache salt.
    #[serde(default)]
    extra_key: Option<String>,
    #[serde(default)]
    cache_salt: Option<String>,
}

#[derive(Deserialize, Default)]
struct SamplingParams {
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_new_tokens: Option<u64>,
}

/// A pre-tokenized generate request. The token ids become the prompt for prefix hashing, each as
/// `BYTES_PER_TOKEN` ASCII characters, so a cache block holds exactly its tokens.
fn generate(body: &[u8], field: &'static str, tokens: Tokens) -> Result<ParsedRequest, ParseError> {
    let text = parse::json_text(body)?;
    if !text.trim_ascii_start().starts_with('{') {
        return Err(ParseError::NotAnObject);
    }
    let b: GenerateBody<'_> =
        serde_json::from_str(text).map_err(|e| ParseError::InvalidJson(e.to_string()))?;
    let raw = match tokens {
        Tokens::Vllm => b.token_ids,
        Tokens::Sglang => b.input_ids,
    }
    .filter(|r| r.get() != "null")
    .ok_or(ParseError::MissingField(field))?;
    let ids: Vec<u32> = serde_json::from_str(raw.get()).map_err(|_| ParseError::WrongType {
        field,
        expected: "a non-empty array of token ids",
    })?;
    if ids.is_empty() {
        return Err(ParseError::WrongType {
            field,
            expected: "a non-empty array of token ids",
        });
    }
    let sampling = b.sampling_params.unwrap_or_default();
    let max_tokens = match tokens {
        Tokens::Vllm => sampling.max_tokens,
        Tokens::Sglang => sampling.max_new_tokens,
    };
    Ok(ParsedRequest {
        kind: ApiKind::Passthrough,
        model: b.model,
        stream: b.stream.unwrap_or(false),
        max_tokens,
        cache_salt: b.extra_key.or(b.cache_salt),
        prompt: token_text(&ids),
        grpc: None,
        model_span: None,
    })
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Each id as four base-64 digits of its low 24 bits (vocabularies are far below 2^24).
fn token_text(ids: &[u32]) -> String {
    let mut out = String::with_capacity(ids.len() * BYTES_PER_TOKEN);
    for &id in ids {
        for shift in [18, 12, 6, 0] {
            out.push(ALPHABET[((id >> shift) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
#[path = "request_parsers_tests.rs"]
mod tests;
