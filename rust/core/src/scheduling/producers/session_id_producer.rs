//! session-id-producer (llm-d): reads a session id from a request header (`headerName`) or a
//! cookie of the `cookie` header (`cookieName`) and publishes it as the request attribute
//! `SessionIDDataKey/<plugin name>`, which session-affinity plugins read through a source
//! `{attribute: SessionIDDataKey, producer: <plugin name>}`. Absent or empty: nothing published.

use std::sync::Arc;

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;

/// Upstream's data type name of the session id attribute.
pub const SESSION_ID_ATTRIBUTE: &str = "SessionIDDataKey";

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct ProducerParams {
    header_name: String,
    cookie_name: String,
}

#[derive(Debug)]
enum From {
    Header(String),
    Cookie(String),
}

#[derive(Debug)]
pub struct SessionIdProducer {
    /// The attribute key it publishes: "SessionIDDataKey/<plugin name>".
    pub key: String,
    from: From,
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: ProducerParams = p.parse()?;
    let (header, cookie) = (params.header_name.trim(), params.cookie_name.trim());
    let from = match (header, cookie) {
        (h, "") if !h.is_empty() => From::Header(h.to_ascii_lowercase()),
        ("", c) if !c.is_empty() => From::Cookie(c.to_owned()),
        ("", "") => {
            return Err(p.error(
                "parameters: exactly one of headerName or cookieName must be set (neither is)",
            ))
        }
        _ => {
            return Err(p.error(
                "parameters: exactly one of headerName or cookieName must be set, not both",
            ))
        }
    };
    Ok(Plugin::SessionIdProducer(Arc::new(SessionIdProducer {
        key: format!("{SESSION_ID_ATTRIBUTE}/{}", p.name),
        from,
    })))
}

impl SessionIdProducer {
    /// The request's session id from its headers (names lower-case), trimmed; None when absent.
    pub fn produce(&self, headers: &[(String, String)]) -> Option<String> {
        let find = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let id = match &self.from {
            From::Header(h) => find(h)?,
            From::Cookie(c) => cookie(find("cookie")?, c)?,
        }
        .trim();
        (!id.is_empty()).then(|| id.to_owned())
    }
}

/// The value of cookie `name` in a `cookie` header ("a=1; b=2").
fn cookie<'h>(header: &'h str, name: &str) -> Option<&'h str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(params: &str) -> Result<Arc<SessionIdProducer>, ConfigError> {
        let raw: serde_json::Value = serde_json::from_str(params).unwrap();
        match factory(&Params {
            name: "sid",
            kind: "session-id-producer",
            raw: Some(&raw),
        })? {
            Plugin::SessionIdProducer(p) => Ok(p),
            _ => unreachable!(),
        }
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn reads_the_named_header_or_cookie() {
        let p = build(r#"{"headerName": "X-Session-Id"}"#).unwrap();
        assert_eq!(p.key, "SessionIDDataKey/sid");
        assert_eq!(
            p.produce(&h(&[("x-session-id", " abc ")])).as_deref(),
            Some("abc")
        );
        assert_eq!(p.produce(&h(&[("x-session-id", "  ")])), None);
        assert_eq!(p.produce(&h(&[])), None);
        let p = build(r#"{"cookieName": "llm-d-session"}"#).unwrap();
        let cookies = h(&[("cookie", "theme=dark; llm-d-session=s-42; x=1")]);
        assert_eq!(p.produce(&cookies).as_deref(), Some("s-42"));
        assert_eq!(p.produce(&h(&[("cookie", "theme=dark")])), None);
    }

    #[test]
    fn exactly_one_source_is_required() {
        for params in [
            "{}",
            r#"{"headerName": "a", "cookieName": "b"}"#,
            r#"{"headerName": " "}"#,
        ] {
            let e = build(params).unwrap_err();
            assert!(
                e.0.contains("exactly one of headerName or cookieName"),
                "{e}"
            );
        }
        assert!(build(r#"{"header": "a"}"#)
            .unwrap_err()
            .0
            .contains("header"));
    }
}
