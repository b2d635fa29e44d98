"""The affinity rule prices a queue the same under the precise index as under the approximate
producer: the real tokens a match saves are converted to `affinityCharactersPerToken`
characters with the request's own characters per token, so the same history yields to the
same queue whichever producer found it."""

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


def test_a_queue_is_priced_in_the_requests_own_characters_per_token(tokenizer) -> None:
    body = json.dumps({"model": MODEL, "prompt": TEXT, "max_tokens": 1}).encode()
    tokens = LocalTokenizer(str(tokenizer)).tokens("/v1/completions", body)
    chars_per_token = len(TEXT.encode()) / len(tokens)
    saved_real = len(tokens) // BLOCK * BLOCK  # the blocks the idle server would prefill again
    # Priced in tokens of 4 characters, the match saves saved_real × chars_per_token / 4.
    at_four = saved_real * chars_per_token / 4
    # One queued request worth a little less than that: the match keeps it; a little more: it moves.
    assert _pick(tokenizer, 0.9 * at_four, 4, body, tokens) == HELD
    assert _pick(tokenizer, 1.1 * at_four, 4, body, tokens) == IDLE
    # Priced in real tokens (this tokenizer's own ratio) the same history is worth less.
    assert _pick(tokenizer, 0.9 * saved_real, chars_per_token, body, tokens) == HELD
    assert _pick(tokenizer, 1.1 * saved_real, chars_per_token, body, tokens) == IDLE
    # The prices differ by more than the ±10 % margins: priced in real tokens as before, the
    # first pick above would have moved.
    assert chars_per_token > 4 * 1.25, chars_per_token
