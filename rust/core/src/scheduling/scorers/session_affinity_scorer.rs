//! session-affinity-scorer (llm-d): the endpoint that served the session before scores 1, the
//! rest 0. Strategy `encoded_endpoint_header` (default, stateless): the request carries
//! `x-session-token`, the base64 of that endpoint's name, which the proxy layer set on the
//! previous response from `Decision::session_token`. Strategy `session_id` (stateful): the
//! client sends an opaque id in a header; the scorer binds it to the endpoint picked for it and
//! forgets bindings unused for `evictionTtlSeconds`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::scorer::{Picks, Scorer};
use crate::scheduling::cycle::Cycle;

pub const SESSION_TOKEN_HEADER: &str = "x-session-token";

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct SessionParams {
    strategy: Option<String>,
    profile_name: Option<String>,
    encoded_endpoint_header_config: Option<EncodedHeaderConfig>,
    session_id_config: Option<SessionIdConfig>,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct EncodedHeaderConfig {
    header: Option<String>,
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct SessionIdConfig {
    sources: Vec<Source>,
    eviction_ttl_seconds: f64,
    eviction_sweep_seconds: f64,
}

impl Default for SessionIdConfig {
    fn default() -> Self {
        SessionIdConfig {
            sources: vec![Source {
                header: Some("x-session-id".into()),
                attribute: None,
            }],
            eviction_ttl_seconds: 300.0,
            eviction_sweep_seconds: 10.0,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Source {
    header: Option<String>,
    attribute: Option<String>,
}

/// The encoded-endpoint-header strategy.
pub struct SessionAffinityScorer;

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: SessionParams = p.parse()?;
    if let Some(profile) = &params.profile_name {
        return Err(p.error(format_args!(
            "parameters.profileName: '{profile}': tracking a profile other than the primary is not supported"
        )));
    }
    match params
        .strategy
        .as_deref()
        .unwrap_or("encoded_endpoint_header")
    {
        "encoded_endpoint_header" => {
            let header = params.encoded_endpoint_header_config.and_then(|c| c.header);
            if let Some(h) = header.filter(|h| !h.eq_ignore_ascii_case(SESSION_TOKEN_HEADER)) {
                return Err(p.error(format_args!(
                    "parameters.encodedEndpointHeaderConfig.header: '{h}': only {SESSION_TOKEN_HEADER} is supported"
                )));
            }
            Ok(Plugin::Scorer(Arc::new(SessionAffinityScorer)))
        }
        "session_id" => session_id(p, params.session_id_config.unwrap_or_default()),
        other => Err(p.error(format_args!(
            "parameters.strategy: '{other}' is not encoded_endpoint_header or session_id"
        ))),
    }
}

fn session_id(p: &Params<'_>, c: SessionIdConfig) -> Result<Plugin, ConfigError> {
    let mut headers = Vec::with_capacity(c.sources.len());
    for (i, s) in c.sources.iter().enumerate() {
        match (&s.header, &s.attribute) {
            (Some(h), None) if !h.is_empty() => headers.push(h.to_ascii_lowercase()),
            (None, Some(a)) => {
                return Err(p.error(format_args!(
                    "parameters.sessionIdConfig.sources[{i}].attribute: '{a}': request attributes are not published here"
                )))
            }
            _ => {
                return Err(p.error(format_args!(
                    "parameters.sessionIdConfig.sources[{i}]: set exactly one of header or attribute"
                )))
            }
        }
    }
    if headers.is_empty() {
        return Err(p.error("parameters.sessionIdConfig.sources: at least one source is required"));
    }
    for (key, v) in [
        ("evictionTtlSeconds", c.eviction_ttl_seconds),
        ("evictionSweepSeconds", c.eviction_sweep_seconds),
    ] {
        if !(v.is_finite() && v > 0.0) {
            return Err(p.error(format_args!(
                "parameters.sessionIdConfig.{key}: must be a positive number, got {v}"
            )));
        }
    }
    Ok(Plugin::Scorer(Arc::new(SessionIdScorer {
        headers,
        ttl: Duration::from_secs_f64(c.eviction_ttl_seconds),
        sweep: Duration::from_secs_f64(c.eviction_sweep_seconds),
        state: Mutex::new(Bindings::default()),
    })))
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

/// The session-id strategy: session id -> (endpoint id, last use).
pub struct SessionIdScorer {
    headers: Vec<String>,
    ttl: Duration,
    sweep: Duration,
    state: Mutex<Bindings>,
}

#[derive(Default)]
struct Bindings {
    by_session: HashMap<String, (u64, Instant)>,
    swept: Option<Instant>,
}

impl SessionIdScorer {
    fn session<'c>(&self, cycle: &'c Cycle<'_>) -> Option<&'c str> {
        self.headers.iter().find_map(|h| {
            cycle
                .request
                .header(h)
                .map(str::trim)
                .filter(|v| !v.is_empty())
        })
    }
}

impl Scorer for SessionIdScorer {
    fn score(&self, cycle: &Cycle<'_>, candidates: &[u32], out: &mut [f64]) {
        out.fill(0.0);
        let Some(session) = self.session(cycle) else {
            return;
        };
        let bound = self.state.lock().by_session.get(session).copied();
        let fresh =
            |(_, used): &(u64, Instant)| cycle.now.saturating_duration_since(*used) < self.ttl;
        let Some((id, _)) = bound.filter(fresh) else {
            return;
        };
        for (slot, &c) in out.iter_mut().zip(candidates) {
            if cycle.endpoint(c).info.id == id {
                *slot = 1.0;
            }
        }
    }

    fn picked(&self, cycle: &Cycle<'_>, picks: &Picks) {
        let (Some(session), Some(&primary)) = (self.session(cycle), picks.primary.first()) else {
            return;
        };
        let id = cycle.endpoint(primary).info.id;
        let mut state = self.state.lock();
        state.by_session.insert(session.to_owned(), (id, cycle.now));
        if state
            .swept
            .is_none_or(|t| cycle.now.saturating_duration_since(t) >= self.sweep)
        {
            let (now, ttl) = (cycle.now, self.ttl);
            state
                .by_session
                .retain(|_, (_, used)| now.saturating_duration_since(*used) < ttl);
            state.swept = Some(now);
        }
    }

    fn endpoint_removed(&self, id: u64) {
        self.state
            .lock()
            .by_session
            .retain(|_, (bound, _)| *bound != id);
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
