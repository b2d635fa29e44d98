//! Request-body parsing: picks an API parser by the request path and extracts what routing needs.
//! One targeted pass over the body (no `serde_json::Value`): known fields are read in place, the
//! prompt text is appended to one buffer as it is met, everything else is skipped unparsed.

use std::borrow::Cow;
use std::ops::Range;

use serde::de::{Deserializer as _, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

mod fields;
mod grpc;
mod prompt;
mod rewrite;
mod usage;

use fields::{Key, Sink, Str, Target};
pub use grpc::{grpc_payload, parse_grpc_request, GrpcMethod, GrpcResponse};
pub use rewrite::{
    replace_model_in_chunk, replace_model_in_chunk_cow, rewrite_model, splice_model,
};
pub use usage::{find_usage, find_usage_object, Usage};

/// Which API a request speaks, chosen by the longest matching suffix of its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKind {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
    AnthropicMessages,
    /// Unknown path: no model is required; the request is routed by load only.
    Passthrough,
}

/// Path suffixes, longest first so `chat/completions` wins over `completions`.
const SUFFIXES: [(&str, ApiKind); 5] = [
    ("chat/completions", ApiKind::ChatCompletions),
    ("completions", ApiKind::Completions),
    ("embeddings", ApiKind::Embeddings),
    ("responses", ApiKind::Responses),
    ("messages", ApiKind::AnthropicMessages),
];

impl ApiKind {
    /// The API named by a request path (`/v1/chat/completions?x=1` → ChatCompletions).
    /// A suffix only counts at a segment boundary, so `/v1/textcompletions` is Passthrough.
    pub fn from_path(path: &str) -> ApiKind {
        let path = path.split(['?', '#']).next().unwrap_or("");
        let path = path.trim_end_matches('/');
        for (suffix, kind) in SUFFIXES {
            if let Some(head) = path.strip_suffix(suffix) {
                if head.is_empty() || head.ends_with('/') {
                    return kind;
                }
            }
        }
        ApiKind::Passthrough
    }

    /// The snake_case name used in Python and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiKind::ChatCompletions => "chat_completions",
            ApiKind::Completions => "completions",
            ApiKind::Embeddings => "embeddings",
            ApiKind::Responses => "responses",
            ApiKind::AnthropicMessages => "anthropic_messages",
            ApiKind::Passthrough => "passthrough",
        }
    }

    /// The field that carries the request's input, required for this API.
    fn input_field(self) -> Option<&'static str> {
        match self {
            ApiKind::ChatCompletions | ApiKind::AnthropicMessages => Some("messages"),
            ApiKind::Completions => Some("prompt"),
            ApiKind::Embeddings | ApiKind::Responses => Some("input"),
            ApiKind::Passthrough => None,
        }
    }
}

/// What the scheduler and the request path need from a request body.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedRequest {
    pub kind: ApiKind,
    pub model: Option<String>,
    pub stream: bool,
    pub max_tokens: Option<u64>,
    pub cache_salt: Option<String>,
    /// The prompt as flat text (chat messages concatenated in order), used for prefix hashing.
    pub prompt: String,
    /// The gRPC method of a protobuf body (vllmgrpc / vertexai parsers); None for HTTP bodies.
    pub grpc: Option<GrpcMethod>,
    /// Where the top-level `"model"` string (quotes included) sits in the body, when the parse
    /// saw it verbatim (no escapes): a model rewrite splices there instead of parsing again.
    pub model_span: Option<Range<usize>>,
}

