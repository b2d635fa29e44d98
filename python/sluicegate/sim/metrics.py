"""Prometheus exposition of one simulated server under vLLM's metric names and labels: gauges
and counters are read from the engine at scrape time, latency histograms are observed live.
Each server owns its registry, so many servers can share one process."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sluicegate.sim.config import SimConfig

if TYPE_CHECKING:
    from sluicegate.sim.engine import Engine, SimRequest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# vLLM's bucket boundaries, so dashboards and the EPP see the same shapes.
_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
_ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0, 20.0, 40.0, 80.0)


class SimMetrics:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.registry = CollectorRegistry(auto_describe=False)
        labels = {"model_name": config.model, "engine": "0"}
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "Time to first token.",
                              list(labels), registry=self.registry,
                              buckets=_TTFT_BUCKETS).labels(**labels)
        self.itl = Histogram("vllm:inter_token_latency_seconds", "Inter-token latency.",
                             list(labels), registry=self.registry,
                             buckets=_ITL_BUCKETS).labels(**labels)

    def attach(self, engine: Engine) -> None:
        self.registry.register(_EngineCollector(engine))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _EngineCollector(Collector):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        engine, cfg = self.engine, self.engine.config
        names, values = ["model_name", "engine"], [cfg.model, "0"]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=names)
            family.add_metric(values, value)
            return family

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=names)
            family.add_metric(values, value)
            return family

        yield gauge("vllm:num_requests_running", "Requests in the running batch.", len(engine.running))
        yield gauge("vllm:num_requests_waiting", "Requests waiting to be scheduled.", len(engine.waiting))
        yield gauge("vllm:kv_cache_usage_perc", "KV-cache usage, 1 means full.", engine.kv.usage())
        yield counter("vllm:prefix_cache_queries", "Prompt tokens looked up in the prefix cache.",
                      engine.prefix_query_tokens)
        yield counter("vllm:prefix_cache_hits", "Prompt tokens found in the prefix cache.",
                      engine.prefix_hit_tokens)
        yield counter("vllm:num_preemptions", "Preemptions of running requests.", engine.preemptions)
        # vLLM has no adapter-load counter; this one is the simulator's own.
        yield counter("sim:lora_adapter_loads", "LoRA adapters loaded into a slot.", engine.loras.loads)
        success = CounterMetricFamily("vllm:request_success", "Finished requests by reason.",
                                      labels=[*names, "finished_reason"])
        for reason, count in engine.finished.items():
            success.add_metric([*values, reason], count)
        yield success

        info = GaugeMetricFamily("vllm:cache_config_info", "KV-cache configuration.",
                                 labels=["block_size", "num_gpu_blocks", "enable_prefix_caching"])
        info.add_metric([str(cfg.block_size), str(cfg.kv_blocks), "True"], 1.0)
        yield info

        # vLLM publishes adapters as labels and the update time as value; readers take the newest.
        lora = GaugeMetricFamily("vllm:lora_requests_info", "Running and waiting LoRA adapters.",
                                 labels=["running_lora_adapters", "waiting_lora_adapters", "max_lora"])
        running = _adapters(engine.running)
        waiting = _adapters(engine.waiting)
        lora.add_metric([running, waiting, str(cfg.max_loras)], time.time())
        yield lora


def _adapters(requests: Iterable[SimRequest]) -> str:
    names = sorted({req.lora for req in requests if req.lora})
    return ",".join(names)
