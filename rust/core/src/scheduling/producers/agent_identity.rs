//! agent-identity (llm-d): a per-session identity from agent session headers, so every turn of
//! an agent session lands in the same flow-control fairness queue. The first non-empty header
//! of `additionalSessionHeaders` (in order), then the built-in ones, becomes the request's
//! fairness id when it names none itself (`x-llm-d-inference-fairness-id` always wins).

use std::sync::Arc;

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;

/// Claude Code, OpenCode, Codex, Codex (legacy), in upstream's order.
pub const SESSION_HEADERS: [&str; 4] = [
    "x-claude-code-session-id",
    "x-session-affinity",
    "session-id",
    "session_id",
];

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct IdentityParams {
    additional_session_headers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AgentIdentity {
    /// Lower-case header names, first match wins.
    headers: Vec<String>,
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: IdentityParams = p.parse()?;
    let mut headers = Vec::new();
    for (i, h) in params.additional_session_headers.iter().enumerate() {
        if h.is_empty() || !h.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(p.error(format_args!(
                "parameters.additionalSessionHeaders[{i}]: '{h}' is not a header name"
            )));
        }
        headers.push(h.to_ascii_lowercase());
    }
    headers.extend(SESSION_HEADERS.iter().map(|h| h.to_string()));
    Ok(Plugin::AgentIdentity(Arc::new(AgentIdentity { headers })))
}

impl AgentIdentity {
    /// The session identity among `headers` (name, value) pairs with lower-case names.
    pub fn identify<'h, I>(&self, headers: I) -> Option<&'h str>
    where
        I: Iterator<Item = (&'h str, &'h str)> + Clone,
    {
        self.headers.iter().find_map(|name| {
            headers
                .clone()
                .find(|(k, v)| k == name && !v.is_empty())
                .map(|(_, v)| v)
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::scheduling::contracts::plugin::Plugin;
    use crate::scheduling::test_pool::built;

    fn identity(params: &str) -> std::sync::Arc<super::AgentIdentity> {
        match built("agent-identity", params) {
            Plugin::AgentIdentity(a) => a,
            _ => panic!("agent-identity builds an identity"),
        }
    }

    #[test]
    fn the_first_non_empty_header_in_priority_order_wins() {
        let a = identity("{}");
        let h = [
            ("session_id", "old"),
            ("x-session-affinity", ""),
            ("session-id", "codex-1"),
        ];
        assert_eq!(a.identify(h.iter().copied()), Some("codex-1"));
        let h = [
            ("session-id", "codex-1"),
            ("x-claude-code-session-id", "cc-7"),
        ];
        assert_eq!(a.identify(h.iter().copied()), Some("cc-7"));
        assert_eq!(a.identify([("x-other", "v")].iter().copied()), None);
    }

    #[test]
    fn additional_headers_come_before_the_built_in_ones() {
        let a = identity(r#"{"additionalSessionHeaders": ["X-My-Agent-Session"]}"#);
        let h = [
            ("x-claude-code-session-id", "cc-7"),
            ("x-my-agent-session", "mine"),
        ];
        assert_eq!(a.identify(h.iter().copied()), Some("mine"));
        let e = crate::scheduling::registry::build(&crate::scheduling::contracts::params::Params {
            name: "a",
            kind: "agent-identity",
            raw: Some(&serde_json::json!({"additionalSessionHeaders": ["bad header"]})),
        })
        .err()
        .unwrap();
        assert!(
            e.0.contains("parameters.additionalSessionHeaders[0]: 'bad header'"),
            "{e}"
        );
    }
}
