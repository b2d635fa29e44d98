//! token-producer: turns the request into the token ids the model server will compute, for
//! the precise-prefix-cache-producer's token-level block keys. Backends as upstream's: `vllm`
//! (or `modelName` alone) tokenizes through the model server's render API; sluicegate adds
//! `local`, in-process from a HuggingFace tokenizer.json or model directory (no network round
//! trip per request). With neither, upstream's `estimate` backend: sluicegate's byte scheme.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::producers::precise_prefix_params::parse_duration;
use crate::tokenize::{RenderClient, TokenSource, Tokenizer};

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct VllmParams {
    url: String,
    timeout: String,
    /// Multimodal requests' timeout upstream; accepted, text-only here.
    mm_timeout: String,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct LocalParams {
    /// A tokenizer.json, or a model directory with tokenizer.json and tokenizer_config.json.
    path: String,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct TokenParams {
    model_name: String,
    vllm: Option<VllmParams>,
    local: Option<LocalParams>,
    /// Upstream's tokenizer-free estimate tuning: accepted (the byte scheme needs none).
    estimate: Option<serde_json::Value>,
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: TokenParams = p.parse()?;
    let source = if let Some(local) = &params.local {
        if local.path.is_empty() {
            return Err(p.error("parameters.local.path: required"));
        }
        TokenSource::Local(Box::new(
            Tokenizer::load(Path::new(&local.path))
                .map_err(|e| p.error(format_args!("parameters.local.path: {e}")))?,
        ))
    } else if params.vllm.is_some() || !params.model_name.is_empty() {
        let vllm = params.vllm.unwrap_or_default();
        if params.model_name.is_empty() {
            return Err(p.error("parameters.modelName: required with the vllm backend"));
        }
        let url = if vllm.url.is_empty() {
            "http://localhost:8000"
        } else {
            &vllm.url
        };
        let timeout = if vllm.timeout.is_empty() {
            Duration::from_secs(5)
        } else {
            parse_duration(&vllm.timeout).ok_or_else(|| {
                p.error(format_args!(
                    "parameters.vllm.timeout: {:?} is not a duration",
                    vllm.timeout
                ))
            })?
        };
        TokenSource::Render(
            RenderClient::new(url, &params.model_name, timeout)
                .map_err(|e| p.error(format_args!("parameters.{e}")))?,
        )
    } else {
        return Ok(Plugin::Tokens(None));
    };
    Ok(Plugin::Tokens(Some(Arc::new(source))))
}
