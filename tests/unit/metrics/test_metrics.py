"""Metric families: names and labels as upstream, values from the Rust RequestStats and endpoint
status, bearer-token auth and health on the metrics port."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sluicegate.errors import NoEndpointsError
from sluicegate.metrics import MetricsServer, build_registry
from sluicegate.scheduling import Router, find_usage

PINNED = frozenset(Path(__file__).parents[2].joinpath("data", "metric_families.txt").read_text().split())
PREFIXES = ("llm_d_epp_", "llm_d_inference_scheduler_", "inference_", "sluicegate_")


def exposed_families(families: dict) -> frozenset[str]:
    """Family names as written in the exposition (counters with their _total)."""
    return frozenset(f.name + ("_total" if f.type == "counter" else "") for f in families.values()
                     if f.name.startswith(PREFIXES))


def scrape(router: Router) -> dict:
    text = generate_latest(build_registry(router, "pool-a")).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(families: dict, family: str, name: str | None = None) -> list:
    return [s for s in families[family].samples if name is None or s.name == name]


@pytest.fixture
def router() -> Router:
    r = Router()
    r.set_endpoints([("ep-a", "10.0.0.1:8000", {}), ("ep-b", "10.0.0.2:8000", {})])
    r.ingest_metrics("10.0.0.1:8000", b"vllm:num_requests_waiting 4\nvllm:kv_cache_usage_perc 0.5\n")
    r.ingest_metrics("10.0.0.2:8000", b"vllm:num_requests_waiting 2\nvllm:kv_cache_usage_perc 0.1\n")
    return r


def test_exposed_families_are_the_pinned_list(router):
    stats = router.request_stats()
    stats.finished("m", "m", "default-flow", 0, False, error_code="BadRequest")
    assert exposed_families(scrape(router)) == PINNED


def test_pool_gauges_average_the_fresh_endpoints(router):
    f = scrape(router)
    for name in ("llm_d_epp_average_queue_size", "inference_pool_average_queue_size"):
        assert samples(f, name)[0].value == 3.0
        assert samples(f, name)[0].labels == {"name": "pool-a"}
    assert samples(f, "llm_d_epp_average_kv_cache_utilization")[0].value == pytest.approx(0.3)
    assert samples(f, "llm_d_epp_std_dev_queue_size")[0].value == 1.0
    assert samples(f, "llm_d_epp_ready_endpoints")[0].value == 2
    per = {s.labels["model_server_endpoint"]: s.value for s in samples(f, "llm_d_epp_per_endpoint_queue_size")}
    assert per == {"10.0.0.1:8000": 4, "10.0.0.2:8000": 2}
    legacy = {s.labels["model_server_pod"] for s in samples(f, "inference_pool_per_pod_queue_size")}
    assert legacy == {"ep-a", "ep-b"}


def test_legacy_request_twins_sum_over_fairness_ids(router):
    stats = router.request_stats()
    for tenant in ("a", "b", "b"):
        stats.started("m", "m-v2", tenant, 0)
        stats.finished("m", "m-v2", tenant, 0, True, duration_s=1.0, output_tokens=10)
    f = scrape(router)
    canon = {s.labels["fairness_id"]: s.value for s in samples(f, "llm_d_epp_request", "llm_d_epp_request_total")}
    assert canon == {"a": 1, "b": 2}
    (legacy,) = samples(f, "inference_objective_request", "inference_objective_request_total")
    assert legacy.labels == {"model_name": "m", "target_model_name": "m-v2", "priority": "0"}
    assert legacy.value == 3
    (ntpot,) = samples(f, "inference_objective_normalized_time_per_output_token_seconds",
                       "inference_objective_normalized_time_per_output_token_seconds_count")
    assert ntpot.value == 3


def test_scheduler_attempts_name_the_picked_endpoint_and_failures(router):
    body = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
    router.route("/v1/chat/completions", body)
    with pytest.raises(NoEndpointsError):
        router.route("/v1/chat/completions", body, subset=["10.9.9.9:1"])
    f = scrape(router)
    rows = {(s.labels["status"], s.labels["endpoint_name"], s.labels["port"]): s.value
            for s in samples(f, "llm_d_epp_scheduler_attempts", "llm_d_epp_scheduler_attempts_total")}
    picked = [k for k in rows if k[0] == "success"]
    assert len(picked) == 1 and picked[0][1] in {"ep-a", "ep-b"} and picked[0][2] == "8000"
    assert rows[("failure", "", "")] == 1


def test_histogram_buckets_are_cumulative_and_end_at_inf(router):
    stats = router.request_stats()
    for d in (0.01, 0.3, 500.0):
        stats.finished("m", "m", "f", 0, False, duration_s=d)
    f = scrape(router)
    buckets = {s.labels["le"]: s.value for s in samples(f, "llm_d_epp_request_duration_seconds",
                                                        "llm_d_epp_request_duration_seconds_bucket")}
    assert buckets["0.005"] == 0 and buckets["0.025"] == 1 and buckets["0.4"] == 2 and buckets["+Inf"] == 3


def test_label_sets_past_the_cap_fold_into_other():
    r = Router('{"maxMetricSeries": 2}')
    stats = r.request_stats()
    for model in ("a", "b", "c"):
        stats.finished(model, model, "f", 0, False)
    f = scrape(r)
    models = {s.labels["model_name"] for s in samples(f, "llm_d_epp_request", "llm_d_epp_request_total")}
    assert models == {"a", "b", "__other__"}


def test_find_usage_reads_the_last_usage_object():
    assert find_usage(b'data: {"usage":null}\n\ndata: {"usage":{"prompt_tokens":3,"completion_tokens":4}}\n\n') \
        == (3, 4, 0)
    assert find_usage(b'{"choices":[]}') is None


def _get(port: int, path: str, token: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_token_file_guards_metrics_but_not_health(router, tmp_path, loop_thread):
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    ready = {"v": False}
    server = MetricsServer(build_registry(router, "p"), lambda: ready["v"], "127.0.0.1", 0, str(token))
    loop_thread.run(server.start())
    try:
        assert _get(server.port, "/metrics")[0] == 401
        assert _get(server.port, "/metrics", "wrong")[0] == 401
        status, body = _get(server.port, "/metrics", "s3cret")
        assert status == 200 and b"llm_d_epp_ready_endpoints" in body
        assert _get(server.port, "/healthz")[0] == 200
        assert _get(server.port, "/readyz")[0] == 503
        ready["v"] = True
        assert _get(server.port, "/readyz")[0] == 200
        token.write_text("rotated")
        os.utime(token, (1, 1))  # a distinct mtime even within the same clock tick
        assert _get(server.port, "/metrics", "rotated")[0] == 200
    finally:
        loop_thread.run(server.stop())


def test_empty_token_file_is_refused_at_start(router, tmp_path):
    empty = tmp_path / "token"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="metrics-token-file"):
        MetricsServer(build_registry(router, "p"), lambda: True, "127.0.0.1", 0, str(empty))

