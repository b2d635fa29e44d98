"""shared_prefix against vLLM-style servers whose KV caches are too small for the working set:
the servers evict (and say so in `BlockRemoved` events), so the approximate index, which only
remembers where it routed, believes in blocks the servers dropped, while the precise index
follows the events. Same arrivals and requests for every policy, in one run."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
import uvloop

from benches.quality.driver import capacity, run_policy
from benches.quality.fleet import FleetShape
from benches.quality.policies import policies
from benches.quality.test_routing_quality import vllm_style_shape

LOAD = 0.7
SEED = 0
# 384 blocks of 16 tokens (6,144 tokens) a server. With the tokenizer trained here (6.4
# characters a token on this workload) the 32 system prompts are 500-975 tokens (23.4K in all)
# and a request 956 on average (at most ~1,500): a server holds about 8 system prompts with
# nothing running, less than its share under prefix affinity (4 system prompts and 16
# conversations' histories, ~6.5K tokens together, plus the running requests' own blocks), so the
# servers evict all the time. The approximate producer's LRU (autoTune: 384 entries of 64
# estimated tokens, ~15K real tokens) believes in 2.5x what each server holds.
EVICTING = FleetShape(kv_blocks=384, max_model_len=4096)
pytestmark = pytest.mark.timeout(3600)


def test_precise_routing_under_eviction(benchmark, quality_size, quality_rows, tmp_path):
    """Round-robin, the approximate default, upstream's scorer on the approximate index, and
    precise (in-process tokenizer) on caches that evict: does knowing what the servers really
    hold beat guessing?"""
    kv_blocks = int(os.environ.get("SLUICEGATE_QUALITY_KV_BLOCKS", EVICTING.kv_blocks))
    shape = vllm_style_shape(tmp_path, replace(EVICTING, kv_blocks=kv_blocks))
    names = {"round-robin", "sluicegate", "sluicegate-upstream-scorer", "sluicegate+precise"}
    if os.environ.get("SLUICEGATE_QUALITY_POLICIES"):
        names = set(os.environ["SLUICEGATE_QUALITY_POLICIES"].split(","))
    rate_env = float(os.environ.get("SLUICEGATE_QUALITY_RATE", "0"))

    async def compare() -> list[dict]:
        rate = rate_env or LOAD * await capacity("shared_prefix", shape, quality_size.calibrate_s, SEED)
        return [(await run_policy("shared_prefix", p, shape, rate, quality_size.run_s, SEED)).summary()
                for p in policies("shared_prefix", SEED, shape) if p.name in names]

    rows = benchmark.pedantic(lambda: uvloop.run(compare()), rounds=1, iterations=1)
    quality_rows["shared_prefix_vllm_evicting"] = rows
    benchmark.extra_info["rows"] = rows
    for row in rows:
        assert row["requests"] > 0 and row["errors"] == 0, row
