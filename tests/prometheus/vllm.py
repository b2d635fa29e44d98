"""vLLM's request metric families on a real HTTP server (prometheus_client), advanced at a
known rate with known per-request values, for a real Prometheus to scrape in the optimizer's
collector tests; and a wait until Prometheus has the two scrapes rate() needs."""

from __future__ import annotations

import asyncio
import threading
import time

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from sluicegate.optimizer.inputs import ModelObservation
from sluicegate.optimizer.prometheus import PrometheusSource
from sluicegate.standalone.ports import find_free_port

RATE_RPS, PROMPT, OUTPUT, TTFT_S, TPOT_S = 20.0, 300, 60, 0.25, 0.02


class VllmMetrics:
    """vLLM's request families on a real HTTP server, one finished request every 1/RATE s."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.registry = CollectorRegistry()
        r, labels = self.registry, ["model_name"]
        self.success = Counter("vllm:request_success", "Finished requests.", labels, registry=r)
        self.hists = [
            (Histogram("vllm:request_prompt_tokens", "Prompt tokens.", labels, registry=r), PROMPT),
            (Histogram("vllm:request_generation_tokens", "Output tokens.", labels, registry=r),
             OUTPUT),
            (Histogram("vllm:time_to_first_token_seconds", "TTFT.", labels, registry=r), TTFT_S),
            (Histogram("vllm:time_per_output_token_seconds", "TPOT.", labels, registry=r),
             TPOT_S)]
        self.port = find_free_port()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(1.0 / RATE_RPS):
            self.success.labels(self.model).inc()
            for h, value in self.hists:
                h.labels(self.model).observe(value)

    def __enter__(self) -> VllmMetrics:
        self.server, _ = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.server.shutdown()


def wait_for_rate(source: PrometheusSource, namespace: str, model: str, settle_s: float,
                  timeout_s: float = 60.0) -> ModelObservation:
    """The model's observation once its arrival rate is visible and then `settle_s` later
    (rate() divides by its whole range: it is right once the range is full of samples)."""
    deadline = time.monotonic() + timeout_s
    while True:
        seen = asyncio.run(source.observe([(namespace, model)]))[(namespace, model)]
        if (seen.load is not None and seen.load.arrival_rps > 0) or time.monotonic() > deadline:
            break
        time.sleep(1.0)  # poll interval of this bounded wait
    time.sleep(settle_s)  # observation window: rate() is right once its whole range holds samples
    return asyncio.run(source.observe([(namespace, model)]))[(namespace, model)]
