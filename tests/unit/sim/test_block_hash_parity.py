"""Bit for bit: for a prompt, the token ids and block hashes the EPP computes (Rust: in-process
tokenizer, vLLM's sha256_cbor, llm-d's cbor-fnv keys) equal what the simulator (Python: its own
tokenizer load, chat template, CBOR and hashing) publishes in its KV events over ZMQ — for
completions and chat, with and without a LoRA adapter, for two tokenizers trained here."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import cbor2
import msgpack
import pytest
import zmq
import zmq.asyncio

from sluicegate._core import LocalTokenizer, request_block_keys, vllm_block_hashes
from sluicegate.scheduling import Endpoint, Request
from sluicegate.sim import block_hash
from sluicegate.sim.toy_tokenizers import byte_level_chatml, whitespace_llama2
from tests.unit.sim.test_sim import precise_scheduler, run, sim

SEED = "42"
BLOCK = 16
BASE = "meta-llama/Llama-3.1-8B-Instruct"
TEXT = ("You are a helpful assistant. Shared system prompts make prefix caching pay off: many "
        "requests start the same way. The quick brown fox jumps over the lazy dog. ") * 6
CASES = [
    ("/v1/completions", {"prompt": TEXT}),
    ("/v1/chat/completions", {"messages": [{"role": "system", "content": TEXT},
                                           {"role": "user", "content": "weather in the city?"}]}),
]


@pytest.fixture(scope="module", params=[byte_level_chatml, whitespace_llama2], ids=["bpe-chatml", "ws-llama2"])
def tokenizer_dir(request, tmp_path_factory) -> Path:
    return request.param(tmp_path_factory.mktemp(request.param.__name__))


async def _published(config: dict, path: str, body: dict) -> dict:
    """The BlockStored event the simulator publishes for `body`, read from a SUB socket bound
    here that the simulator dials (as it would the EPP's)."""
    sub = zmq.asyncio.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"kv@")
    sub.bind("tcp://127.0.0.1:*")
    lora = body["model"] if body["model"] != BASE else None
    try:
        async with sim(kv_events_endpoint=sub.getsockopt_string(zmq.LAST_ENDPOINT), **config) as (server, session, base):
            for attempt in range(100):  # ZMQ drops what is sent before the connection joins
                warm = {"model": BASE, "max_tokens": 1, "prompt": f"warm {attempt} " * 40}
                async with session.post(base + "/v1/completions", json=warm) as r:
                    assert r.status == 200, await r.text()
                try:
                    topic, seq, _ = await asyncio.wait_for(sub.recv_multipart(), 0.1)
                    break
                except asyncio.TimeoutError:
                    continue
            else:
                raise AssertionError("the simulator's publisher never reached the bound socket")
            assert topic == f"kv@{server.address}@{BASE}".encode() and len(seq) == 8
            async with session.post(base + path, json={**body, "max_tokens": 1}) as r:
                assert r.status == 200, await r.text()
            for _ in range(100):
                _, _, payload = await asyncio.wait_for(sub.recv_multipart(), 5)
                event = _first_stored(payload)
                if event is not None and event["parent_block_hash"] is None and event["lora_name"] == lora:
                    return event
            raise AssertionError("no BlockStored for the request")
    finally:
        sub.close()


def _first_stored(payload: bytes) -> dict | None:
    batch = msgpack.unpackb(payload)
    events = batch["events"] if isinstance(batch, dict) else batch[1]
    for e in events:
        if isinstance(e, dict) and e["type"] == "BlockStored":
            return e
        if isinstance(e, list) and e[0] == "BlockStored":
            fields = ("block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id",
                      "medium", "lora_name", "extra_keys")
            return dict(zip(fields, e[1:]))
    return None


