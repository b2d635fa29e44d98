use super::*;
use crate::scheduling::kv_events::{Place, Stored};

fn stored(hashes: &[u64]) -> KvEvent {
    KvEvent::Stored(Stored {
        hashes: hashes.to_vec(),
        block_size: 16,
        ..Default::default()
    })
}

#[test]
fn byte_scheme_blocks_match_until_removed() {
    let index = BlockIndex::new(16, 5557, String::new());
    index.apply(1, "", &[stored(&[10, 11, 12])], Some(0));
    assert_eq!(index.longest_prefix_match(1, &[10, 11, 12, 13]), 3);
    assert_eq!(index.longest_prefix_match(2, &[10]), 0);
    index.apply(1, "", &[KvEvent::removed(vec![11])], Some(1));
    assert_eq!(index.longest_prefix_match(1, &[10, 11, 12]), 1);
    index.apply(1, "", &[KvEvent::AllCleared], Some(2));
    assert!(index.is_empty());
    assert_eq!(index.stats().events, 3);
    assert_eq!(index.stats().seq_gaps, 0);
}

#[test]
fn a_sequence_gap_is_counted_and_a_restart_clears_the_endpoint() {
    let index = BlockIndex::new(16, 5557, String::new());
    index.apply(1, "", &[stored(&[1])], Some(5));
    index.apply(1, "", &[stored(&[2])], Some(9));
    assert_eq!(index.stats().seq_gaps, 1);
    assert_eq!(index.len(1), 2);
    index.apply(1, "", &[stored(&[3])], Some(0));
    assert_eq!(index.len(1), 1);
}

#[test]
fn another_block_size_is_counted_as_a_mismatch() {
    let index = BlockIndex::new(64, 5557, String::new());
    index.apply(1, "", &[stored(&[1])], None);
    assert_eq!(index.stats().block_size_mismatches, 1);
    assert_eq!(index.len(1), 0);
}

/// Token-level keys: an index with a token source keys events by their token ids.
fn token_index(seed: &str, block: usize) -> BlockIndex {
    let mut index = BlockIndex::new(block, 5557, String::new());
    index.hash_seed = seed.into();
    index.keys = RequestKeys::new(seed, block);
    index.engine = EngineHasher::new(seed, block);
    // Any source switches the scheme; lookups in these tests pass keys directly.
    // A directory per call: tests run in parallel, and one writing the file while another
    // loads it would hand the reader half a file.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sg-tok-{}-{block}-{call}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("tokenizer.json"),
        r#"{"version":"1.0","model":{"type":"WordLevel","vocab":{"a":0,"b":1},"unk_token":"a"},"pre_tokenizer":{"type":"Whitespace"}}"#,
    )
    .unwrap();
    let t = crate::tokenize::Tokenizer::load(&dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    index.use_tokens(Arc::new(TokenSource::Local(Box::new(t))));
    index
}

fn vllm_stored(
    h: &EngineHasher,
    tokens: &[u32],
    parent: Option<u64>,
    lora: Option<&str>,
) -> Stored {
    Stored {
        hashes: h.external_hashes(tokens, lora, None),
        parent,
        token_ids: tokens.to_vec(),
        block_size: 4,
        lora_name: lora.map(str::to_owned),
        ..Default::default()
    }
}

#[test]
fn token_events_are_keyed_as_the_request_keys_of_their_tokens() {
    let index = token_index("42", 4);
    let engine = EngineHasher::new("42", 4);
    let tokens: Vec<u32> = (0..12).collect();
    index.apply(
        7,
        "base",
        &[KvEvent::Stored(vllm_stored(&engine, &tokens, None, None))],
        None,
    );
    let keys = RequestKeys::new("42", 4).prompt_keys(&tokens, "base", None);
    assert_eq!(index.longest_prefix_match(7, &keys), 3);
    // Another model roots another chain.
    let other = RequestKeys::new("42", 4).prompt_keys(&tokens, "lora-a", None);
    assert_eq!(index.longest_prefix_match(7, &other), 0);
    let s = index.stats();
    assert_eq!(
        (s.engine_hash_checks, s.engine_hash_mismatches, s.admissions),
        (1, 0, 3)
    );
}

#[test]
fn a_continuation_event_chains_from_its_parents_request_key_and_removal_uses_engine_hashes() {
    let index = token_index("", 4);
    let engine = EngineHasher::new("", 4);
    let tokens: Vec<u32> = (100..112).collect();
    let full = engine.hashes(None, &tokens, Some("lora-a"), None);
    let first = Stored {
        hashes: vec![external(&full[0])],
        ..vllm_stored(&engine, &tokens[..4], None, Some("lora-a"))
    };
    let rest = Stored {
        hashes: full[1..].iter().map(external).collect(),
        ..vllm_stored(
            &engine,
            &tokens[4..],
            Some(external(&full[0])),
            Some("lora-a"),
        )
    };
    index.apply(
        1,
        "base",
        &[KvEvent::Stored(first), KvEvent::Stored(rest)],
        None,
    );
    let keys = RequestKeys::new("", 4).prompt_keys(&tokens, "lora-a", None);
    assert_eq!(index.longest_prefix_match(1, &keys), 3);
    index.apply(
        1,
        "base",
        &[KvEvent::removed(vec![external(&full[1])])],
        None,
    );
    assert_eq!(index.longest_prefix_match(1, &keys), 1);
}

