"""The precise index follows a cache that evicts: a simulated vLLM KV cache too small for its
prompts takes and releases them at random, its `BlockStored` / `BlockRemoved` events (vLLM's
hashes, token ids, named-field wire form) go into the EPP's index batch by batch, and after each
batch the index credits the server with exactly the leading blocks the cache holds, for every
prompt — the approximate index, which remembers where it routed, cannot."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from sluicegate.scheduling import Endpoint, Request
from sluicegate.sim.config import DEFAULT_MODEL, SimConfig
from sluicegate.sim.kv_events import encode_batch
from sluicegate.sim.kvcache import KVCache
from sluicegate.sim.render import PromptTokens
from sluicegate.sim.toy_tokenizers import byte_level_chatml

from tests.unit.sim.test_sim import precise_scheduler

SEED = "42"
BLOCK = 16
ADDRESS = "10.0.0.1:8000"
WORDS = "cache prefix block token server event shared prompt model route index queue".split()


def _prompts(rng: random.Random) -> list[str]:
    """Six stems, three continuations each: chains that share heads and part at a block."""
    out = []
    for s in range(6):
        stem = f"stem {s} " + " ".join(rng.choice(WORDS) for _ in range(90))
        out += [stem + f" turn {t} " + " ".join(rng.choice(WORDS) for _ in range(40)) for t in range(3)]
    return out


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> Path:
    return byte_level_chatml(tmp_path_factory.mktemp("tok"))


def test_the_precise_index_credits_exactly_the_blocks_an_evicting_cache_holds(tokenizer) -> None:
    config = SimConfig(tokenizer=str(tokenizer), hash_seed=SEED, block_size=BLOCK, kv_blocks=512)
    tokens = PromptTokens(config)
    sched = precise_scheduler(tokenizer, SEED, BLOCK)
    sched.set_endpoints([Endpoint("a", ADDRESS)])
    rng = random.Random(19)
    bodies = [{"model": DEFAULT_MODEL, "prompt": p, "max_tokens": 1} for p in _prompts(rng)]
    prompts = []
    for body in bodies:
        ids = tokens.token_ids("completion", body)
        hashes, source = tokens.source(ids, DEFAULT_MODEL, body)
        prompts.append((body, ids, hashes, source))
    longest = max(len(ids) for _, ids, _, _ in prompts)
    # Room for about two prompts at once, not for the eighteen: every step evicts.
    kv = KVCache(2 * -(-longest // BLOCK) + 4, BLOCK, record_events=True)
    held: list = []
    removed = 0
    for seq in range(150):
        _, ids, hashes, source = rng.choice(prompts)
        alloc = kv.allocate(hashes, len(ids), source)
        while alloc is None and held:
            kv.release(held.pop(0))
            alloc = kv.allocate(hashes, len(ids), source)
        assert alloc is not None
        held.append(alloc)
        if len(held) > 1 and rng.random() < 0.7:
            kv.release(held.pop(rng.randrange(len(held))))
        events = kv.drain_events()
        removed += sum(e["type"] == "BlockRemoved" for e in events)
        assert sched.router.apply_kv_events(ADDRESS, encode_batch(events, "map", 0.0), seq, DEFAULT_MODEL)
        for body, _, hashes, _ in prompts:
            (profile,) = sched.schedule(Request(body, path="/v1/completions"), explain=True).profiles
            score = profile.scorers[0].scores[ADDRESS]
            assert round(score * len(hashes)) == kv.cached_prefix(hashes), (seq, body["prompt"][:12])
    stats = sched.router.kv_event_stats()
    assert removed > 20 and stats["evictions"] > 100
    assert stats["unknown_parents"] == 0 and stats["seq_gaps"] == 0
