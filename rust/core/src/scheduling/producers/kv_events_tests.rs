use super::*;

/// A tiny msgpack writer for the shapes vLLM sends (the Python tests cross-check against the
/// msgpack library itself).
enum M {
    Nil,
    U(u64),
    I(i64),
    F(f64),
    S(&'static str),
    B(Vec<u8>),
    A(Vec<M>),
    Map(Vec<(&'static str, M)>),
}

fn enc(m: &M, out: &mut Vec<u8>) {
    match m {
        M::Nil => out.push(0xc0),
        M::U(n) if *n < 128 => out.push(*n as u8),
        M::U(n) => {
            out.push(0xcf);
            out.extend_from_slice(&n.to_be_bytes());
        }
        M::I(n) => {
            out.push(0xd3);
            out.extend_from_slice(&n.to_be_bytes());
        }
        M::F(f) => {
            out.push(0xcb);
            out.extend_from_slice(&f.to_bits().to_be_bytes());
        }
        M::S(s) => {
            out.push(0xa0 | s.len() as u8);
            out.extend_from_slice(s.as_bytes());
        }
        M::B(b) => {
            out.push(0xc4);
            out.push(b.len() as u8);
            out.extend_from_slice(b);
        }
        M::A(items) => {
            out.push(0xdc);
            out.extend_from_slice(&(items.len() as u16).to_be_bytes());
            for i in items {
                enc(i, out);
            }
        }
        M::Map(pairs) => {
            out.push(0xde);
            out.extend_from_slice(&(pairs.len() as u16).to_be_bytes());
            for (k, v) in pairs {
                enc(&M::S(k), out);
                enc(v, out);
            }
        }
    }
}

fn bytes(m: M) -> Vec<u8> {
    let mut out = Vec::new();
    enc(&m, &mut out);
    out
}

fn batch(events: Vec<M>) -> Vec<u8> {
    bytes(M::A(vec![M::F(1.5), M::A(events)]))
}

/// A batch of one `BlockStored` event, for tests elsewhere in the crate.
pub(crate) fn stored_batch(hashes: &[u64], block_size: u64) -> Vec<u8> {
    batch(vec![M::A(vec![
        M::S("BlockStored"),
        M::A(hashes.iter().map(|&h| M::U(h)).collect()),
        M::Nil,
        M::A(vec![]),
        M::U(block_size),
        M::Nil,
        M::Nil,
    ])])
}

#[test]
fn decodes_stored_removed_and_cleared_in_order() {
    let payload = batch(vec![
        M::A(vec![
            M::S("BlockStored"),
            M::A(vec![M::U(u64::MAX), M::U(7)]),
            M::U(3),
            M::A(vec![M::U(1), M::U(2)]),
            M::U(16),
            M::Nil,
            M::Nil,
        ]),
        M::A(vec![M::S("BlockRemoved"), M::A(vec![M::U(7)]), M::Nil]),
        M::A(vec![M::S("AllBlocksCleared")]),
    ]);
    let b = decode_batch(&payload).unwrap();
    assert_eq!(b.ts, 1.5);
    assert_eq!(
        b.events,
        vec![
            KvEvent::Stored(Stored {
                hashes: vec![u64::MAX, 7],
                parent: Some(3),
                token_ids: vec![1, 2],
                block_size: 16,
                ..Default::default()
            }),
            KvEvent::removed(vec![7]),
            KvEvent::AllCleared,
        ]
    );
}

#[test]
fn negative_int_and_bytes_hashes_fold_to_u64_as_vllms_int_form() {
    let payload = batch(vec![M::A(vec![
        M::S("BlockRemoved"),
        M::A(vec![M::I(-1), M::B(vec![9, 9, 0, 0, 0, 0, 0, 0, 1, 2])]),
    ])]);
    let b = decode_batch(&payload).unwrap();
    // Bytes: the last 8, big-endian, as vLLM's int conversion keeps them.
    assert_eq!(b.events, vec![KvEvent::removed(vec![u64::MAX, 0x0102])]);
}

#[test]
fn a_batch_with_a_dp_rank_and_no_parent_decodes() {
    let payload = bytes(M::A(vec![
        M::F(0.0),
        M::A(vec![M::A(vec![
            M::S("BlockStored"),
            M::A(vec![M::U(5)]),
            M::Nil,
            M::A(vec![]),
            M::U(64),
        ])]),
        M::U(0),
    ]));
    let b = decode_batch(&payload).unwrap();
    assert_eq!(
        b.events,
        vec![KvEvent::Stored(Stored {
            hashes: vec![5],
            block_size: 64,
            ..Default::default()
        })]
    );
}

#[test]
fn a_zero_parent_is_no_parent() {
    // llm-d-inference-sim's array form sends 0 for a chain from the prompt's start, and
    // upstream's indexer reads 0 as no parent.
    let payload = bytes(M::A(vec![
        M::F(0.0),
        M::A(vec![M::A(vec![
            M::S("BlockStored"),
            M::A(vec![M::U(5)]),
            M::U(0),
            M::A(vec![M::U(1), M::U(2)]),
            M::U(2),
        ])]),
    ]));
    let b = decode_batch(&payload).unwrap();
    assert_eq!(
        b.events,
        vec![KvEvent::Stored(Stored {
            hashes: vec![5],
            token_ids: vec![1, 2],
            block_size: 2,
            ..Default::default()
        })]
    );
}

#[test]
fn malformed_batches_are_errors_naming_the_field() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![], "truncated"),
        (bytes(M::U(3)), "batch: expected an array or a map"),
        (bytes(M::A(vec![M::S("x"), M::A(vec![])])), "batch.ts"),
        (
            batch(vec![M::A(vec![M::S("Nope")])]),
            "unknown event type 'Nope'",
        ),
        (
            batch(vec![M::A(vec![M::S("BlockRemoved"), M::S("h")])]),
            "events[0].BlockRemoved.block_hashes: expected an array",
        ),
        (
            batch(vec![M::A(vec![M::S("BlockStored"), M::A(vec![M::S("h")])])]),
            "events[0].BlockStored.block_hashes[0]",
        ),
        (
            batch(vec![M::A(vec![
                M::S("BlockStored"),
                M::A(vec![]),
                M::Nil,
                M::A(vec![]),
                M::U(0),
            ])]),
            "block_size",
        ),
        ([batch(vec![]), vec![0]].concat(), "trailing"),
        (vec![0xdd, 0xff, 0xff, 0xff, 0xff], "overruns"),
        (vec![0xc1], "unsupported msgpack type 0xc1"),
    ];
    for (payload, needle) in cases {
        let err = decode_batch(&payload).unwrap_err().to_string();
        assert!(err.contains(needle), "{err:?} should name {needle:?}");
    }
}