#[test]
fn an_unknown_parent_is_skipped_and_a_wrong_seed_is_counted() {
    let index = token_index("1", 4);
    let wrong = EngineHasher::new("2", 4);
    let tokens: Vec<u32> = (0..8).collect();
    index.apply(
        1,
        "m",
        &[KvEvent::Stored(vllm_stored(
            &wrong,
            &tokens,
            Some(99),
            None,
        ))],
        None,
    );
    assert_eq!(index.stats().unknown_parents, 1);
    index.apply(
        1,
        "m",
        &[KvEvent::Stored(vllm_stored(&wrong, &tokens, None, None))],
        None,
    );
    let s = index.stats();
    assert_eq!((s.engine_hash_checks, s.engine_hash_mismatches), (1, 1));
    // Matching does not depend on the engine's seed: keys come from the tokens.
    let keys = RequestKeys::new("1", 4).prompt_keys(&tokens, "m", None);
    assert_eq!(index.longest_prefix_match(1, &keys), 2);
}

#[test]
fn a_publisher_sending_llm_ds_block_keys_is_indexed_and_passes_the_seed_check() {
    // llm-d-inference-sim publishes llm-d's own block keys as its engine hashes.
    let index = token_index("42", 4);
    let keys = RequestKeys::new("42", 4);
    let tokens: Vec<u32> = (0..12).collect();
    let all = keys.prompt_keys(&tokens, "m", None);
    let first = Stored {
        hashes: all[..1].to_vec(),
        token_ids: tokens[..4].to_vec(),
        block_size: 4,
        ..Default::default()
    };
    let rest = Stored {
        hashes: all[1..].to_vec(),
        parent: Some(all[0]),
        token_ids: tokens[4..].to_vec(),
        block_size: 4,
        ..Default::default()
    };
    index.apply(
        1,
        "m",
        &[KvEvent::Stored(first), KvEvent::Stored(rest)],
        None,
    );
    assert_eq!(index.longest_prefix_match(1, &all), 3);
    let s = index.stats();
    assert_eq!(
        (
            s.engine_hash_checks,
            s.engine_hash_mismatches,
            s.unknown_parents
        ),
        (1, 0, 0)
    );
}

#[test]
fn speculative_entries_match_until_their_ttl() {
    let mut index = BlockIndex::new(16, 5557, String::new());
    index.speculative_ttl = Some(Duration::from_millis(50));
    index.speculate(3, &[5, 6]);
    assert_eq!(index.longest_prefix_match(3, &[5, 6, 7]), 2);
    std::thread::sleep(Duration::from_millis(80));
    assert_eq!(index.longest_prefix_match(3, &[5, 6, 7]), 0);
}

#[test]
fn upstream_parameters_resolve_and_bad_ones_name_the_field() {
    let parse = |v: serde_json::Value| {
        let p = Params {
            name: "p",
            kind: "precise-prefix-cache-producer",
            raw: Some(&v),
        };
        factory(&p).map(|_| ()).map_err(|e| e.to_string())
    };
    parse(serde_json::json!({
        "tokenProcessorConfig": {"blockSize": 64, "hashSeed": "42"},
        "indexerConfig": {"kvBlockIndexConfig": {"enableMetrics": true, "inMemoryConfig": {"size": 1000}}},
        "kvEventsConfig": {"zmqEndpoint": "tcp://*:5557", "topicFilter": "kv@",
                           "podDiscoveryConfig": {"socketPort": 5557, "replaySocketPort": 5558}},
        "speculativeIndexing": true, "speculativeTTL": "500ms"
    }))
    .unwrap();
    let err = parse(
        serde_json::json!({"kvEventsConfig": {"podDiscoveryConfig": {"replaySocketPort": 65536}}}),
    )
    .unwrap_err();
    assert!(err.contains("replaySocketPort"), "{err}");
    let err = parse(serde_json::json!({"speculativeIndexing": true, "speculativeTTL": "soon"}))
        .unwrap_err();
    assert!(err.contains("speculativeTTL"), "{err}");
    let err =
        parse(serde_json::json!({"tokenProcessorConfig": {"hashAlgorithm": "xxh64"}})).unwrap_err();
    assert!(err.contains("hashAlgorithm"), "{err}");
    let err =
        parse(serde_json::json!({"indexerConfig": {"kvBlockIndexConfig": {"redisConfig": {}}}}))
            .unwrap_err();
    assert!(err.contains("redisConfig.address"), "{err}");
}

fn grouped(hashes: &[u64], group: u32, kind: Option<&str>) -> KvEvent {
    KvEvent::Stored(Stored {
        hashes: hashes.to_vec(),
        block_size: 16,
        place: Place {
            medium: None,
            group: Some(group),
        },
        spec_kind: kind.map(str::to_owned),
        ..Default::default()
    })
}

