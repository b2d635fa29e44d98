"""The affinity rule prices a queue in the model's tokens, the unit prefill time is spent in: the
precise index counts the tokens a match saves with the model's tokenizer, so its threshold is
the real prefill whatever `affinityCharactersPerToken` says (that converts the approximate
producer's 4-byte estimate, which the Rust scheduler tests cover)."""

from __future__ import annotations

import json
from pathlib import Path

import msgpack
import pytest

from sluicegate._core import LocalTokenizer, vllm_block_hashes
from sluicegate.scheduling import Endpoint, Scheduler
from sluicegate.sim.toy_tokenizers import byte_level_chatml

SEED = "42"
BLOCK = 16
MODEL = "m"
HELD, IDLE = "10.0.0.1:8000", "10.0.0.2:8000"
TEXT = "Shared system prompts make prefix caching pay off: many requests start the same way. " * 12


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> Path:
    # Trained on the prompt itself: whole words, more characters a token (5.3) than the
    # approximate estimate of 4 (the quality bench's tokenizer makes 6.4 on its workload).
    return byte_level_chatml(tmp_path_factory.mktemp("tok"), vocab_size=1000, corpus=[TEXT] * 20)


def _scheduler(tokenizer: Path, queue_tokens: float, characters_per_token: float) -> Scheduler:
    return Scheduler(f"""
plugins:
- {{type: token-producer, parameters: {{local: {{path: "{tokenizer}"}}}}}}
- {{type: precise-prefix-cache-producer, parameters: {{tokenProcessorConfig: {{blockSize: {BLOCK}, hashSeed: "{SEED}"}}}}}}
- {{type: queue-scorer}}
- {{type: prefix-cache-scorer, parameters: {{affinityQueueTokens: {queue_tokens}, affinityCharactersPerToken: {characters_per_token}}}}}
schedulingProfiles: [{{name: p, plugins: [{{pluginRef: queue-scorer, weight: 2}}, {{pluginRef: prefix-cache-scorer, weight: 3}}]}}]
""")


def _pick(tokenizer: Path, queue_tokens: float, characters_per_token: float, body: bytes, tokens: list[int]) -> str:
    """Where the request goes when HELD holds its whole prompt and has one request waiting,
    and IDLE holds nothing and has none."""
    sched = _scheduler(tokenizer, queue_tokens, characters_per_token)
    sched.set_endpoints([Endpoint("held", HELD), Endpoint("idle", IDLE)])
    full = len(tokens) // BLOCK * BLOCK
    stored = ["BlockStored", vllm_block_hashes(tokens, BLOCK, SEED, None), None, tokens[:full], BLOCK,
              None, "GPU", None, None]
    assert sched.router.apply_kv_events(HELD, msgpack.packb([0.0, [stored], 0]), 0, MODEL)
    assert sched.router.ingest_metrics(HELD, b"vllm:num_requests_waiting 1\n")
    assert sched.router.ingest_metrics(IDLE, b"vllm:num_requests_waiting 0\n")
    return sched.router.route("/v1/completions", body).primary


def test_a_queue_is_priced_in_the_tokens_the_model_would_prefill(tokenizer) -> None:
    body = json.dumps({"model": MODEL, "prompt": TEXT, "max_tokens": 1}).encode()
    tokens = LocalTokenizer(str(tokenizer)).tokens("/v1/completions", body)
    saved = len(tokens) // BLOCK * BLOCK  # the blocks the idle server would prefill again
    # More characters a token than the estimate's 4: the estimate would price this history at
    # 1.3x its real prefill, the margins below are 10 %.
    assert len(TEXT.encode()) / len(tokens) > 4 * 1.25
    for characters_per_token in (4, 8):
        # One queued request worth a little less than the real prefill: the match keeps it;
        # a little more: it moves.
        assert _pick(tokenizer, 0.9 * saved, characters_per_token, body, tokens) == HELD
        assert _pick(tokenizer, 1.1 * saved, characters_per_token, body, tokens) == IDLE
