//! The rollout screener through the Router: endpoints labelled as DisaggregatedSet pods of two
//! revisions; what reaches the profiles, the weighted revision draw, strict headers, stamping.

use std::collections::HashMap;

use super::*;
use crate::datalayer::EndpointSpec;
use crate::scheduling::router::RouteOptions;
use crate::scheduling::{RouteError, Router};

const BODY: &[u8] = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
const PATH: &str = "/v1/chat/completions";
const REV: &str = DEFAULT_REVISION_LABEL;
const ROLE: &str = DEFAULT_ROLE_LABEL;

fn config(mode: &str) -> String {
    format!(
        r#"{{"plugins": [
            {{"type": "disaggregatedset-rollout-screener", "parameters": {{
                "scope": {{"labelSelector": "disaggregatedset.x-k8s.io/name=my-set"}},
                "headerSelectors": [
                    {{"name": "revision", "headerName": "X-Disagg-Revision", "labelKey": "{REV}", "mode": "strict"}},
                    {{"name": "slice", "headerName": "x-disagg-slice", "labelKey": "disaggregatedset.x-k8s.io/slice", "mode": "prefer"}}],
                "revisionGating": {{"mode": "{mode}", "requireRoles": {{"values": ["prefill", "decode"]}}}}}}}},
            {{"type": "random-picker"}}],
          "schedulingProfiles": [{{"name": "p", "plugins": [{{"pluginRef": "random-picker"}}]}}],
          "scrapeMetrics": false}}"#
    )
}

/// (revision, role, count) groups of pods, plus one pod outside the set's scope.
fn router(mode: &str, pods: &[(&str, &str, usize)]) -> Router {
    let r = Router::from_json(&config(mode)).unwrap();
    let mut specs = Vec::new();
    for (rev, role, n) in pods {
        for i in 0..*n {
            let address = format!("10.{}.{}.{}:8000", rev.len(), specs.len(), i);
            specs.push(EndpointSpec {
                name: format!("{rev}-{role}-{i}"),
                address,
                labels: vec![
                    ("disaggregatedset.x-k8s.io/name".into(), "my-set".into()),
                    (REV.into(), (*rev).into()),
                    (ROLE.into(), (*role).into()),
                    (
                        "disaggregatedset.x-k8s.io/slice".into(),
                        format!("slice-{}", i % 2),
                    ),
                ],
            });
        }
    }
    specs.push(EndpointSpec {
        name: "other".into(),
        address: "10.9.9.9:8000".into(),
        labels: vec![(REV.into(), "rev-x".into()), (ROLE.into(), "decode".into())],
    });
    r.set_endpoints(&specs);
    r
}

fn route(
    r: &Router,
    headers: &[(&str, &str)],
) -> Result<(String, HashMap<String, String>), RouteError> {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    let options = RouteOptions {
        headers: &headers,
        ..Default::default()
    };
    let d = r.route_with(PATH, BODY, &options)?;
    r.release(d.primary());
    let name = r
        .store()
        .snapshot()
        .get(d.primary())
        .map(|e| e.info.name.clone())
        .unwrap();
    Ok((name, d.response_headers.iter().cloned().collect()))
}

#[test]
fn sum_draws_covered_revisions_by_their_pods_of_every_role() {
    // rev-a: 2 prefill + 9 decode = 11; rev-b: 1 + 1 = 2; rev-c lacks prefill: never.
    let r = router(
        "sum",
        &[
            ("rev-a", "prefill", 2),
            ("rev-a", "decode", 9),
            ("rev-b", "prefill", 1),
            ("rev-b", "decode", 1),
            ("rev-c", "decode", 5),
        ],
    );
    let mut b = 0;
    for _ in 0..2000 {
        let (name, headers) = route(&r, &[]).unwrap();
        assert!(
            name.starts_with("rev-a") || name.starts_with("rev-b"),
            "{name}"
        );
        assert_eq!(headers["x-disagg-revision"], name[..5]);
        b += usize::from(name.starts_with("rev-b"));
    }
    let share = b as f64 / 2000.0;
    assert!(
        (share - 2.0 / 13.0).abs() < 0.04,
        "rev-b share {share}, expected 2/13"
    );
}

