"""The optimizer's Prometheus collector against a real Prometheus server scraping a real
/metrics endpoint with vLLM's metric families: the autoscaler's queries give the arrival
rate, mean prompt and output tokens, mean TTFT and ITL of a model in a namespace, and the
MetricsAvailable condition says when a model has no series."""

from __future__ import annotations

import asyncio

import pytest

from sluicegate.optimizer.prometheus import PrometheusSource
from sluicegate.standalone.ports import find_free_port
from tests.prometheus.server import PrometheusServer
from tests.prometheus.vllm import OUTPUT, PROMPT, RATE_RPS, TPOT_S, TTFT_S, VllmMetrics, wait_for_rate

MODEL, NAMESPACE = "meta/llama-3.1-8b", "llm-inference"


@pytest.fixture
def prometheus_with_vllm(tmp_path):
    with VllmMetrics(MODEL) as vllm, PrometheusServer(tmp_path, {"vllm": (
            [f"127.0.0.1:{vllm.port}"], {"namespace": NAMESPACE})}) as prom:
        yield prom


def _observe(source: PrometheusSource, keys):
    return asyncio.run(source.observe(keys))


def test_load_and_latency_come_from_the_vllm_series(prometheus_with_vllm) -> None:
    source = PrometheusSource(prometheus_with_vllm.url, window="5s")
    seen = wait_for_rate(source, NAMESPACE, MODEL, settle_s=6.0)
    assert seen.metrics.available and seen.metrics.reason == "MetricsFound"
    assert seen.load is not None and seen.load.namespace == NAMESPACE
    assert seen.load.arrival_rps == pytest.approx(RATE_RPS, rel=0.35)
    # Sums and counts move together, so their rate ratio is the exact per-request mean.
    assert seen.load.input_tokens == pytest.approx(PROMPT, rel=1e-6)
    assert seen.load.output_tokens == pytest.approx(OUTPUT, rel=1e-6)
    assert seen.ttft_ms == pytest.approx(TTFT_S * 1000, rel=1e-6)
    assert seen.itl_ms == pytest.approx(TPOT_S * 1000, rel=1e-6)


def test_a_model_without_series_is_reported_missing(prometheus_with_vllm) -> None:
    source = PrometheusSource(prometheus_with_vllm.url)
    seen = _observe(source, [(NAMESPACE, "org/absent")])[(NAMESPACE, "org/absent")]
    assert not seen.metrics.available and seen.metrics.reason == "MetricsMissing"
    assert seen.load is None


def test_an_unreachable_server_is_a_prometheus_error() -> None:
    source = PrometheusSource(f"http://127.0.0.1:{find_free_port()}", timeout_s=2.0)
    seen = _observe(source, [(NAMESPACE, MODEL)])[(NAMESPACE, MODEL)]
    assert not seen.metrics.available and seen.metrics.reason == "PrometheusError"