/// Why a body was refused; each maps to HTTP 400 with this message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("body must be a JSON object")]
    NotAnObject,
    #[error("field '{0}' is required")]
    MissingField(&'static str),
    #[error("field '{field}' must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("body is empty; a JSON object is required")]
    EmptyBody,
    #[error("duplicate field '{0}'")]
    DuplicateField(&'static str),
    /// No configured parser (`requestHandler.parsers`) claims the request path.
    #[error("no parser registered matching path suffix for: {0}")]
    NoParser(String),
    /// A gRPC body (frame or protobuf message) that does not decode; the text names what.
    #[error("{0}")]
    Protobuf(String),
}

const PROMPT_RESERVE_MAX: usize = 256 * 1024;

/// Parse a request body for the API named by `path`.
pub fn parse_request(path: &str, body: &[u8]) -> Result<ParsedRequest, ParseError> {
    let kind = ApiKind::from_path(path);
    if kind == ApiKind::Passthrough {
        return Ok(parse_passthrough(body));
    }
    let text = json_text(body)?;
    let mut sink = Sink::default();
    // The prompt is at most about the body's size: one allocation instead of a doubling series,
    // capped so a body of base64 images does not reserve megabytes for a short prompt.
    sink.buf(Target::Prompt)
        .reserve(body.len().min(PROMPT_RESERVE_MAX));
    let top = run(text, &mut sink, |de, sink| {
        de.deserialize_map(BodyVisitor { kind, sink })
    })?;
    let span = top.model.as_ref().and_then(|m| verbatim_span(text, m));
    let mut parsed = finish(kind, top, sink)?;
    parsed.model_span = span;
    Ok(parsed)
}

/// The byte range of a string value with its quotes, when it was borrowed from `text` as is
/// (a string with escapes is decoded into a copy, whose place in the body is unknown).
fn verbatim_span(text: &str, value: &Str<'_>) -> Option<Range<usize>> {
    let Cow::Borrowed(v) = &value.0 else {
        return None;
    };
    let start = (v.as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
    let span = start.checked_sub(1)?..start + v.len() + 1;
    let quoted = text.as_bytes().get(span.clone())?;
    (quoted.first() == Some(&b'"') && quoted.last() == Some(&b'"')).then_some(span)
}

/// Only the top-level `"model"` string of a JSON body (None when absent or not JSON): the
/// label of a request that is queued or refused before the router parses it. Skips the rest.
pub fn model_of(body: &[u8]) -> Option<String> {
    struct ModelOnly;
    impl<'de> Visitor<'de> for ModelOnly {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut model = None;
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if key == "model" && model.is_none() {
                    model = map.next_value::<Option<String>>()?;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(model)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    de.deserialize_map(ModelOnly).ok().flatten()
}

/// The body as `&str`: checked once here so serde_json can borrow strings without re-checking.
pub(crate) fn json_text(body: &[u8]) -> Result<&str, ParseError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        ParseError::InvalidJson(format!("invalid UTF-8 at byte offset {}", e.valid_up_to()))
    })?;
    if text.trim_ascii_start().is_empty() {
        return Err(ParseError::EmptyBody);
    }
    Ok(text)
}

/// Run one deserialization over `text` and turn serde errors into the field-naming ParseError
/// recorded in `sink` (see `Sink::at`), keeping serde's recursion limit.
pub(crate) fn run<'de, T>(
    text: &'de str,
    sink: &mut Sink,
    f: impl FnOnce(
        &mut serde_json::Deserializer<serde_json::de::StrRead<'de>>,
        &mut Sink,
    ) -> serde_json::Result<T>,
) -> Result<T, ParseError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let result = f(&mut de, sink).and_then(|value| de.end().map(|()| value));
    result.map_err(|e| {
        if let Some(err) = sink.err.take() {
            return err;
        }
        if e.is_data() {
            // A visitor met a JSON type it does not accept: `at` names where it was.
            return match sink.at {
                Some((field, expected)) => ParseError::WrongType { field, expected },
                None => ParseError::NotAnObject,
            };
        }
        ParseError::InvalidJson(e.to_string())
    })
}

/// Top-level fields as read by the single pass; validated in `finish`.
#[derive(Default)]
struct Top<'a> {
    model: Option<Str<'a>>,
    stream: Option<bool>,
    cache_salt: Option<Option<Str<'a>>>,
    max_tokens: Option<&'a RawValue>,
    max_completion_tokens: Option<&'a RawValue>,
    max_output_tokens: Option<&'a RawValue>,
    has_input: bool,
}

struct BodyVisitor<'s> {
    kind: ApiKind,
    sink: &'s mut Sink,
}

