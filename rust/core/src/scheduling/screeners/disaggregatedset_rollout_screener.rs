//! disaggregatedset-rollout-screener (llm-d): keeps a request's prefill and decode picks on one
//! revision of a DisaggregatedSet during a rollout.
//!
//! - Revision gating (`sum`, `max-role`): among the ready endpoints `scope.labelSelector`
//!   selects, a revision (`revisionLabelKey`) serves only once every role of
//!   `requireRoles.values` (by `roleLabelKey`) has an endpoint. Without a strict header one
//!   covered revision is drawn at random, weighted by its endpoints of every required role
//!   (`sum`) or of the role with the most endpoints over all covered revisions (`max-role`, ties
//!   to the first listed), and only its endpoints go on to the profiles. With a strict header
//!   the covered revisions stay and the header decides. `disabled` skips all this.
//! - Header selectors: a `strict` selector whose request header is set keeps only endpoints
//!   whose `labelKey` equals it; `prefer` only stamps (a header-label-affinity-scorer applies
//!   the preference). Every selector stamps its header on the response from the picked
//!   endpoint's label.
//! - Fail closed: no covered revision, or a strict header matching nothing, is a 503.
//!
//! Ready endpoints are this pool's endpoints (the store holds ready ones), so the counts come
//! from discovery rather than from a separate Pod watch.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::screener::Screener;
use crate::scheduling::cycle::Cycle;

