use super::*;

fn table(json: &str) -> RewriteTable {
    RewriteTable::from_json(json).unwrap()
}

#[test]
fn an_exact_match_beats_the_match_all_rule() {
    let t = table(
        r#"{"exact": {"a": {"targets": [{"model": "a-v2"}]}},
            "matchAll": {"targets": [{"model": "fallback"}]}}"#,
    );
    assert_eq!(t.rewrite(Some("a")), Some("a-v2"));
    assert_eq!(t.rewrite(Some("b")), Some("fallback"));
    assert_eq!(t.rewrite(None), Some("fallback"));
}

#[test]
fn without_a_rule_nothing_is_rewritten() {
    let t = table(r#"{"exact": {"a": {"targets": [{"model": "a-v2"}]}}}"#);
    assert_eq!(t.rewrite(Some("b")), None);
    assert!(RewriteTable::default().is_empty());
}

#[test]
fn weighted_targets_are_drawn_in_proportion() {
    let t = table(
        r#"{"matchAll": {"targets": [{"model": "x", "weight": 1}, {"model": "y", "weight": 3}]}}"#,
    );
    let n = 4000;
    let ys = (0..n).filter(|_| t.rewrite(Some("m")) == Some("y")).count();
    // 3/4 expected; a wide band so the test never flakes (binomial sd ~ 27).
    assert!((2700..3300).contains(&ys), "{ys} of {n} went to y");
}

#[test]
fn a_target_without_weight_or_model_is_an_error_naming_it() {
    let e = RewriteTable::from_json(r#"{"matchAll": {"targets": [{"model": "x", "weight": 0}]}}"#)
        .unwrap_err();
    assert!(e.to_string().contains("matchAll"), "{e}");
    let e = RewriteTable::from_json(r#"{"exact": {"m": {"targets": []}}}"#).unwrap_err();
    assert!(e.to_string().contains("\"m\""), "{e}");
}

#[test]
fn objectives_default_to_priority_zero() {
    let o = Objectives::new([("critical".to_owned(), 2), ("batch".to_owned(), -1)]);
    assert_eq!(o.priority_of("critical"), 2);
    assert_eq!(o.priority_of("batch"), -1);
    assert_eq!(o.priority_of("unknown"), 0);
    assert_eq!(o.priority_of(""), 0);
}