impl<'de> Visitor<'de> for BodyVisitor<'_> {
    type Value = Top<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top<'de>, A::Error> {
        let (kind, sink) = (self.kind, self.sink);
        let mut top = Top::default();
        let mut seen = 0u32;
        while let Some(key) = map.next_key::<Key>()? {
            if key != Key::Other {
                sink.first(&mut seen, key, key.name())?;
            }
            match key {
                Key::Model => {
                    sink.at = Some(("model", "a string"));
                    top.model = Some(map.next_value()?);
                }
                Key::Stream => {
                    sink.at = Some(("stream", "a boolean"));
                    top.stream = map.next_value()?;
                }
                Key::CacheSalt => {
                    sink.at = Some(("cache_salt", "a string"));
                    top.cache_salt = Some(map.next_value()?);
                }
                Key::MaxTokens => top.max_tokens = Some(map.next_value()?),
                Key::MaxCompletionTokens => top.max_completion_tokens = Some(map.next_value()?),
                Key::MaxOutputTokens => top.max_output_tokens = Some(map.next_value()?),
                Key::Messages
                    if matches!(kind, ApiKind::ChatCompletions | ApiKind::AnthropicMessages) =>
                {
                    map.next_value_seed(prompt::Messages::chat(sink))?;
                    top.has_input = true;
                }
                Key::Prompt if kind == ApiKind::Completions => {
                    map.next_value_seed(prompt::TextList::new(sink, &prompt::PROMPT))?;
                    top.has_input = true;
                }
                Key::Input if kind == ApiKind::Embeddings => {
                    map.next_value_seed(prompt::TextList::new(sink, &prompt::INPUT))?;
                    top.has_input = true;
                }
                Key::Input if kind == ApiKind::Responses => {
                    map.next_value_seed(prompt::Messages::responses(sink))?;
                    top.has_input = true;
                }
                Key::Instructions if kind == ApiKind::Responses => {
                    map.next_value_seed(prompt::Content::instructions(sink))?;
                }
                Key::System if kind == ApiKind::AnthropicMessages => {
                    map.next_value_seed(prompt::Content::system(sink))?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(top)
    }
}

fn finish(kind: ApiKind, top: Top<'_>, mut sink: Sink) -> Result<ParsedRequest, ParseError> {
    let model = top.model.ok_or(ParseError::MissingField("model"))?;
    if let Some(field) = kind.input_field() {
        if !top.has_input {
            return Err(ParseError::MissingField(field));
        }
    }
    let max_completion_tokens = non_negative(top.max_completion_tokens, "max_completion_tokens")?;
    let max_tokens = non_negative(top.max_tokens, "max_tokens")?;
    let max_output_tokens = non_negative(top.max_output_tokens, "max_output_tokens")?;
    // OpenAI deprecated max_tokens for max_completion_tokens; the newer name wins when both are sent.
    let max_tokens = max_completion_tokens.or(max_tokens).or(max_output_tokens);
    let mut prompt = std::mem::take(sink.buf(Target::Prompt));
    let preamble = sink.buf(Target::Preamble);
    if !preamble.is_empty() {
        prompt.insert_str(0, preamble);
    }
    Ok(ParsedRequest {
        kind,
        model: Some(model.0.into_owned()),
        stream: top.stream.unwrap_or(false),
        max_tokens,
        cache_salt: top.cache_salt.flatten().map(|s| s.0.into_owned()),
        prompt,
        grpc: None,
        model_span: None,
    })
}

/// A token limit from its raw JSON text: read as text so that 1e400 or 2^64 is a clear
/// WrongType rather than a float or a serde overflow message.
fn non_negative(raw: Option<&RawValue>, field: &'static str) -> Result<Option<u64>, ParseError> {
    let Some(raw) = raw else { return Ok(None) };
    let text = raw.get();
    if text == "null" {
        return Ok(None);
    }
    let wrong = ParseError::WrongType {
        field,
        expected: "a non-negative integer",
    };
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(wrong);
    }
    text.parse::<u64>().map(Some).map_err(|_| wrong)
}

/// Unknown APIs: the body is forwarded as is, so nothing here may refuse it.
fn parse_passthrough(body: &[u8]) -> ParsedRequest {
    #[derive(serde::Deserialize)]
    struct Loose<'a> {
        #[serde(borrow)]
        model: Option<&'a RawValue>,
        #[serde(borrow)]
        stream: Option<&'a RawValue>,
    }
    // A derived struct would also accept a JSON array positionally; only objects carry a model.
    let is_object = body.trim_ascii_start().first() == Some(&b'{');
    let loose = is_object
        .then(|| serde_json::from_slice::<Loose>(body).ok())
        .flatten();
    let model = loose
        .as_ref()
        .and_then(|l| l.model)
        .and_then(|m| serde_json::from_str::<String>(m.get()).ok());
    let stream = loose.as_ref().and_then(|l| l.stream).map(RawValue::get) == Some("true");
    ParsedRequest {
        kind: ApiKind::Passthrough,
        model,
        stream,
        max_tokens: None,
        cache_salt: None,
        prompt: String::new(),
        grpc: None,
        model_span: None,
    }
}

#[cfg(test)]
mod tests;
