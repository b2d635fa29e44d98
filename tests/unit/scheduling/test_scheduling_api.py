"""sluicegate.scheduling.Scheduler: the Rust scheduler built from config, driven from Python."""

from __future__ import annotations

import pytest

from sluicegate.errors import BadRequestError, ConfigError, NoEndpointsError
from sluicegate.scheduling import Endpoint, Request, Scheduler

A, B, C = "10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}


def _pool(config=None, waiting=(5, 0, 9), labels=({}, {}, {})) -> Scheduler:
    sched = Scheduler(config)
    sched.set_endpoints([Endpoint(f"ep{i}", a, lab) for i, (a, lab) in enumerate(zip((A, B, C), labels))])
    for address, w in zip((A, B, C), waiting):
        sched.update_metrics(address, f"vllm:num_requests_waiting {w}\nvllm:kv_cache_usage_perc 0.2\n")
    return sched


def test_default_config_picks_the_shortest_queue_and_counts_it_in_flight():
    sched = _pool()
    result = sched.schedule(Request(CHAT))
    assert result.endpoints == (B,) and result.primary == B
    assert result.model == "m" and result.target_model is None and result.body is None
    assert {s.address: s.in_flight for s in sched.router.status()}[B] == 1
    sched.release(B)
    assert all(s.in_flight == 0 for s in sched.router.status())


def test_explain_reports_raw_scores_and_totals_without_side_effects():
    sched = _pool()
    result = sched.schedule(Request(CHAT), explain=True)
    (run,) = result.profiles
    assert run.name == "default" and run.picked == (B,) and set(run.candidates) == {A, B, C}
    queue = next(s for s in run.scorers if s.name == "queue-scorer")
    assert queue.weight == 2.0 and queue.scores == {A: pytest.approx(4 / 9), B: 1.0, C: 0.0}
    assert max(run.totals, key=run.totals.get) == B
    assert all(s.in_flight == 0 for s in sched.router.status())


def test_model_rewrite_and_yaml_config_text():
    sched = _pool("plugins: [{type: queue-scorer}, {type: max-score-picker, parameters: {maxNumOfEndpoints: 2}}]\n"
                  "schedulingProfiles: [{name: p, plugins: [{pluginRef: queue-scorer}, {pluginRef: max-score-picker}]}]")
    result = sched.schedule(Request(CHAT, model_rewrite="m-v2"))
    assert result.endpoints == (B, A)
    assert result.target_model == "m-v2" and b'"m-v2"' in result.body


def test_disaggregation_names_the_prefill_endpoint_in_a_header():
    config = """
plugins:
- {type: prefill-filter}
- {type: decode-filter}
- {type: queue-scorer}
- {type: max-score-picker}
- {type: always-disagg-pd-decider, name: always}
- {type: disagg-profile-handler, parameters: {prefillDeciderPluginName: always}}
schedulingProfiles:
- {name: prefill, plugins: [{pluginRef: prefill-filter}, {pluginRef: queue-scorer}, {pluginRef: max-score-picker}]}
- {name: decode, plugins: [{pluginRef: decode-filter}, {pluginRef: queue-scorer}, {pluginRef: max-score-picker}]}
"""
    role = "llm-d.ai/role"
    sched = _pool(config, labels=({role: "prefill"}, {role: "decode"}, {role: "prefill"}))
    result = sched.schedule(Request(CHAT))
    assert result.primary == B
    assert result.headers == {"x-prefiller-host-port": A}


def test_errors_are_the_request_path_exceptions():
    sched = _pool()
    with pytest.raises(BadRequestError, match="model"):
        sched.schedule(Request(b'{"model": 3}'))
    with pytest.raises(NoEndpointsError):
        sched.schedule(Request(CHAT, subset=["10.9.9.9"]))
    with pytest.raises(KeyError, match="10.9.9.9"):
        sched.update_metrics("10.9.9.9:1", "vllm:num_requests_waiting 1\n")
    with pytest.raises(ConfigError, match="nope"):
        Scheduler("plugins: [{type: nope}]")
