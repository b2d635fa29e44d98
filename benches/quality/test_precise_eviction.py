"""shared_prefix against vLLM-style servers whose KV caches are too small for the working set:
the servers evict (and say so in `BlockRemoved` events), so the approximate index, which only
remembers where it routed, believes in blocks the servers dropped, while the precise index
follows the events. Same arrivals and requests for every policy, in one run."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from tests.inference_sim import missing_reason as inference_sim_missing

from benches.quality.fleet import FleetShape
from benches.quality.policies import scorer_variants
from benches.quality.test_routing_quality import compare_rows, inference_sim_shape, policy_subset, vllm_style_shape

# 384 blocks of 16 tokens (6,144 tokens) a server. With the tokenizer trained here (6.4
# characters a token on this workload) the 32 system prompts are 500-975 tokens (23.4K in all)
# and a request 956 on average (at most ~1,500): a server holds about 8 system prompts with
# nothing running, less than its share under prefix affinity (4 system prompts and 16
# conversations' histories, ~6.5K tokens together, plus the running requests' own blocks), so the
# servers evict all the time. The approximate producer's LRU (autoTune: 384 entries of 64
# estimated tokens, ~15K real tokens) believes in 2.5x what each server holds.
EVICTING = FleetShape(kv_blocks=384, max_model_len=4096)
# llm-d-inference-sim's fleet (four servers, 4 batch slots) with 448 blocks a server instead of
# its default 1,024. Its tokens are whole words (6.47 characters a token): the system prompts are
# ~53 blocks, a request ~70 (at most ~95, so four running fit), and the run's working set is
# ~2,800 blocks, ~700 a server under prefix affinity. With 1,024 a server nothing is ever evicted
# (0 BlockRemoved in every session-14 run), and the approximate index then knows exactly what
# the precise one does; with 448 the servers drop what the approximate index still believes in.
ISIM_EVICTING_BLOCKS = 448
pytestmark = pytest.mark.timeout(3600)


def test_precise_routing_under_eviction(benchmark, quality_size, quality_rows, tmp_path):
    """Round-robin, the approximate default, upstream's scorer on the approximate index, and
    precise (in-process tokenizer), both also with the no-hit-lru-scorer, on caches that
    evict: does knowing what the servers really hold beat guessing?"""
    kv_blocks = int(os.environ.get("SLUICEGATE_QUALITY_KV_BLOCKS", EVICTING.kv_blocks))
    shape = vllm_style_shape(tmp_path, replace(EVICTING, kv_blocks=kv_blocks))
    names = {"round-robin", "sluicegate", "sluicegate-upstream-scorer", "sluicegate+precise",
             "sluicegate-no-hit-lru", "sluicegate+precise-no-hit-lru"}
    names = policy_subset() or names
    compare_rows("shared_prefix_vllm_evicting", shape, names, benchmark, quality_size, quality_rows)


def inference_sim_evicting_shape() -> FleetShape:
    """llm-d-inference-sim's fleet with ISIM_EVICTING_BLOCKS a server
    (SLUICEGATE_QUALITY_KV_BLOCKS sets another size)."""
    kv_blocks = int(os.environ.get("SLUICEGATE_QUALITY_KV_BLOCKS", ISIM_EVICTING_BLOCKS))
    return replace(inference_sim_shape(), kv_blocks=kv_blocks, max_model_len=4096)


@pytest.mark.skipif(inference_sim_missing() is not None, reason=str(inference_sim_missing()))
def test_precise_routing_with_inference_sim_under_eviction(benchmark, quality_size, quality_rows):
    """The same question against llm-d's own simulator (`make inference-sim-bin`) on the wall
    clock: round-robin, the approximate default and precise mode (tokenizing through a
    server's render API, indexing its events), on caches that evict."""
    shape = inference_sim_evicting_shape()
    names = policy_subset() or {"round-robin", "sluicegate", "sluicegate+precise-render"}
    names |= {p.name for p in scorer_variants(shape)}
    compare_rows("shared_prefix_isim_evicting", shape, names, benchmark, quality_size, quality_rows)
