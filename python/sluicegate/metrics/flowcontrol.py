"""Flow-control families, read from the controller when Prometheus scrapes: queue size and bytes
per priority band, pool saturation, and every request's outcome (upstream names where upstream
has the family; the outcome counter is sluicegate's, so `enqueued = dispatched + rejected +
expired + cancelled + queued` can be checked from outside)."""

from __future__ import annotations

from typing import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..flowcontrol import FlowController

# Upstream's queue families are per flow and model; the band is what the Rust core counts, so
# the flow and model labels are empty (aggregated over the band).
_QUEUE_LABELS = ["fairness_id", "priority", "inference_pool", "model_name", "target_model_name"]
_OUTCOMES = ("dispatched", "rejected_capacity", "expired_ttl", "expired_no_endpoints", "cancelled", "evicted")


class FlowControlCollector(Collector):
    def __init__(self, pool_name: str, controller: FlowController) -> None:
        self._pool = pool_name
        self._flow = controller

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