#[test]
fn deep_nesting_is_refused_not_recursed() {
    let payload = vec![0x91; 10_000];
    assert!(decode_batch(&payload)
        .unwrap_err()
        .to_string()
        .contains("deeply"));
}

#[test]
fn the_named_field_form_decodes_like_the_array_form() {
    let stored = M::Map(vec![
        ("type", M::S("BlockStored")),
        ("block_hashes", M::A(vec![M::U(11), M::U(12)])),
        ("parent_block_hash", M::Nil),
        ("token_ids", M::A((0..4).map(M::U).collect())),
        ("block_size", M::U(2)),
        ("lora_id", M::Nil),
        ("medium", M::S("GPU")),
        ("lora_name", M::S("ad")),
        (
            "extra_keys",
            M::A(vec![
                M::A(vec![M::S("ad"), M::S("salt")]),
                M::A(vec![M::S("ad")]),
            ]),
        ),
    ]);
    let removed = M::Map(vec![
        ("type", M::S("BlockRemoved")),
        ("block_hashes", M::A(vec![M::U(12)])),
        ("medium", M::Nil),
    ]);
    let payload = bytes(M::Map(vec![
        ("ts", M::F(2.0)),
        (
            "events",
            M::A(vec![
                stored,
                removed,
                M::Map(vec![("type", M::S("AllBlocksCleared"))]),
            ]),
        ),
        ("data_parallel_rank", M::U(0)),
    ]));
    let b = decode_batch(&payload).unwrap();
    assert_eq!(b.ts, 2.0);
    assert_eq!(
        b.events,
        vec![
            KvEvent::Stored(Stored {
                hashes: vec![11, 12],
                parent: None,
                token_ids: vec![0, 1, 2, 3],
                block_size: 2,
                lora_name: Some("ad".into()),
                extra_keys: vec![vec!["ad".into(), "salt".into()], vec!["ad".into()]],
                ..Default::default()
            }),
            KvEvent::removed(vec![12]),
            KvEvent::AllCleared,
        ]
    );
}

