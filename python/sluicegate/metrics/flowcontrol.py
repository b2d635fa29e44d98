"""Flow-control families, read from the controller when Prometheus scrapes: queue size and bytes
per priority band, pool saturation, and every request's outcome (upstream names where upstream
has the family; the outcome counter is sluicegate's, so `enqueued = dispatched + rejected +
expired + cancelled + queued` can be checked from outside)."""

from __future__ import annotations

from typing import Iterator

from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..flowcontrol import FlowController
from ..scheduling import Decision

# Upstream's queue families are per flow and model; the band is what the Rust core counts, so
# the flow and model labels are empty (aggregated over the band).
_QUEUE_LABELS = ["fairness_id", "priority", "inference_pool", "model_name", "target_model_name"]
_OUTCOMES = ("dispatched", "rejected_capacity", "expired_ttl", "expired_no_endpoints", "cancelled", "evicted")
# The controller's outcome -> upstream's QueueOutcome name.
_QUEUE_OUTCOME = {"dispatched": "Dispatched", "rejected-saturated": "RejectedCapacity",
                  "rejected-ttl-expired": "EvictedTTL", "cancelled": "EvictedContextCancelled"}
_QUEUE_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class FlowControlCollector(Collector):
    def __init__(self, pool_name: str, controller: FlowController) -> None:
        self._pool = pool_name
        self._flow = controller
        # Observed per request (only requests that queued: the direct path has no wait to time).
        self._queue_duration = Histogram(
            "llm_d_epp_flow_control_request_queue_duration_seconds",
            "Time requests spend in the Flow Control layer, from enqueue to final outcome.",
            ["fairness_id", "priority", "outcome", "inference_pool", "model_name", "target_model_name"],
            buckets=_QUEUE_BUCKETS, registry=None)
        controller.observer = self.observe

    def observe(self, flow: str, priority: int, outcome: str, seconds: float, decision: Decision | None) -> None:
        model = (decision.model or "") if decision is not None else ""
        target = (decision.target_model or model) if decision is not None else ""
        self._queue_duration.labels(flow, str(priority), _QUEUE_OUTCOME.get(outcome, "EvictedOther"), self._pool,
                                    model, target).observe(seconds)

    def collect(self) -> Iterator[Metric]:
        stats = self._flow.stats()
        size = GaugeMetricFamily("llm_d_epp_flow_control_queue_size",
                                 "Current number of requests actively held in the Flow Control queue.",
                                 labels=_QUEUE_LABELS)
        size_bytes = GaugeMetricFamily("llm_d_epp_flow_control_queue_bytes",
                                       "Current total size in bytes of requests held in the Flow Control queue.",
                                       labels=_QUEUE_LABELS)
        for priority, requests, queued_bytes in stats["bands"]:
            labels = ["", str(priority), self._pool, "", ""]
            size.add_metric(labels, requests)
            size_bytes.add_metric(labels, queued_bytes)
        saturation = GaugeMetricFamily("llm_d_epp_flow_control_pool_saturation",
                                       "Current saturation level of the inference pool (0 empty, 1 saturated).",
                                       labels=["inference_pool"])
        saturation.add_metric([self._pool], self._flow.saturation())
        outcomes = CounterMetricFamily("sluicegate_flow_control_requests",
                                       "Requests that left flow control, by outcome.",
                                       labels=["inference_pool", "outcome"])
        for outcome in _OUTCOMES:
            outcomes.add_metric([self._pool, outcome], stats[outcome])
        enqueued = CounterMetricFamily("sluicegate_flow_control_enqueued", "Requests admitted into a queue.",
                                       labels=["inference_pool"])
        enqueued.add_metric([self._pool], stats["enqueued"])
        yield from (size, size_bytes, saturation, outcomes, enqueued)
        yield from self._queue_duration.collect()
