//! One behaviour per plugin, over real snapshots.

use crate::datalayer::MetricsUpdate;
use crate::scheduling::contracts::decider::PdDecider;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::scorer::{Picks, Scorer};
use crate::scheduling::cycle::Request;
use crate::scheduling::handlers::pd_decider::PrefixBasedPdDecider;
use crate::scheduling::producers::approx_prefix_cache_producer::{
    ApproxParams, ApproxPrefixProducer,
};
use crate::scheduling::registry;
use crate::scheduling::scorers::load_aware_scorer::LoadAwareScorer;
use crate::scheduling::scorers::lora_affinity_scorer::LoraAffinityScorer;
use crate::scheduling::scorers::no_hit_lru_scorer::NoHitLruScorer;
use crate::scheduling::scorers::prefix_cache_scorer::PrefixCacheScorer;
use crate::scheduling::scorers::running_requests_size_scorer::RunningRequestsSizeScorer;
use crate::scheduling::scorers::session_affinity_scorer::SessionAffinityScorer;
use crate::scheduling::session::session_token;
use crate::scheduling::test_pool::{all, built, cycle, pool, scorer_of, scores, Ep};

const PROMPT: &[u8] = &[b'x'; 256 * 4];

fn prefix_scorer() -> PrefixCacheScorer {
    PrefixCacheScorer::new(
        ApproxPrefixProducer::new(ApproxParams {
            lru_capacity_per_server: 1000,
            ..ApproxParams::default()
        })
        .unwrap(),
    )
}

fn prefix_request(prompt: &[u8]) -> Request<'_> {
    Request {
        model: "m",
        prompt,
        ..Default::default()
    }
}

#[test]
fn prefix_scorer_scores_the_share_of_leading_blocks_routed_there_before() {
    let (_store, snap) = pool(vec![Ep::waiting(0), Ep::waiting(0)]);
    let s = prefix_scorer();
    let mut c = cycle(&snap);
    c.request = prefix_request(&PROMPT[..512]);
    assert_eq!(scores(&s, &c), vec![0.0, 0.0]);
    s.picked(
        &c,
        &Picks {
            primary: vec![1],
            prefill: None,
            ..Default::default()
        },
    );
    // A longer prompt sharing the first two of its four blocks.
    let mut c = cycle(&snap);
    c.request = prefix_request(PROMPT);
    assert_eq!(scores(&s, &c), vec![0.0, 0.5]);
    assert_eq!(
        c.state.borrow().prefix.as_ref().unwrap().matched,
        vec![(1, 2)]
    );
}

#[test]
fn prefix_scorer_matches_a_repeated_prompt_shorter_than_a_block() {
    // As upstream, the trailing partial block is hashed too.
    let (_store, snap) = pool(vec![Ep::waiting(0)]);
    let s = prefix_scorer();
    let mut c = cycle(&snap);
    c.request = prefix_request(b"short");
    assert_eq!(scores(&s, &c), vec![0.0]);
    s.picked(
        &c,
        &Picks {
            primary: vec![0],
            prefill: None,
            ..Default::default()
        },
    );
    assert_eq!(scores(&s, &c), vec![1.0]);
}

#[test]
fn prefix_scorer_sizes_each_lru_from_the_endpoints_kv_cache_block_count() {
    // As upstream: 2 GPU blocks (of 16 tokens) make an LRU of 2 of our 64-token blocks.
    let (_store, snap) = pool(vec![Ep::with(MetricsUpdate {
        block_size: Some(16),
        num_gpu_blocks: Some(2),
        ..Default::default()
    })]);
    let s = prefix_scorer();
    let mut c = cycle(&snap);
    c.request = prefix_request(PROMPT);
    scores(&s, &c);
    s.picked(
        &c,
        &Picks {
            primary: vec![0],
            prefill: None,
            ..Default::default()
        },
    );
    assert_eq!(scores(&s, &c), vec![0.5]);
}

#[test]
fn lora_affinity_prefers_active_then_free_slot_then_waiting() {
    let (_store, snap) = pool(vec![
        Ep::loras(&["a"], &[], 2),
        Ep::loras(&["b"], &[], 2),
        Ep::loras(&["b"], &["a"], 2),
        Ep::loras(&["b", "c"], &[], 2),
    ]);
    let mut c = cycle(&snap);
    c.request.model = "a";
    assert_eq!(scores(&LoraAffinityScorer, &c), vec![1.0, 0.8, 0.6, 0.0]);
}

#[test]
fn running_requests_size_scorer_prefers_fewer_running() {
    let run = |n| {
        Ep::with(MetricsUpdate {
            running: Some(n),
            ..Default::default()
        })
    };
    let (_store, snap) = pool(vec![run(2), run(10), run(6)]);
    assert_eq!(
        scores(&RunningRequestsSizeScorer, &cycle(&snap)),
        vec![1.0, 0.0, 0.5]
    );
}

