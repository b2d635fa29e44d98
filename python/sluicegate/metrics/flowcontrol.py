"""Flow-control families, read from the controller when Prometheus scrapes (queue size and bytes
per priority band, pool saturation, stale endpoints) or counted as each request leaves flow
control (queue duration, requests by outcome), under upstream's names, labels and buckets, with
the inference_extension_* twins upstream still emits. sluicegate's own outcome counters keep
`enqueued = dispatched + rejected + expired + cancelled + queued` checkable from outside."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Iterator, Protocol, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..scheduling import EndpointStatus
from .requests import histogram

PREFIXES = ("llm_d_epp", "inference_extension")


class QueueSource(Protocol):
    """What the collector reads at scrape time (sluicegate.extproc.flow.EppFlowControl)."""

    def stats(self) -> dict[str, Any]: ...
    def saturation(self) -> float: ...
    def queue_durations(self) -> list: ...


# Upstream's queue families are per flow and model; the band is what the Rust core counts, so
# the flow and model labels are empty (aggregated over the band).
_QUEUE_LABELS = ["fairness_id", "priority", "inference_pool", "model_name", "target_model_name"]
_OUTCOMES = ("dispatched", "rejected_capacity", "expired_ttl", "expired_no_endpoints", "cancelled", "evicted")
# The one saturation signal the controller gates on is upstream's `effective` stage.
STAGE = "effective"
DETECTOR = "utilization-detector"


class FlowControlCollector(Collector):
    def __init__(self, pool_name: str, controller: QueueSource,
                 endpoints: Callable[[], Sequence[EndpointStatus]] | None = None) -> None:
        self._pool = pool_name
        self._flow = controller
        self._endpoints = endpoints

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
        yield from self._queue_families()

    def _queue_families(self) -> Iterator[Metric]:
        # One Rust observation per request feeds both: the counter is the histograms' counts, so
        # a request's outcome is the same in each (a client gone while dispatching is one outcome).
        rows = [((flow, str(priority), outcome, self._pool, model, target), h)
                for (flow, priority, outcome, model, target), h in self._flow.queue_durations()]
        for prefix in PREFIXES:
            yield histogram(f"{prefix}_flow_control_request_queue_duration_seconds",
                            "Time requests spend in the Flow Control layer, from enqueue to final outcome.",
                            ["fairness_id", "priority", "outcome", "inference_pool", "model_name",
                             "target_model_name"], rows)
        requests = CounterMetricFamily("llm_d_epp_flow_control_requests", "Requests that left Flow Control, by outcome.",
                                       labels=["outcome", "priority", "inference_pool"])
        totals: dict[tuple[str, str], int] = defaultdict(int)
        for (_, priority, outcome, _, _, _), h in rows:
            totals[(outcome, priority)] += sum(h[1])
        for (outcome, priority), n in sorted(totals.items()):
            requests.add_metric([outcome, priority, self._pool], n)
        yield requests

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
