//! Session affinity shared by session-affinity-scorer (a soft preference) and
//! session-affinity-filter (a hard pin), as upstream's util/sessionaffinity:
//!
//! - `encoded_endpoint_header` (default, stateless): the request carries a header (default
//!   `x-session-token`) holding the standard base64 of the endpoint name that served the session
//!   before; the decision writes that header on the response for the client to send back.
//! - `session_id` (stateful): the client sends an opaque id, read from the first non-empty
//!   source (a header, default `x-session-id`, or an attribute a session-id-producer published);
//!   the id is bound to the endpoint picked for it and forgotten after `evictionTtlSeconds`
//!   unused. A bound session whose endpoint is not among the candidates rebinds to the new pick;
//!   one whose endpoint was a candidate but lost the pick keeps its binding.
//!
//! `profileName` (upstream's, e.g. `prefill` with disaggregation): the token written, or the
//! binding made, names the endpoint that profile picked instead of the primary one; nothing when
//! that profile did not run for the request. The name must be one of the scheduling profiles.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::scorer::Picks;
use crate::scheduling::cycle::Cycle;

pub const SESSION_TOKEN_HEADER: &str = "x-session-token";
pub const SESSION_ID_HEADER: &str = "x-session-id";

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct SessionParams {
    strategy: Option<String>,
    profile_name: Option<String>,
    encoded_endpoint_header_config: EncodedHeaderConfig,
    session_id_config: SessionIdConfig,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct EncodedHeaderConfig {
    header: String,
}

/// Zero or absent values take upstream's defaults (ApplyDefaults).
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct SessionIdConfig {
    sources: Vec<Source>,
    eviction_ttl_seconds: f64,
    eviction_sweep_seconds: f64,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Source {
    header: String,
    attribute: String,
    producer: String,
}

/// Where a session id is read from.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionSource {
    Header(String),
    /// A request attribute by upstream's DataKey string, "DataType/ProducerName".
    Attribute(String),
}

/// One configured session plugin's algorithm.
pub enum Strategy {
    /// The request and response header carrying the encoded endpoint name (lower-case).
    Encoded {
        header: String,
        /// `profileName`: whose pick the response token names (None: the primary's).
        profile: Option<String>,
    },
    SessionId(SessionIds),
}

/// A session plugin's `profileName`, resolved to a position in the scheduler's profile list
/// once the profiles are built.
#[derive(Default)]
pub struct ProfileRef {
    pub name: Option<String>,
    position: OnceLock<usize>,
}

impl ProfileRef {
    pub fn new(name: Option<String>) -> ProfileRef {
        ProfileRef {
            name,
            position: OnceLock::new(),
        }
    }

    /// Resolve the name against the profiles' names (in the scheduler's order).
    pub fn bind(&self, profiles: &[&str]) -> Result<Option<usize>, String> {
        let Some(name) = &self.name else {
            return Ok(None);
        };
        let at = profiles.iter().position(|p| p == name).ok_or_else(|| {
            format!(
                "parameters.profileName: '{name}' is not a scheduling profile (profiles: {})",
                profiles.join(", ")
            )
        })?;
        let _ = self.position.set(at);
        Ok(Some(at))
    }

    /// The endpoint this plugin's profile picked: the primary without a `profileName`.
    pub fn pick(&self, picks: &Picks) -> Option<u32> {
        match (&self.name, self.position.get()) {
            (None, _) => picks.primary.first().copied(),
            (Some(_), Some(&at)) => picks.of_profile(at),
            (Some(_), None) => None,
        }
    }
}

/// Parse the parameters session-affinity-scorer and -filter share.
pub fn parse(p: &Params<'_>) -> Result<Strategy, ConfigError> {
    let params: SessionParams = p.parse()?;
    let profile = params.profile_name.filter(|n| !n.is_empty());
    match params
        .strategy
        .as_deref()
        .unwrap_or("encoded_endpoint_header")
    {
        "encoded_endpoint_header" => Ok(Strategy::Encoded {
            header: normalize_header(&params.encoded_endpoint_header_config.header),
            profile,
        }),
        "session_id" => Ok(Strategy::SessionId(session_ids(
            p,
            params.session_id_config,
            profile,
        )?)),
        other => Err(p.error(format_args!(
            "parameters.strategy: '{other}' is not encoded_endpoint_header or session_id"
        ))),
    }
}

/// Lower-case and trimmed; empty gives `x-session-token` (upstream's NormalizeHeader).
fn normalize_header(name: &str) -> String {
    match name.trim() {
        "" => SESSION_TOKEN_HEADER.to_owned(),
        h => h.to_ascii_lowercase(),
    }
}

fn session_ids(
    p: &Params<'_>,
    c: SessionIdConfig,
    profile: Option<String>,
) -> Result<SessionIds, ConfigError> {
    let mut sources = Vec::with_capacity(c.sources.len().max(1));
    for (i, s) in c.sources.iter().enumerate() {
        sources.push(match (s.header.trim(), s.attribute.trim()) {
            (h, "") if !h.is_empty() => {
                if !s.producer.is_empty() {
                    return Err(p.error(format_args!(
                        "parameters.sessionIdConfig.sources[{i}].producer: only an attribute source names a producer"
                    )));
                }
                SessionSource::Header(h.to_ascii_lowercase())
            }
            ("", a) if !a.is_empty() => {
                SessionSource::Attribute(format!("{a}/{}", s.producer.trim()))
            }
            _ => {
                return Err(p.error(format_args!(
                    "parameters.sessionIdConfig.sources[{i}]: exactly one of header or attribute must be set"
                )))
            }
        });
    }
    if sources.is_empty() {
        sources.push(SessionSource::Header(SESSION_ID_HEADER.to_owned()));
    }
    let mut seconds = [
        ("evictionTtlSeconds", c.eviction_ttl_seconds, 300.0),
        ("evictionSweepSeconds", c.eviction_sweep_seconds, 10.0),
    ];
    for (key, v, default) in &mut seconds {
        if *v == 0.0 {
            *v = *default;
        } else if !(v.is_finite() && *v > 0.0) {
            return Err(p.error(format_args!(
                "parameters.sessionIdConfig.{key}: must be a positive number, got {v}"
            )));
        }
    }
    Ok(SessionIds {
        sources,
        ttl: Duration::from_secs_f64(seconds[0].1),
        sweep: Duration::from_secs_f64(seconds[1].1),
        state: Mutex::new(Bindings::default()),
        profile: ProfileRef::new(profile),
    })
}

/// The session_id strategy's state: session id -> (endpoint id, last use).
pub struct SessionIds {
    pub sources: Vec<SessionSource>,
    ttl: Duration,
    sweep: Duration,
    state: Mutex<Bindings>,
    /// `profileName`: whose pick a session is bound to.
    pub profile: ProfileRef,
}

#[derive(Default)]
struct Bindings {
    by_session: HashMap<String, (u64, Instant)>,
    swept: Option<Instant>,
}

impl SessionIds {
    /// The request's session id: the first source with a non-empty value.
    pub fn session<'c>(&self, cycle: &'c Cycle<'_>) -> Option<&'c str> {
        self.sources.iter().find_map(|s| {
            match s {
                SessionSource::Header(h) => cycle.request.header(h),
                SessionSource::Attribute(key) => cycle.request.attribute(key),
            }
            .map(str::trim)
            .filter(|v| !v.is_empty())
        })
    }

    /// The endpoint id the session is bound to, if the binding is still fresh.
    pub fn bound(&self, cycle: &Cycle<'_>, session: &str) -> Option<u64> {
        let (id, used) = self.state.lock().by_session.get(session).copied()?;
        (cycle.now.saturating_duration_since(used) < self.ttl).then_some(id)
    }

    /// The bound endpoint's position among `candidates`, when the session has one there. A
    /// session bound to an endpoint that is not a candidate is noted in the cycle, so that
    /// `commit` moves it to this cycle's pick.
    pub fn bound_candidate(&self, cycle: &Cycle<'_>, candidates: &[u32]) -> Option<usize> {
        let id = self.session(cycle).and_then(|s| self.bound(cycle, s))?;
        let at = candidates
            .iter()
            .position(|&c| cycle.endpoint(c).info.id == id);
        if at.is_none() {
            cycle.state.borrow_mut().sessions_moved.push(self.key());
        }
        at
    }

    fn key(&self) -> usize {
        self as *const SessionIds as usize
    }

    /// The cycle picked: bind a new session to the pick (of its profile) and refresh a kept one;
    /// a session moves to the pick only when its endpoint was not a candidate (not when it
    /// merely lost).
    pub fn commit(&self, cycle: &Cycle<'_>, picks: &Picks) {
        let (Some(session), Some(picked)) = (self.session(cycle), self.profile.pick(picks)) else {
            return;
        };
        let moved = cycle.state.borrow().sessions_moved.contains(&self.key());
        let id = cycle.endpoint(picked).info.id;
        let mut state = self.state.lock();
        let (ttl, now) = (self.ttl, cycle.now);
        match state.by_session.get_mut(session) {
            Some(b) if now.saturating_duration_since(b.1) < ttl => {
                if b.0 == id || moved {
                    *b = (id, now);
                }
            }
            _ => {
                state.by_session.insert(session.to_owned(), (id, now));
            }
        }
        if state
            .swept
            .is_none_or(|t| now.saturating_duration_since(t) >= self.sweep)
        {
            state
                .by_session
                .retain(|_, (_, used)| now.saturating_duration_since(*used) < ttl);
            state.swept = Some(now);
        }
    }

    pub fn endpoint_removed(&self, id: u64) {
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

/// Whether `token` encodes `name` (compared without allocating when the lengths differ).
pub fn token_matches(token: &str, name: &str) -> bool {
    !token.is_empty() && token.len() == name.len().div_ceil(3) * 4 && token == session_token(name)
}

/// The candidate a session token names, by position in `candidates`.
pub fn token_candidate(cycle: &Cycle<'_>, header: &str, candidates: &[u32]) -> Option<usize> {
    let token = cycle.request.header(header)?.trim();
    candidates
        .iter()
        .position(|&c| token_matches(token, &cycle.endpoint(c).info.name))
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
