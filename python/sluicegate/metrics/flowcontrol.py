"""Flow-control families, read from the controller when Prometheus scrapes (queue size and bytes
per priority band, pool saturation, stale endpoints) or counted as each request leaves flow
control (queue duration, requests by outcome), under upstream's names, labels and buckets, with
the inference_extension_* twins upstream still emits. sluicegate's own outcome counters keep
`enqueued = dispatched + rejected + expired + cancelled + queued` checkable from outside."""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..flowcontrol import FlowController
from ..scheduling import Decision, EndpointStatus

PREFIXES = ("llm_d_epp", "inference_extension")
# Upstream's queue families are per flow and model; the band is what the Rust core counts, so
# the flow and model labels are empty (aggregated over the band).
_QUEUE_LABELS = ["fairness_id", "priority", "inference_pool", "model_name", "target_model_name"]
_OUTCOMES = ("dispatched", "rejected_capacity", "expired_ttl", "expired_no_endpoints", "cancelled", "evicted")
# The controller's outcome -> upstream's QueueOutcome name.
_QUEUE_OUTCOME = {"dispatched": "Dispatched", "rejected-saturated": "RejectedCapacity",
                  "rejected-ttl-expired": "EvictedTTL", "rejected-no-endpoints": "EvictedNoEndpoints",
                  "cancelled": "EvictedContextCancelled", "rejected-shutting-down": "EvictedOther"}
_QUEUE_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# The one saturation signal the controller gates on is upstream's `effective` stage.
STAGE = "effective"
DETECTOR = "utilization-detector"


class FlowControlCollector(Collector):
    def __init__(self, pool_name: str, controller: FlowController,
                 endpoints: Callable[[], Sequence[EndpointStatus]] | None = None) -> None:
        self._pool = pool_name
        self._flow = controller
        self._endpoints = endpoints
        # Both counted from the one observer call per request, so a request's outcome is the same
        # in the counter and in the histogram (a client gone while dispatching is one outcome).
        self._queue_duration = [Histogram(
            f"{prefix}_flow_control_request_queue_duration_seconds",
            "Time requests spend in the Flow Control layer, from enqueue to final outcome.",
            ["fairness_id", "priority", "outcome", "inference_pool", "model_name", "target_model_name"],
            buckets=_QUEUE_BUCKETS, registry=None) for prefix in PREFIXES]
        self._requests = Counter("llm_d_epp_flow_control_requests", "Requests that left Flow Control, by outcome.",
                                 ["outcome", "priority", "inference_pool"], registry=None)
        controller.observer = self.observe

    def observe(self, flow: str, priority: int, outcome: str, seconds: float, decision: Decision | None) -> None:
        model = (decision.model or "") if decision is not None else ""
        target = (decision.target_model or model) if decision is not None else ""
        name = _QUEUE_OUTCOME.get(outcome, "RejectedOther")
        for h in self._queue_duration:
            h.labels(flow, str(priority), name, self._pool, model, target).observe(seconds)
        self._requests.labels(name, str(priority), self._pool).inc()

    def collect(self) -> Iterator[Metric]:
        stats = self._flow.stats()
        for prefix in PREFIXES:
            yield from self._gauges(prefix, stats)
        if self._endpoints is not None:
            stale = GaugeMetricFamily("llm_d_epp_flow_control_stale_endpoints",
                                      "Candidate endpoints whose metrics are missing or stale.", labels=["detector"])
            stale.add_metric([DETECTOR], sum(1 for e in self._endpoints() if e.stale))
            yield stale
        outcomes = CounterMetricFamily("sluicegate_flow_control_requests",
                                       "Requests that left flow control, by outcome.",
                                       labels=["inference_pool", "outcome"])
        for outcome in _OUTCOMES:
            outcomes.add_metric([self._pool, outcome], stats[outcome])
        enqueued = CounterMetricFamily("sluicegate_flow_control_enqueued", "Requests admitted into a queue.",
                                       labels=["inference_pool"])
        enqueued.add_metric([self._pool], stats["enqueued"])
        yield from (outcomes, enqueued)
        for h in self._queue_duration:
            yield from h.collect()
        yield from self._requests.collect()

    def _gauges(self, prefix: str, stats: dict) -> Iterator[Metric]:
        size = GaugeMetricFamily(f"{prefix}_flow_control_queue_size",
                                 "Current number of requests actively held in the Flow Control queue.",
                                 labels=_QUEUE_LABELS)
        size_bytes = GaugeMetricFamily(f"{prefix}_flow_control_queue_bytes",
                                       "Current total size in bytes of requests held in the Flow Control queue.",
                                       labels=_QUEUE_LABELS)
        for priority, requests, queued_bytes in stats["bands"]:
            labels = ["", str(priority), self._pool, "", ""]
            size.add_metric(labels, requests)
            size_bytes.add_metric(labels, queued_bytes)
        saturation = GaugeMetricFamily(f"{prefix}_flow_control_pool_saturation",
                                       "Pool saturation signal gating Flow Control dispatch (1.0: saturated).",
                                       labels=["inference_pool", "stage"])
        saturation.add_metric([self._pool, STAGE], self._flow.saturation())
        yield from (size, size_bytes, saturation)