#[test]
fn hybrid_allocator_events_carry_their_group_kind_and_medium_in_both_forms() {
    // vLLM's hybrid KV-cache allocator: positions 9-11 of BlockStored (group_idx,
    // kv_cache_spec_kind, kv_cache_spec_sliding_window) and 3 of BlockRemoved (group_idx).
    let array = batch(vec![
        M::A(vec![
            M::S("BlockStored"),
            M::A(vec![M::U(5)]),
            M::Nil,
            M::A(vec![M::U(1), M::U(2)]),
            M::U(2),
            M::Nil,
            M::S("CPU"),
            M::Nil,
            M::Nil,
            M::U(1),
            M::S("sliding_window"),
            M::U(128),
        ]),
        M::A(vec![
            M::S("BlockRemoved"),
            M::A(vec![M::U(5)]),
            M::S("GPU"),
            M::U(1),
        ]),
    ]);
    let map = batch(vec![
        M::Map(vec![
            ("type", M::S("BlockStored")),
            ("block_hashes", M::A(vec![M::U(5)])),
            ("parent_block_hash", M::Nil),
            ("token_ids", M::A(vec![M::U(1), M::U(2)])),
            ("block_size", M::U(2)),
            ("medium", M::S("CPU")),
            ("group_idx", M::U(1)),
            ("kv_cache_spec_kind", M::S("sliding_window")),
            ("kv_cache_spec_sliding_window", M::U(128)),
        ]),
        M::Map(vec![
            ("type", M::S("BlockRemoved")),
            ("block_hashes", M::A(vec![M::U(5)])),
            ("group_idx", M::U(1)),
        ]),
    ]);
    let expected = vec![
        KvEvent::Stored(Stored {
            hashes: vec![5],
            token_ids: vec![1, 2],
            block_size: 2,
            place: Place {
                medium: Some("cpu".into()),
                group: Some(1),
            },
            spec_kind: Some("sliding_window".into()),
            ..Default::default()
        }),
        KvEvent::Removed {
            hashes: vec![5],
            place: Place {
                medium: None,
                group: Some(1),
            },
        },
    ];
    assert_eq!(decode_batch(&array).unwrap().events, expected);
    assert_eq!(decode_batch(&map).unwrap().events, expected);
}

#[test]
fn a_negative_group_index_is_an_error_naming_the_field() {
    let payload = batch(vec![M::A(vec![
        M::S("BlockRemoved"),
        M::A(vec![M::U(5)]),
        M::Nil,
        M::I(-1),
    ])]);
    let err = decode_batch(&payload).unwrap_err().to_string();
    assert!(
        err.contains("events[0].BlockRemoved.group_idx: expected a group index >= 0"),
        "{err}"
    );
}

#[test]
fn a_map_event_without_a_type_is_an_error() {
    let payload = batch(vec![M::Map(vec![("block_hashes", M::A(vec![]))])]);
    let err = decode_batch(&payload).unwrap_err().to_string();
    assert!(
        err.contains("events[0]: a map event needs a string 'type'"),
        "{err}"
    );
}
