"""Workloads are deterministic request streams whose shapes match their names."""

from __future__ import annotations

import itertools

import pytest

from sluicegate.loadgen.workloads import COMPLETIONS_PATH, WORKLOADS, WorkloadRequest
from sluicegate.sim.config import DEFAULT_LORAS, DEFAULT_MODEL
from sluicegate.sim.kvcache import count_tokens


def take(workload: str, seed: int, n: int = 200) -> list[WorkloadRequest]:
    return list(itertools.islice(WORKLOADS[workload](seed, DEFAULT_MODEL), n))


def prompt_of(request: WorkloadRequest) -> str:
    if request.path == COMPLETIONS_PATH:
        return request.body["prompt"]
    return "".join(m["content"] for m in request.body["messages"])


@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_same_seed_same_requests_other_seed_other_requests(workload: str) -> None:
    assert take(workload, 1, 50) == take(workload, 1, 50)
    assert take(workload, 1, 50) != take(workload, 2, 50)


@pytest.mark.parametrize("workload", sorted(set(WORKLOADS) - {"sharegpt"}))
def test_every_request_streams_and_asks_for_usage(workload: str) -> None:
    for request in take(workload, 0, 50):
        assert request.body["stream"] is True
        assert request.body["stream_options"] == {"include_usage": True}
        assert request.body["max_tokens"] >= 1


def test_shared_prefix_reuses_a_few_system_prompts_across_many_conversations() -> None:
    requests = take("shared_prefix", 0)
    systems = {r.body["messages"][0]["content"] for r in requests}
    assert len(systems) == 4
    assert min(count_tokens(s) for s in systems) >= 800
    assert max(len(r.body["messages"]) for r in requests) > 3  # multi-turn histories


def test_shared_prefix_turns_extend_their_conversation() -> None:
    requests = take("shared_prefix", 0)
    by_first_turn: dict[str, list[list[dict[str, str]]]] = {}
    for r in requests:
        by_first_turn.setdefault(r.body["messages"][1]["content"], []).append(r.body["messages"])
    later = [turns for turns in by_first_turn.values() if len(turns) > 1]
    assert later
    for turns in later:
        assert turns[1][:len(turns[0])] == turns[0]


def test_varied_prompts_span_short_and_long_and_both_apis() -> None:
    requests = take("varied", 0)
    lengths = [count_tokens(prompt_of(r)) for r in requests]
    assert min(lengths) < 64 and max(lengths) > 1024
    assert {r.path for r in requests} == {COMPLETIONS_PATH, "/v1/chat/completions"}


def test_lora_spreads_over_all_adapters_with_skewed_popularity() -> None:
    models = [r.body["model"] for r in take("lora", 0, 400)]
    assert set(models) == set(DEFAULT_LORAS)
    assert models.count(DEFAULT_LORAS[0]) > models.count(DEFAULT_LORAS[-1])


def test_mixed_blends_the_three_kinds() -> None:
    requests = take("mixed", 0)
    assert any(r.body["model"] in DEFAULT_LORAS for r in requests)
    assert any(r.path == COMPLETIONS_PATH for r in requests)
    assert any(r.body.get("messages", [{}])[0].get("role") == "system" for r in requests)


def test_sharegpt_like_mixes_streaming_prefixes_and_tenants_by_its_knobs() -> None:
    from sluicegate.loadgen.workloads import sharegpt_like

    gen = sharegpt_like(3, stream_ratio=0.25, shared_prefix_ratio=0.5, objectives=("chat", "batch"),
                        fairness_ids=("t1", "t2", "t3"))
    requests = [next(gen) for _ in range(800)]
    streamed = sum(1 for r in requests if r.body.get("stream")) / len(requests)
    prefixed = sum(1 for r in requests if r.body["messages"][0]["role"] == "system") / len(requests)
    assert 0.2 < streamed < 0.3 and 0.44 < prefixed < 0.56
    assert {r.headers["x-llm-d-inference-objective"] for r in requests} == {"chat", "batch"}
    assert {r.headers["x-llm-d-inference-fairness-id"] for r in requests} == {"t1", "t2", "t3"}
    lengths = sorted(count_tokens(r.body["messages"][-1]["content"]) for r in requests)
    assert 100 < lengths[len(lengths) // 2] < 300  # median prompt near ShareGPT's


def test_sharegpt_like_refuses_ratios_outside_0_1() -> None:
    from sluicegate.loadgen.workloads import sharegpt_like

    with pytest.raises(ValueError, match="stream_ratio"):
        next(sharegpt_like(0, stream_ratio=1.5))