#[test]
fn load_aware_scores_half_for_an_empty_queue_down_to_zero_at_threshold() {
    let (_store, snap) = pool(vec![Ep::waiting(0), Ep::waiting(64), Ep::waiting(500)]);
    let s = LoadAwareScorer::new(128);
    assert_eq!(scores(&s, &cycle(&snap)), vec![0.5, 0.25, 0.0]);
}

#[test]
fn session_affinity_scores_the_endpoint_named_by_the_token() {
    let (_store, snap) = pool(vec![Ep::waiting(0), Ep::waiting(0)]);
    let headers = vec![("x-session-token".to_string(), session_token("ep1"))];
    let mut c = cycle(&snap);
    c.request.headers = &headers;
    let s = SessionAffinityScorer::default();
    assert_eq!(scores(&s, &c), vec![0.0, 1.0]);
    assert_eq!(scores(&s, &cycle(&snap)), vec![0.0, 0.0]);
}

#[test]
fn no_hit_lru_spreads_cold_requests_to_least_recently_used_endpoints() {
    let (_store, snap) = pool(vec![Ep::waiting(0), Ep::waiting(0), Ep::waiting(0)]);
    let s = NoHitLruScorer::new(16);
    let c = cycle(&snap);
    assert_eq!(scores(&s, &c), vec![1.0, 0.5, 0.0]);
    s.picked(
        &c,
        &Picks {
            primary: vec![0],
            prefill: None,
            ..Default::default()
        },
    );
    // ep0 just took a cold request: the never-used ones now lead.
    assert_eq!(scores(&s, &cycle(&snap)), vec![0.0, 1.0, 0.5]);
}

#[test]
fn no_hit_lru_is_neutral_when_some_endpoint_has_a_prefix_hit() {
    let (_store, snap) = pool(vec![Ep::waiting(0), Ep::waiting(0)]);
    let c = cycle(&snap);
    c.state.borrow_mut().prefix = Some(crate::scheduling::cycle::PrefixState {
        hashes: vec![1],
        block_tokens: 64,
        matched: vec![(1, 1)],
        ..Default::default()
    });
    assert_eq!(scores(&NoHitLruScorer::new(16), &c), vec![0.5, 0.5]);
}

#[test]
fn prefix_based_decider_prefills_when_uncached_tokens_reach_the_threshold() {
    let (_store, snap) = pool(vec![Ep::waiting(0), Ep::waiting(0)]);
    let d = PrefixBasedPdDecider {
        non_cached_tokens: 100,
        prompt_tokens: 0,
    };
    let mut c = cycle(&snap);
    c.request = prefix_request(PROMPT); // 256 tokens
    assert!(d.decide(&c, 0));
    c.state.borrow_mut().prefix = Some(crate::scheduling::cycle::PrefixState {
        hashes: vec![1, 2, 3, 4],
        block_tokens: 64,
        matched: vec![(1, 3)],
        ..Default::default()
    });
    assert!(d.decide(&c, 0));
    assert!(!d.decide(&c, 1)); // 64 uncached tokens
}

#[test]
fn prefix_based_decider_skips_prompts_shorter_than_prompt_tokens() {
    let (_store, snap) = pool(vec![Ep::waiting(0)]);
    let gate = |prompt_tokens| PrefixBasedPdDecider {
        non_cached_tokens: 100,
        prompt_tokens,
    };
    let mut c = cycle(&snap);
    c.request = prefix_request(PROMPT); // 256 tokens, none cached
    assert!(gate(256).decide(&c, 0));
    assert!(!gate(257).decide(&c, 0));
}

