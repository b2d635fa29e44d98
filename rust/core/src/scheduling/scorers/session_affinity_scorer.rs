//! session-affinity-scorer (llm-d): a request carrying `x-session-token` (the base64 of the
//! endpoint name that served the session before) scores 1 on that endpoint, 0 elsewhere.
//! The proxy layer sets the token on responses from `Decision::session_token`.

use std::sync::Arc;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::{NoParams, Params};
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::scorer::Scorer;
use crate::scheduling::cycle::Cycle;

pub const SESSION_TOKEN_HEADER: &str = "x-session-token";

pub struct SessionAffinityScorer;

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    p.parse::<NoParams>()?;
    Ok(Plugin::Scorer(Arc::new(SessionAffinityScorer)))
}

impl Scorer for SessionAffinityScorer {
    fn score(&self, cycle: &Cycle<'_>, candidates: &[u32], out: &mut [f64]) {
        let token = cycle.request.header(SESSION_TOKEN_HEADER).unwrap_or("");
        for (slot, &c) in out.iter_mut().zip(candidates) {
            let name = &cycle.endpoint(c).info.name;
            *slot = if !token.is_empty() && token_matches(token, name) {
                1.0
            } else {
                0.0
            };
        }
    }
}

/// The session token for an endpoint: standard base64 (padded) of its name.
pub fn session_token(name: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = name.as_bytes();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn token_matches(token: &str, name: &str) -> bool {
    // Compare without allocating when the lengths already differ.
    token.len() == name.len().div_ceil(3) * 4 && token == session_token(name)
}

#[cfg(test)]
mod tests {
    use super::session_token;

    #[test]
    fn tokens_are_padded_standard_base64() {
        assert_eq!(session_token("pod-a"), "cG9kLWE=");
        assert_eq!(session_token("ns/pod"), "bnMvcG9k");
        assert_eq!(session_token("ab"), "YWI=");
    }
}