#[test]
fn max_role_weights_every_revision_by_the_largest_role() {
    // Totals: prefill 3, decode 10 → decode decides: 9 vs 1.
    let r = router(
        "max-role",
        &[
            ("rev-a", "prefill", 2),
            ("rev-a", "decode", 9),
            ("rev-b", "prefill", 1),
            ("rev-b", "decode", 1),
        ],
    );
    let b = (0..2000)
        .filter(|_| route(&r, &[]).unwrap().0.starts_with("rev-b"))
        .count();
    let share = b as f64 / 2000.0;
    assert!(
        (share - 0.1).abs() < 0.035,
        "rev-b share {share}, expected 0.1"
    );
}

#[test]
fn a_strict_header_pins_the_revision_and_fails_closed() {
    let r = router(
        "sum",
        &[
            ("rev-a", "prefill", 1),
            ("rev-a", "decode", 3),
            ("rev-b", "prefill", 1),
            ("rev-b", "decode", 1),
            ("rev-c", "decode", 2),
        ],
    );
    for _ in 0..50 {
        let (name, headers) = route(&r, &[("x-disagg-revision", "rev-b")]).unwrap();
        assert!(name.starts_with("rev-b"), "{name}");
        assert_eq!(headers["x-disagg-revision"], "rev-b");
        assert!(headers["x-disagg-slice"].starts_with("slice-"));
    }
    // rev-c is not covered (no prefill): a strict header for it matches nothing → 503.
    let e = route(&r, &[("x-disagg-revision", "rev-c")]).unwrap_err();
    assert!(
        e.to_string().contains("no endpoint has") || e.to_string().contains("rev-c"),
        "{e}"
    );
    let e = route(&r, &[("x-disagg-revision", "rev-z")]).unwrap_err();
    assert!(e.to_string().contains("rev-z"), "{e}");
}

#[test]
fn no_covered_revision_is_a_503_and_disabled_gating_only_stamps() {
    let r = router("sum", &[("rev-a", "decode", 2)]);
    let e = route(&r, &[]).unwrap_err();
    assert!(e.to_string().contains("every required role"), "{e}");
    // disabled: every endpoint goes on (the unscoped one too); the pick's labels are stamped.
    let r = router("disabled", &[("rev-a", "decode", 2)]);
    let names: std::collections::HashSet<String> =
        (0..200).map(|_| route(&r, &[]).unwrap().0).collect();
    assert!(names.contains("other"), "{names:?}");
}

#[test]
fn parameters_are_checked_by_field() {
    let bad = |params: &str| {
        let json = format!(
            r#"{{"plugins": [{{"type": "disaggregatedset-rollout-screener", "parameters": {params}}}]}}"#
        );
        Router::from_json(&json).err().unwrap().0
    };
    assert!(bad(r#"{"revisionGating": {"mode": "sum"}}"#).contains("scope.labelSelector: required"));
    let scope = r#""scope": {"labelSelector": "a=b"}"#;
    assert!(bad(&format!("{{{scope}}}")).contains("revisionGating: required"));
    assert!(bad(&format!(
        r#"{{{scope}, "revisionGating": {{"mode": "sum"}}}}"#
    ))
    .contains("requireRoles.values"));
    assert!(bad(&format!(
        r#"{{{scope}, "revisionGating": {{"mode": "all"}}}}"#
    ))
    .contains("revisionGating.mode: 'all'"));
    assert!(bad(&format!(
        r#"{{{scope}, "revisionGating": {{"mode": "disabled"}}, "headerSelectors": [{{"name": "n", "headerName": "h", "labelKey": "k", "mode": "soft"}}]}}"#
    ))
    .contains("headerSelectors[0].mode"));
    let e = Router::from_json(
        r#"{"plugins": [{"type": "disaggregatedset-rollout-screener", "parameters": {"scope": {"labelSelector": "a=b"}, "revisionGating": {"mode": "disabled"}}}, {"type": "random-picker"}],
            "schedulingProfiles": [{"name": "p", "plugins": [{"pluginRef": "disaggregatedset-rollout-screener"}, {"pluginRef": "random-picker"}]}]}"#,
    )
    .err()
    .unwrap();
    assert!(e.0.contains("cannot be used in a profile"), "{e}");
}

#[test]
fn label_selector_terms() {
    let t = parse_selector("a=b, c!=d, e in (f, g), h notin (i), j, !k").unwrap();
    let labels = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    };
    assert!(selects(&t, &labels(&[("a", "b"), ("e", "g"), ("j", "")])));
    assert!(!selects(
        &t,
        &labels(&[("a", "b"), ("e", "g"), ("j", ""), ("k", "1")])
    ));
    assert!(!selects(&t, &labels(&[("a", "b"), ("e", "x"), ("j", "")])));
    assert!(parse_selector("a b").is_err());
}
