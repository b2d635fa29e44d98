//! destination-endpoint-served-verifier (llm-d, test-only: upstream's conformance suite lists
//! it): on the response headers, reports the endpoint the proxy says served the request
//! (`envoy.lb` metadata `x-gateway-destination-endpoint-served`) in the response header
//! `x-conformance-test-served-endpoint`, or `fail: ...` naming what the proxy left out.

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::{NoParams, Params};
use crate::scheduling::contracts::plugin::Plugin;

/// The response header the conformance suite reads.
pub const RESULT_HEADER: &str = "x-conformance-test-served-endpoint";

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    p.parse::<NoParams>()?;
    Ok(Plugin::ServedVerifier)
}

/// The header value for a response whose `envoy.lb` metadata was `lb` (None: absent) holding
/// the served endpoint `served` (None: absent).
pub fn verdict(lb: bool, served: Option<&str>) -> String {
    match (lb, served) {
        (false, _) => "fail: missing envoy lb metadata".into(),
        (true, None) => "fail: missing destination endpoint served metadata".into(),
        (true, Some(endpoint)) => endpoint.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::verdict;

    #[test]
    fn the_verdict_names_what_the_proxy_left_out() {
        assert_eq!(verdict(true, Some("10.0.0.1:8000")), "10.0.0.1:8000");
        assert_eq!(
            verdict(true, None),
            "fail: missing destination endpoint served metadata"
        );
        assert_eq!(verdict(false, None), "fail: missing envoy lb metadata");
    }
}