@pytest.mark.parametrize("encoding", ["array", "map"])
@pytest.mark.parametrize("lora", [None, "lora-1"])
@pytest.mark.parametrize("path,body", CASES, ids=["completions", "chat"])
def test_epp_hashes_equal_the_simulators_published_hashes(tokenizer_dir, path, body, lora, encoding) -> None:
    body = {**body, "model": lora or BASE}
    config = {"tokenizer": str(tokenizer_dir), "hash_seed": SEED, "block_size": BLOCK,
              "kv_events_encoding": encoding}
    event = asyncio.run(_published(config, path, body))
    assert event is not None
    raw = json.dumps(body).encode()
    tokens = LocalTokenizer(str(tokenizer_dir)).tokens(path, raw)
    full = len(tokens) // BLOCK * BLOCK
    assert len(event["block_hashes"]) == full // BLOCK > 3
    assert event["token_ids"] == tokens[:full]
    assert event["block_hashes"] == vllm_block_hashes(tokens, BLOCK, SEED, lora)
    assert event["lora_name"] == lora
    assert event.get("extra_keys") == ([[lora]] * (full // BLOCK) if lora else None)


def test_the_simulators_cbor_is_vllms_cbor2_canonical() -> None:
    tokens = tuple(range(0, 70000, 997))
    for value in (None, 0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1, "lora-1", b"\x00" * 32,
                  (block_hash.none_hash("42"), tokens, ("lora-1", "salt")), (b"x", (), None)):
        assert block_hash.cbor(value) == cbor2.dumps(value, canonical=True)


def test_rust_and_python_vllm_hashes_agree_with_salt_and_lora() -> None:
    tokens = list(range(1000, 1100))
    for lora, salt in ((None, None), ("a", None), (None, "s"), ("a", "s")):
        ours = [block_hash.external(h) for h in block_hash.block_hashes(tokens, BLOCK, SEED, lora, salt)]
        assert vllm_block_hashes(tokens, BLOCK, SEED, lora, salt) == ours
    assert vllm_block_hashes(tokens, BLOCK, "43") != vllm_block_hashes(tokens, BLOCK, SEED)


def test_render_and_tokenize_endpoints_answer_the_ids_the_epp_computes(tokenizer_dir) -> None:
    async def body() -> None:
        async with sim(tokenizer=str(tokenizer_dir)) as (server, session, base):
            local = LocalTokenizer(str(tokenizer_dir))
            for path, req in CASES:
                req = {**req, "model": BASE}
                async with session.post(base + path + "/render", json=req) as r:
                    assert r.status == 200
                    rendered = await r.json()
                ids = rendered["token_ids"] if "messages" in req else rendered[0]["token_ids"]
                assert ids == local.tokens(path, json.dumps(req).encode())
                async with session.post(base + "/tokenize", json=req) as r:
                    answer = await r.json()
                assert answer["tokens"] == ids and answer["count"] == len(ids)
    run(body)


def test_remembered_chat_pieces_give_the_ids_of_a_whole_encode(tokenizer_dir) -> None:
    """The in-process tokenizer encodes a rendered chat piece by piece and remembers long pieces:
    a second conversation on the same system prompt, and the next turn of the first, are still
    tokenized exactly as the server renders them."""
    chats = [
        [{"role": "system", "content": TEXT}, {"role": "user", "content": "weather in the city?"}],
        [{"role": "system", "content": TEXT}, {"role": "user", "content": "and in the hills? " * 8}],
        [{"role": "system", "content": TEXT}, {"role": "user", "content": "weather in the city?"},
         {"role": "assistant", "content": "Sunny. " * 12}, {"role": "user", "content": "tomorrow?"}],
    ]

    async def body() -> None:
        async with sim(tokenizer=str(tokenizer_dir)) as (server, session, base):
            local = LocalTokenizer(str(tokenizer_dir))
            for messages in chats * 2:
                req = {"model": BASE, "messages": messages}
                async with session.post(base + "/v1/chat/completions/render", json=req) as r:
                    assert r.status == 200
                    ids = (await r.json())["token_ids"]
                assert local.tokens("/v1/chat/completions", json.dumps(req).encode()) == ids
    run(body)


def test_a_precise_scheduler_fed_the_events_matches_the_prompt_on_that_server(tokenizer_dir) -> None:
    """End to end through the index: events in, llm-d keys derived from their token ids, the
    same keys from the EPP's own tokenization of the request."""
    path, req = CASES[1]
    req = {**req, "model": "lora-1"}
    event = asyncio.run(_published({"tokenizer": str(tokenizer_dir), "hash_seed": SEED, "block_size": BLOCK},
                                   path, req))
    sched = precise_scheduler(tokenizer_dir, SEED, BLOCK)
    sched.set_endpoints([Endpoint("a", "10.0.0.1:8000"), Endpoint("b", "10.0.0.2:8000")])
    fields = ("block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id", "medium",
              "lora_name", "extra_keys")
    payload = msgpack.packb([0.0, [["BlockStored", *(event.get(f) for f in fields)]], 0])
    assert sched.router.apply_kv_events("10.0.0.2:8000", payload, 0, BASE)
    (profile,) = sched.schedule(Request(req, path=path), explain=True).profiles
    scores = dict(profile.scorers[0].scores)
    tokens = LocalTokenizer(str(tokenizer_dir)).tokens(path, json.dumps(req).encode())
    blocks = len(tokens) // BLOCK
    assert scores["10.0.0.2:8000"] == pytest.approx(len(event["block_hashes"]) / blocks)
    assert scores["10.0.0.1:8000"] == 0.0
    stats = sched.router.kv_event_stats()
    assert stats["engine_hash_checks"] == 1 and stats["engine_hash_mismatches"] == 0
    keys = request_block_keys(tokens, BLOCK, SEED, "lora-1")
    assert len(keys) == blocks