fn removed_from(hashes: &[u64], group: u32) -> KvEvent {
    KvEvent::Removed {
        hashes: hashes.to_vec(),
        place: Place {
            medium: None,
            group: Some(group),
        },
    }
}

#[test]
fn a_sliding_window_group_neither_adds_blocks_nor_takes_the_full_attention_groups_away() {
    // A hybrid model: group 0 full attention, group 1 sliding window, the same block hashes
    // in both. The window group frees and evicts blocks behind its window long before the
    // full-attention group does.
    let index = BlockIndex::new(16, 5557, String::new());
    index.apply(
        1,
        "",
        &[
            grouped(&[10, 11, 12], 0, Some("full_attention")),
            grouped(&[10, 11, 12], 1, Some("sliding_window")),
            grouped(&[20], 1, Some("sliding_window")),
        ],
        Some(0),
    );
    assert_eq!(index.longest_prefix_match(1, &[10, 11, 12]), 3);
    assert_eq!(index.longest_prefix_match(1, &[20]), 0);
    // Later events name the group only: its kind is remembered.
    index.apply(
        1,
        "",
        &[removed_from(&[10, 11], 1), grouped(&[21], 1, None)],
        Some(1),
    );
    assert_eq!(index.longest_prefix_match(1, &[10, 11, 12]), 3);
    assert_eq!(index.longest_prefix_match(1, &[21]), 0);
    // A group never described: its removal cannot be trusted either.
    index.apply(1, "", &[removed_from(&[10], 7)], Some(2));
    assert_eq!(index.longest_prefix_match(1, &[10, 11, 12]), 3);
    // The full-attention group's own eviction does take the block.
    index.apply(1, "", &[removed_from(&[11], 0)], Some(3));
    assert_eq!(index.longest_prefix_match(1, &[10, 11, 12]), 1);
    let skips = index.skips();
    let n = |removal: bool, kind: &str, reason: &'static str| {
        skips.get(&(removal, kind.to_owned(), reason)).copied()
    };
    assert_eq!(
        n(false, "sliding_window", "unsupported_cache_kind"),
        Some(3)
    );
    assert_eq!(n(true, "sliding_window", "unsupported_cache_kind"), Some(1));
    assert_eq!(n(true, "unknown", "unknown_group"), Some(1));
    assert_eq!(skips.len(), 3);
    assert_eq!(
        (index.stats().evictions, index.stats().dedup_forwarded),
        (1, 1)
    );
}

#[test]
fn a_group_event_whose_tokens_are_not_one_block_per_hash_is_skipped() {
    let index = BlockIndex::new(16, 5557, String::new());
    let mut sparse = Stored {
        hashes: vec![10, 11],
        token_ids: (0..24).collect(),
        block_size: 16,
        place: Place {
            medium: None,
            group: Some(0),
        },
        spec_kind: Some("full_attention".into()),
        ..Default::default()
    };
    index.apply(1, "", &[KvEvent::Stored(sparse.clone())], Some(0));
    assert!(index.is_empty());
    assert_eq!(
        index
            .skips()
            .get(&(false, "full_attention".into(), "non_dense_block_span")),
        Some(&1)
    );
    // A group whose kind nobody named is not indexed.
    sparse.spec_kind = None;
    sparse.place.group = Some(3);
    sparse.token_ids.clear();
    index.apply(1, "", &[KvEvent::Stored(sparse)], Some(1));
    assert!(index.is_empty());
    assert_eq!(
        index
            .skips()
            .get(&(false, "unknown".into(), "unsupported_cache_kind")),
        Some(&1)
    );
}

#[test]
fn duplicate_announcements_are_counted_by_the_dedup_counters() {
    let index = BlockIndex::new(16, 5557, String::new());
    index.apply(1, "", &[stored(&[10]), stored(&[10])], Some(0));
    index.apply(1, "", &[KvEvent::removed(vec![10])], Some(1));
    assert_eq!(index.longest_prefix_match(1, &[10]), 1);
    index.apply(1, "", &[KvEvent::removed(vec![10, 99])], Some(2));
    assert_eq!(index.longest_prefix_match(1, &[10]), 0);
    let s = index.stats();
    assert_eq!(
        (s.dedup_suppressed, s.dedup_forwarded, s.evictions),
        (1, 2, 1)
    );
}

#[test]
fn lookups_are_counted_by_latency_bucket() {
    let index = BlockIndex::new(16, 5557, String::new());
    index.record_lookup(4, 2, Duration::from_micros(30));
    index.record_lookup(4, 0, Duration::from_millis(30));
    index.record_lookup(4, 4, Duration::from_secs(11));
    let l = index.lookup_latency();
    assert_eq!(l.counts.len(), LOOKUP_LATENCY_BUCKETS.len() + 1);
    // 30 µs in the first bucket (<= 5 ms), 30 ms in the fourth (<= 50 ms), 11 s above all.
    assert_eq!((l.counts[0], l.counts[3], l.counts[11]), (1, 1, 1));
    assert_eq!(l.counts.iter().sum::<u64>(), 3);
    assert!((l.sum - 11.03003).abs() < 1e-9, "{}", l.sum);
    assert_eq!(index.stats().lookups, 3);
}
