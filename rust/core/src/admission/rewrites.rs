//! InferenceModelRewrite rules as one lookup table: the request's model → the model sent
//! upstream. Precedence (an exact match beats a match-all rule; between objects the oldest wins)
//! is resolved when the table is built; a rule with several targets draws one by weight.

use std::collections::HashMap;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("model rewrite table: {0}")]
pub struct RewriteTableError(pub String);

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    model: String,
    #[serde(default = "one")]
    weight: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    source: String,
    targets: Vec<RawTarget>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTable {
    #[serde(default)]
    exact: HashMap<String, RawRule>,
    #[serde(default)]
    match_all: Option<RawRule>,
}

fn one() -> u32 {
    1
}

/// One rule: its targets with cumulative weights, for a draw in O(log n).
#[derive(Debug, Clone, PartialEq)]
pub struct RewriteRule {
    /// "<namespace>/<name>" of the object it came from, for logs.
    pub source: String,
    targets: Vec<(String, u64)>,
}

impl RewriteRule {
    fn from_raw(raw: RawRule, key: &str) -> Result<RewriteRule, RewriteTableError> {
        let mut total = 0u64;
        let mut targets = Vec::with_capacity(raw.targets.len());
        for t in raw.targets {
            if t.model.is_empty() || t.weight == 0 {
                return Err(RewriteTableError(format!(
                    "{key}: target {:?} with weight {} (a model and a weight >= 1 are required)",
                    t.model, t.weight
                )));
            }
            total += u64::from(t.weight);
            targets.push((t.model, total));
        }
        if targets.is_empty() {
            return Err(RewriteTableError(format!("{key}: no targets")));
        }
        Ok(RewriteRule {
            source: raw.source,
            targets,
        })
    }

    /// A target drawn by weight.
    pub fn pick(&self) -> &str {
        if self.targets.len() == 1 {
            return &self.targets[0].0;
        }
        let total = self.targets.last().map_or(1, |t| t.1);
        let draw = fastrand::u64(0..total);
        let i = self.targets.partition_point(|t| t.1 <= draw);
        &self.targets[i].0
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RewriteTable {
    exact: HashMap<String, RewriteRule>,
    match_all: Option<RewriteRule>,
}

impl RewriteTable {
    /// `{"exact": {model: {"source", "targets": [{"model", "weight"}]}}, "matchAll": rule|null}`.
    pub fn from_json(text: &str) -> Result<RewriteTable, RewriteTableError> {
        let raw: RawTable =
            serde_json::from_str(text).map_err(|e| RewriteTableError(e.to_string()))?;
        let mut exact = HashMap::with_capacity(raw.exact.len());
        for (model, rule) in raw.exact {
            let rule = RewriteRule::from_raw(rule, &format!("exact[{model:?}]"))?;
            exact.insert(model, rule);
        }
        let match_all = raw
            .match_all
            .map(|r| RewriteRule::from_raw(r, "matchAll"))
            .transpose()?;
        Ok(RewriteTable { exact, match_all })
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.match_all.is_none()
    }

    /// The rule for a request naming `model` (None when the body names none).
    pub fn rule_for(&self, model: Option<&str>) -> Option<&RewriteRule> {
        model
            .and_then(|m| self.exact.get(m))
            .or(self.match_all.as_ref())
    }

    /// The model to send upstream instead of `model`, when a rule applies.
    pub fn rewrite(&self, model: Option<&str>) -> Option<&str> {
        self.rule_for(model).map(RewriteRule::pick)
    }

    /// (exact rules, whether a match-all rule exists), for logs.
    pub fn shape(&self) -> (usize, bool) {
        (self.exact.len(), self.match_all.is_some())
    }
}
