//! request-attribute-reporter (llm-d): when a response ends, evaluates a CEL expression over its
//! `usage` object (the subset in `usage_expression`) and reports the integer to the proxy as
//! dynamic metadata `<namespace>.<name>` (namespace `envoy.lb` by default), when the optional
//! condition holds. As upstream: exactly one attribute, and a zero or failed value is not sent.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::producers::usage_expression::UsageExpression;

pub const DEFAULT_NAMESPACE: &str = "envoy.lb";

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ReporterParams {
    attributes: Vec<AttributeParams>,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct AttributeParams {
    key: KeyParams,
    expression: String,
    condition: String,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct KeyParams {
    namespace: String,
    name: String,
}

#[derive(Debug)]
pub struct AttributeReporter {
    pub namespace: String,
    pub name: String,
    expression: UsageExpression,
    condition: Option<UsageExpression>,
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: ReporterParams = p.parse()?;
    let [attribute] = params.attributes.as_slice() else {
        return Err(p.error(format_args!(
            "parameters.attributes: must contain exactly one entry, got {}",
            params.attributes.len()
        )));
    };
    if attribute.key.name.is_empty() {
        return Err(p.error("parameters.attributes[0].key.name: required"));
    }
    if attribute.expression.trim().is_empty() {
        return Err(p.error("parameters.attributes[0].expression: required"));
    }
    let compile = |field: &str, text: &str| {
        UsageExpression::compile(text)
            .map_err(|e| p.error(format_args!("parameters.attributes[0].{field}: {e}")))
    };
    let expression = compile("expression", &attribute.expression)?;
    let condition = match attribute.condition.trim() {
        "" => None,
        text => Some(compile("condition", text)?),
    };
    let namespace = match attribute.key.namespace.as_str() {
        "" => DEFAULT_NAMESPACE.to_owned(),
        ns => ns.to_owned(),
    };
    Ok(Plugin::AttributeReporter(Arc::new(AttributeReporter {
        namespace,
        name: attribute.key.name.clone(),
        expression,
        condition,
    })))
}

impl AttributeReporter {
    /// The integer to report for a response with this `usage`, None when nothing is reported.
    pub fn report(&self, usage: &Value) -> Option<i64> {
        if let Some(c) = &self.condition {
            if c.boolean(usage) != Some(true) {
                return None;
            }
        }
        let value = self.expression.number(usage)? as i64;
        (value != 0).then_some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduling::test_pool::built;

    fn reporter(params: &str) -> Arc<AttributeReporter> {
        match built("request-attribute-reporter", params) {
            Plugin::AttributeReporter(r) => r,
            _ => panic!("not a reporter"),
        }
    }

    #[test]
    fn reports_the_expression_when_the_condition_holds_and_skips_zero() {
        let r = reporter(
            r#"{"attributes": [{"key": {"name": "x-gateway-inference-request-cost"},
                "expression": "usage.prompt_tokens + usage.completion_tokens",
                "condition": "has(usage.prompt_tokens) && has(usage.completion_tokens)"}]}"#,
        );
        assert_eq!(
            (r.namespace.as_str(), r.name.as_str()),
            ("envoy.lb", "x-gateway-inference-request-cost")
        );
        let usage = serde_json::json!({"prompt_tokens": 10, "completion_tokens": 5});
        assert_eq!(r.report(&usage), Some(15));
        assert_eq!(r.report(&serde_json::json!({"prompt_tokens": 10})), None);
        let zero = serde_json::json!({"prompt_tokens": 0, "completion_tokens": 0});
        assert_eq!(r.report(&zero), None);
    }

    #[test]
    fn bad_parameters_name_the_field() {
        for (params, field) in [
            (r#"{"attributes": []}"#, "parameters.attributes"),
            (r#"{"attributes": [{"expression": "usage.x"}]}"#, "key.name"),
            (
                r#"{"attributes": [{"key": {"name": "n"}}]}"#,
                "attributes[0].expression",
            ),
            (
                r#"{"attributes": [{"key": {"name": "n"}, "expression": "cost.x"}]}"#,
                "attributes[0].expression: undeclared reference",
            ),
            (
                r#"{"attributes": [{"key": {"name": "n"}, "expression": "usage.x", "condition": "has("}]}"#,
                "attributes[0].condition",
            ),
        ] {
            let raw: Value = serde_json::from_str(params).unwrap();
            let e = crate::scheduling::registry::build(&Params {
                name: "r",
                kind: "request-attribute-reporter",
                raw: Some(&raw),
            })
            .err()
            .unwrap();
            assert!(e.0.contains(field), "{params}: {e}");
        }
    }
}
