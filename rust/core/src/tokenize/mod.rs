//! In-process tokenization for the token-producer: a HuggingFace `tokenizer.json` (and, for
//! chat requests, the chat template in `tokenizer_config.json` beside it) loaded from a local
//! file or model directory, turning a request body into the token ids the model server would
//! compute — the same ids vLLM's render endpoints return.

mod chat_template;
mod pieces;
mod render;

use std::path::{Path, PathBuf};

use chat_template::ChatTemplate;
use pieces::PieceCache;
pub use render::RenderClient;

/// Where a token-producer gets token ids: in-process from a tokenizer.json, or from the model
/// server's render API.
pub enum TokenSource {
    Local(Box<Tokenizer>),
    Render(RenderClient),
}

/// A request's token ids computed before its scheduling cycle, or why they could not be.
pub type PreTokenized = Result<Vec<u32>, TokenizeError>;

impl TokenSource {
    /// True when tokenizing costs a network round trip (the render API): callers then do it
    /// before the scheduling cycle, off the routing thread, and hand the ids in.
    pub fn is_remote(&self) -> bool {
        matches!(self, TokenSource::Render(_))
    }

    /// How long one remote call may take in all (connect, send, answer); None when local.
    pub fn call_timeout(&self) -> Option<std::time::Duration> {
        match self {
            TokenSource::Local(_) => None,
            TokenSource::Render(r) => Some(r.timeout() * 3),
        }
    }

    /// The token ids of a request body sent to `path` (chat when it ends in chat/completions).
    pub fn tokens(&self, path: &str, body: &[u8]) -> Result<Vec<u32>, TokenizeError> {
        let chat = path.trim_end_matches('/').ends_with("chat/completions");
        match self {
            TokenSource::Local(t) => t.encode_body(body),
            TokenSource::Render(r) => r.tokens(chat, body),
        }
    }
}

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    chat: Option<ChatTemplate>,
    /// Rendered chats are encoded piece by piece, repeated pieces remembered.
    pieces: Option<PieceCache>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tokenizer: {0}")]
pub struct TokenizeError(pub String);

fn err(msg: impl Into<String>) -> TokenizeError {
    TokenizeError(msg.into())
}

/// A special token in `tokenizer_config.json`: a string, or an object with `content`.
fn special_token(config: &serde_json::Value, name: &str) -> String {
    match &config[name] {
        serde_json::Value::String(s) => s.clone(),
        v => v["content"].as_str().unwrap_or_default().to_owned(),
    }
}

impl Tokenizer {
    /// `path`: a `tokenizer.json`, or a model directory holding one (and `tokenizer_config.json`).
    pub fn load(path: &Path) -> Result<Self, TokenizeError> {
        let (file, dir): (PathBuf, PathBuf) = if path.is_dir() {
            (path.join("tokenizer.json"), path.to_owned())
        } else {
            (
                path.to_owned(),
                path.parent().unwrap_or(Path::new(".")).to_owned(),
            )
        };
        let inner = tokenizers::Tokenizer::from_file(&file)
            .map_err(|e| err(format!("{}: {e}", file.display())))?;
        let config_path = dir.join("tokenizer_config.json");
        let chat = match std::fs::read(&config_path) {
            Ok(bytes) => {
                let config: serde_json::Value = serde_json::from_slice(&bytes)
                    .map_err(|e| err(format!("{}: {e}", config_path.display())))?;
                match config["chat_template"].as_str() {
                    Some(src) => Some(
                        ChatTemplate::new(
                            src,
                            special_token(&config, "bos_token"),
                            special_token(&config, "eos_token"),
                        )
                        .map_err(|e| err(format!("{}: {e}", config_path.display())))?,
                    ),
                    None => None,
                }
            }
            Err(_) => None,
        };
        let pieces = PieceCache::new(&inner);
        Ok(Tokenizer {
            inner,
            chat,
            pieces,
        })
    }

    /// A completion prompt's ids, special tokens added as the model server does.
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>, TokenizeError> {
        self.encode(prompt, true)
    }

    /// A chat's ids: the template rendered, then encoded without adding special tokens again.
    pub fn encode_chat(
        &self,
        messages: &serde_json::Value,
        add_generation_prompt: bool,
        tools: Option<&serde_json::Value>,
    ) -> Result<Vec<u32>, TokenizeError> {
        let chat = self
            .chat
            .as_ref()
            .ok_or_else(|| err("chat request, but tokenizer_config.json has no chat_template"))?;
        let text = chat
            .render(messages, add_generation_prompt, tools)
            .map_err(err)?;
        self.encode(&text, false)
    }

    fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>, TokenizeError> {
        // A post-processor may add tokens around the whole text: pieces only without one.
        match &self.pieces {
            Some(pieces) if !special => {
                pieces.encode(text, |piece| self.encode_whole(piece, false))
            }
            _ => self.encode_whole(text, special),
        }
    }

    fn encode_whole(&self, text: &str, special: bool) -> Result<Vec<u32>, TokenizeError> {
        Ok(self
            .inner
            .encode_fast(text, special)
            .map_err(|e| err(e.to_string()))?
            .get_ids()
            .to_vec())
    }

    /// The token ids of an OpenAI request body: `messages` (chat, honouring
    /// `add_generation_prompt`, default true) or `prompt` (a string, or the first of a list).
    pub fn encode_body(&self, body: &[u8]) -> Result<Vec<u32>, TokenizeError> {
        let v: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| err(format!("body: {e}")))?;
        if let Some(messages) = v.get("messages") {
            let add = v["add_generation_prompt"].as_bool().unwrap_or(true);
            return self.encode_chat(messages, add, v.get("tools"));
        }
        match &v["prompt"] {
            serde_json::Value::String(p) => self.encode_prompt(p),
            serde_json::Value::Array(ps) => match ps.first() {
                Some(serde_json::Value::String(p)) => self.encode_prompt(p),
                _ => Err(err("body.prompt: expected a string or a list of strings")),
            },
            _ => Err(err("body: neither 'messages' nor 'prompt' to tokenize")),
        }
    }
}