pub const DEFAULT_REVISION_LABEL: &str = "disaggregatedset.x-k8s.io/revision";
pub const DEFAULT_ROLE_LABEL: &str = "disaggregatedset.x-k8s.io/role";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Config {
    #[serde(default)]
    scope: Option<Scope>,
    #[serde(default)]
    header_selectors: Vec<HeaderSelector>,
    #[serde(default)]
    revision_gating: Option<RevisionGating>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Scope {
    #[serde(default)]
    label_selector: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct HeaderSelector {
    #[serde(default)]
    name: String,
    #[serde(default)]
    header_name: String,
    #[serde(default)]
    label_key: String,
    #[serde(default)]
    mode: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RevisionGating {
    #[serde(default)]
    revision_label_key: String,
    #[serde(default)]
    role_label_key: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    require_roles: Option<RequireRoles>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequireRoles {
    #[serde(default)]
    values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Gating {
    Sum,
    MaxRole,
}

/// One term of a Kubernetes label selector string.
#[derive(Debug, Clone, PartialEq)]
enum Term {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    Absent(String),
}

/// `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, joined by commas.
fn parse_selector(text: &str) -> Result<Vec<Term>, String> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0, 0);
    let mut parts = Vec::new();
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    let key_ok = |k: &str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
    };
    let set = |rest: &str| -> Option<Vec<String>> {
        let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
        Some(inner.split(',').map(|v| v.trim().to_owned()).collect())
    };
    for part in parts {
        let p = part.trim();
        let term = if let Some(k) = p.strip_prefix('!') {
            Term::Absent(k.trim().to_owned())
        } else if let Some((k, v)) = p.split_once("!=") {
            Term::NotEquals(k.trim().to_owned(), v.trim().to_owned())
        } else if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
            Term::Equals(k.trim().to_owned(), v.trim().to_owned())
        } else if let Some((k, rest)) = p.split_once(" notin ") {
            Term::NotIn(
                k.trim().to_owned(),
                set(rest).ok_or(format!("'{p}': expected (values)"))?,
            )
        } else if let Some((k, rest)) = p.split_once(" in ") {
            Term::In(
                k.trim().to_owned(),
                set(rest).ok_or(format!("'{p}': expected (values)"))?,
            )
        } else {
            Term::Exists(p.to_owned())
        };
        let key = match &term {
            Term::Equals(k, _)
            | Term::NotEquals(k, _)
            | Term::In(k, _)
            | Term::NotIn(k, _)
            | Term::Exists(k)
            | Term::Absent(k) => k,
        };
        if !key_ok(key) {
            return Err(format!("'{p}' is not a label selector term"));
        }
        terms.push(term);
    }
    Ok(terms)
}

fn selects(terms: &[Term], labels: &[(String, String)]) -> bool {
    let get = |key: &str| {
        labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    terms.iter().all(|t| match t {
        Term::Equals(k, v) => get(k) == Some(v.as_str()),
        Term::NotEquals(k, v) => get(k) != Some(v.as_str()),
        Term::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
        Term::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
        Term::Exists(k) => get(k).is_some(),
        Term::Absent(k) => get(k).is_none(),
    })
}

pub struct RolloutScreener {
    scope: Vec<Term>,
    selectors: Vec<HeaderSelector>,
    gating: Option<(Gating, Vec<String>)>,
    revision_key: String,
    role_key: String,
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let c: Config = p.parse()?;
    let scope = c
        .scope
        .map(|s| s.label_selector)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| p.error("parameters.scope.labelSelector: required"))?;
    let scope = parse_selector(&scope)
        .map_err(|e| p.error(format_args!("parameters.scope.labelSelector: {e}")))?;
    let mut selectors = c.header_selectors;
    for (i, s) in selectors.iter_mut().enumerate() {
        let at = format!("parameters.headerSelectors[{i}]");
        for (field, value) in [
            ("name", &s.name),
            ("headerName", &s.header_name),
            ("labelKey", &s.label_key),
        ] {
            if value.is_empty() {
                return Err(p.error(format_args!("{at}.{field}: required")));
            }
        }
        if s.mode != "strict" && s.mode != "prefer" {
            return Err(p.error(format_args!(
                "{at}.mode: '{}' must be strict or prefer",
                s.mode
            )));
        }
        s.header_name = s.header_name.to_ascii_lowercase();
    }
    for (i, s) in selectors.iter().enumerate() {
        if let Some(d) = selectors[..i]
            .iter()
            .find(|d| d.name == s.name || d.header_name == s.header_name)
        {
            let field = if d.name == s.name {
                "name"
            } else {
                "headerName"
            };
            return Err(p.error(format_args!(
                "parameters.headerSelectors[{i}].{field}: duplicate of another selector"
            )));
        }
    }
    let g = c
        .revision_gating
        .ok_or_else(|| p.error("parameters.revisionGating: required"))?;
    let gating = match g.mode.as_str() {
        "disabled" => None,
        "sum" | "max-role" => {
            let roles = g.require_roles.map(|r| r.values).unwrap_or_default();
            if roles.is_empty() {
                return Err(p.error(format_args!(
                    "parameters.revisionGating.requireRoles.values: at least one role is required with mode {}",
                    g.mode
                )));
            }
            for (i, r) in roles.iter().enumerate() {
                if r.is_empty() || roles[..i].contains(r) {
                    return Err(p.error(format_args!(
                        "parameters.revisionGating.requireRoles.values[{i}]: '{r}' is empty or listed twice"
                    )));
                }
            }
            let mode = if g.mode == "sum" {
                Gating::Sum
            } else {
                Gating::MaxRole
            };
            Some((mode, roles))
        }
        other => {
            return Err(p.error(format_args!(
                "parameters.revisionGating.mode: '{other}' must be sum, max-role or disabled"
            )))
        }
    };
    let or = |v: String, d: &str| if v.is_empty() { d.to_owned() } else { v };
    Ok(Plugin::Screener(Arc::new(RolloutScreener {
        scope,
        selectors,
        gating,
        revision_key: or(g.revision_label_key, DEFAULT_REVISION_LABEL),
        role_key: or(g.role_label_key, DEFAULT_ROLE_LABEL),
    })))
}

impl RolloutScreener {
    fn label<'a>(labels: &'a [(String, String)], key: &str) -> Option<&'a str> {
        labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Each revision's share of traffic (covered revisions only), from the endpoints in scope.
    pub fn shares(&self, cycle: &Cycle<'_>) -> BTreeMap<String, f64> {
        let Some((mode, roles)) = &self.gating else {
            return BTreeMap::new();
        };
        // revision → endpoints per required role
        let mut counts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for ep in &cycle.snapshot.endpoints {
            let labels = &ep.info.labels;
            if !selects(&self.scope, labels) {
                continue;
            }
            let (Some(rev), Some(role)) = (
                Self::label(labels, &self.revision_key),
                Self::label(labels, &self.role_key),
            ) else {
                continue;
            };
            let row = counts
                .entry(rev.to_owned())
                .or_insert_with(|| vec![0; roles.len()]);
            if let Some(i) = roles.iter().position(|r| r == role) {
                row[i] += 1;
            }
        }
        counts.retain(|_, row| row.iter().all(|&n| n > 0));
        let weight_role = match mode {
            Gating::Sum => None,
            Gating::MaxRole => {
                let totals: Vec<u64> = (0..roles.len())
                    .map(|i| counts.values().map(|row| row[i]).sum())
                    .collect();
                // The largest total; ties go to the first listed.
                let mut best = 0;
                for (i, &t) in totals.iter().enumerate() {
                    if t > totals[best] {
                        best = i;
                    }
                }
                Some(best)
            }
        };
        let weights: BTreeMap<String, f64> = counts
            .into_iter()
            .map(|(rev, row)| {
                let w = weight_role.map_or(row.iter().sum::<u64>(), |i| row[i]);
                (rev, w as f64)
            })
            .collect();
        let total: f64 = weights.values().sum();
        weights.into_iter().map(|(r, w)| (r, w / total)).collect()
    }
}