#[test]
fn media_is_found_only_as_a_content_block_type() {
    use crate::scheduling::handlers::pd_decider::carries_media;
    assert!(carries_media(
        br#"{"content":[{"type": "image_url","image_url":{}}]}"#
    ));
    assert!(carries_media(br#"[{"type":"input_audio"}]"#));
    assert!(!carries_media(br#"{"content":"say \"image_url\" twice"}"#));
    assert!(!carries_media(br#"{"content":"plain text"}"#));
}

#[test]
fn session_id_strategy_binds_a_session_to_its_pick_until_the_ttl() {
    let s = scorer_of(
        "session-affinity-scorer",
        r#"{"strategy": "session_id",
            "sessionIdConfig": {"sources": [{"header": "X-Session-Id"}], "evictionTtlSeconds": 60}}"#,
    );
    let (_store, snap) = pool(vec![Ep::waiting(0), Ep::waiting(0)]);
    let headers = |id: &str| vec![("x-session-id".to_owned(), id.to_owned())];
    let (a, b) = (headers("a"), headers("b"));
    let mut c = cycle(&snap);
    c.request.headers = &a;
    assert_eq!(scores(&*s, &c), vec![0.0, 0.0]);
    s.picked(
        &c,
        &Picks {
            primary: vec![1],
            ..Default::default()
        },
    );
    assert_eq!(scores(&*s, &c), vec![0.0, 1.0]);
    let mut other = cycle(&snap);
    other.request.headers = &b;
    assert_eq!(scores(&*s, &other), vec![0.0, 0.0]);
    let mut later = cycle(&snap);
    later.request.headers = &a;
    later.now += std::time::Duration::from_secs(61);
    assert_eq!(scores(&*s, &later), vec![0.0, 0.0]);
    s.endpoint_removed(snap.endpoints[1].info.id);
    assert_eq!(scores(&*s, &c), vec![0.0, 0.0]);
}

#[test]
fn session_affinity_parameters_we_cannot_honour_are_refused() {
    for (params, needle) in [
        (r#"{"strategy": "sticky"}"#, "strategy"),
        (
            r#"{"strategy": "session_id", "sessionIdConfig": {"sources": [{"header": "a", "attribute": "b"}]}}"#,
            "sources[0]: exactly one of header or attribute",
        ),
        (
            r#"{"strategy": "session_id", "sessionIdConfig": {"evictionTtlSeconds": -1}}"#,
            "evictionTtlSeconds",
        ),
    ] {
        let raw: serde_json::Value = serde_json::from_str(params).unwrap();
        let e = registry::build(&Params {
            name: "s",
            kind: "session-affinity-scorer",
            raw: Some(&raw),
        })
        .err()
        .unwrap();
        assert!(e.0.contains(needle), "{params}: {e}");
    }
}

#[test]
fn context_length_aware_prefers_the_tightest_range_that_fits_and_can_filter() {
    let eps = || {
        vec![
            Ep::waiting(0).label("llm-d.ai/context-length-range", "0-128"),
            Ep::waiting(0).label("llm-d.ai/context-length-range", "0-2048"),
            Ep::waiting(0).label("llm-d.ai/context-length-range", "0-128000"),
            Ep::waiting(0),
        ]
    };
    let (_store, snap) = pool(eps());
    let mut c = cycle(&snap);
    c.request = prefix_request(PROMPT); // 256 tokens
    let s = scorer_of("context-length-aware", "{}");
    let got = scores(&*s, &c);
    assert!(got[1] > got[2] && got[2] > 0.3 && got[0] < 0.3, "{got:?}");
    assert_eq!(got[3], 0.5);
    let Plugin::FilterAndScorer(f, _) =
        built("context-length-aware", r#"{"enableFiltering": true}"#)
    else {
        panic!("enableFiltering makes a filter too");
    };
    let mut candidates = all(&c);
    f.filter(&c, &mut candidates).unwrap();
    assert_eq!(candidates, vec![1, 2, 3]);
}

#[test]
fn header_label_affinity_scores_the_endpoints_whose_label_the_header_names() {
    let s = scorer_of(
        "header-label-affinity-scorer",
        r#"{"headerName": "X-Preferred-Zone", "labelKey": "zone"}"#,
    );
    let (_store, snap) = pool(vec![
        Ep::waiting(0).label("zone", "a"),
        Ep::waiting(0).label("zone", "b"),
        Ep::waiting(0),
    ]);
    let headers = vec![("x-preferred-zone".to_owned(), "b".to_owned())];
    let mut c = cycle(&snap);
    assert_eq!(scores(&*s, &c), vec![0.0, 0.0, 0.0]);
    c.request.headers = &headers;
    assert_eq!(scores(&*s, &c), vec![0.0, 1.0, 0.0]);
}

#[test]
fn inflight_load_producer_sets_the_token_estimate_and_names_bad_fields() {
    let Plugin::InFlightLoad(t) = built(
        "inflight-load-producer",
        r#"{"addEstimatedOutputTokens": true, "outputRatio": 0.5, "maxEstimatedOutputTokens": 100}"#,
    ) else {
        panic!("not an in-flight load producer")
    };
    assert!(t.add_estimated_output_tokens && !t.released_at_first_byte());
    assert_eq!(
        (t.output_ratio, t.max_estimated_output_tokens),
        (0.5, Some(100))
    );
    for (raw, field) in [
        (serde_json::json!({"outputRatio": -1.0}), "outputRatio"),
        (
            serde_json::json!({"maxEstimatedOutputTokens": -1}),
            "maxEstimatedOutputTokens",
        ),
        (
            serde_json::json!({"syncCrossReplicaState": true}),
            "syncCrossReplicaState",
        ),
    ] {
        let e = registry::build(&Params {
            name: "i",
            kind: "inflight-load-producer",
            raw: Some(&raw),
        })
        .err()
        .unwrap();
        assert!(e.0.contains(field), "{e}");
    }
}