impl Screener for RolloutScreener {
    fn screen(&self, cycle: &Cycle<'_>, candidates: &mut Vec<u32>) -> Result<(), String> {
        let strict_header = self.selectors.iter().any(|s| {
            s.mode == "strict"
                && cycle
                    .request
                    .header(&s.header_name)
                    .is_some_and(|v| !v.is_empty())
        });
        if self.gating.is_some() {
            let shares = self.shares(cycle);
            let chosen = if strict_header {
                None
            } else {
                // Weighted draw over the covered revisions, in name order.
                let x = fastrand::f64();
                let mut acc = 0.0;
                let mut pick = shares.keys().last().cloned();
                for (rev, share) in &shares {
                    acc += share;
                    if x < acc {
                        pick = Some(rev.clone());
                        break;
                    }
                }
                pick
            };
            candidates.retain(|&c| {
                let rev = Self::label(&cycle.endpoint(c).info.labels, &self.revision_key);
                rev.is_some_and(|r| {
                    shares.contains_key(r) && chosen.as_deref().is_none_or(|ch| ch == r)
                })
            });
            if candidates.is_empty() {
                return Err("disaggregatedset-rollout-screener: no revision has a ready endpoint of every required role".into());
            }
        }
        for s in self.selectors.iter().filter(|s| s.mode == "strict") {
            let Some(want) = cycle
                .request
                .header(&s.header_name)
                .filter(|v| !v.is_empty())
            else {
                continue;
            };
            candidates.retain(|&c| {
                Self::label(&cycle.endpoint(c).info.labels, &s.label_key) == Some(want)
            });
            if candidates.is_empty() {
                return Err(format!(
                    "disaggregatedset-rollout-screener: no endpoint has {}={want} (strict header {})",
                    s.label_key, s.header_name
                ));
            }
        }
        Ok(())
    }

    fn stamp(&self, cycle: &Cycle<'_>, picked: u32, out: &mut Vec<(String, String)>) {
        let labels = &cycle.endpoint(picked).info.labels;
        for s in &self.selectors {
            if let Some(v) = Self::label(labels, &s.label_key) {
                out.push((s.header_name.clone(), v.to_owned()));
            }
        }
    }
}

#[cfg(test)]
#[path = "disaggregatedset_rollout_screener_tests.rs"]
mod tests;
