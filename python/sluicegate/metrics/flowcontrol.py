"""Flow-control families under upstream's names, labels and buckets, with the
inference_extension_* twins upstream still emits: read from the controller when Prometheus
scrapes (pool saturation, stale endpoints, capacity utilization per band and overall), or kept in
Rust where each thing happens (queue size and bytes per flow and model, enqueue, dispatch-cycle and
queue durations, requests by outcome). sluicegate's own outcome counters keep
`enqueued = dispatched + rejected + expired + cancelled + queued` checkable from outside.

The revocation and reclaim families come from in-flight eviction (`flowControl.enableEviction`);
with it off they carry their true values: nothing issued, nothing pending."""

from __future__ import annotations

from typing import Any, Callable, Iterator, Protocol, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ..scheduling import EndpointStatus
from .requests import histogram

PREFIXES = ("llm_d_epp", "inference_extension")


class QueueSource(Protocol):
    """What the collector reads at scrape time (sluicegate.extproc.flow.EppFlowControl)."""

    def stats(self) -> dict[str, Any]: ...
    def saturation(self) -> float: ...
    def queue_durations(self) -> list: ...
    def queue_totals(self) -> list[tuple[int, str, int]]: ...
    def flow_metrics(self) -> tuple[list, list, Any]: ...


# Per flow (fairness id and priority) and model, as upstream.
_QUEUE_LABELS = ["fairness_id", "priority", "inference_pool", "model_name", "target_model_name"]
_OUTCOMES = ("dispatched", "rejected_capacity", "expired_ttl", "expired_no_endpoints", "cancelled", "evicted")
# The one saturation signal the controller gates on is upstream's `effective` stage.
STAGE = "effective"
DETECTOR = "utilization-detector"
REVOCATION_BUCKETS = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "+Inf")


class FlowControlCollector(Collector):
    def __init__(self, pool_name: str, controller: QueueSource,
                 endpoints: Callable[[], Sequence[EndpointStatus]] | None = None) -> None:
        self._pool = pool_name
        self._flow = controller
        self._endpoints = endpoints

    def collect(self) -> Iterator[Metric]:
        stats = self._flow.stats()
        gauges, enqueue, cycle = self._flow.flow_metrics()
        for prefix in PREFIXES:
            yield from self._gauges(prefix, gauges)
            yield histogram(f"{prefix}_flow_control_dispatch_cycle_duration_seconds",
                            "Time taken by each internal dispatch cycle of the Flow Control layer.", [], [([], cycle)])
            yield histogram(f"{prefix}_flow_control_request_enqueue_duration_seconds",
                            "Time taken to enqueue requests into the Flow Control layer.",
                            ["fairness_id", "priority", "outcome"],
                            (([flow, str(priority), outcome], h) for (flow, priority, outcome), h in enqueue))
        yield from self._capacity(stats)
        yield from self._reclamation(stats)
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
        # One Rust observation per request feeds both, so a request's outcome is the same in each
        # (a client gone while dispatching is one outcome); the counter outlives idle flows' series.
        rows = [((flow, str(priority), outcome, self._pool, model, target), h)
                for (flow, priority, outcome, model, target), h in self._flow.queue_durations()]
        for prefix in PREFIXES:
            yield histogram(f"{prefix}_flow_control_request_queue_duration_seconds",
                            "Time requests spend in the Flow Control layer, from enqueue to final outcome.",
                            ["fairness_id", "priority", "outcome", "inference_pool", "model_name",
                             "target_model_name"], rows)
        requests = CounterMetricFamily("llm_d_epp_flow_control_requests", "Requests that left Flow Control, by outcome.",
                                       labels=["outcome", "priority", "inference_pool"])
        for priority, outcome, n in self._flow.queue_totals():
            requests.add_metric([outcome, str(priority), self._pool], n)
        yield requests

    def _gauges(self, prefix: str, gauges: list) -> Iterator[Metric]:
        size = GaugeMetricFamily(f"{prefix}_flow_control_queue_size",
                                 "Current number of requests actively held in the Flow Control queue.",
                                 labels=_QUEUE_LABELS)
        size_bytes = GaugeMetricFamily(f"{prefix}_flow_control_queue_bytes",
                                       "Current total size in bytes of requests held in the Flow Control queue.",
                                       labels=_QUEUE_LABELS)
        # A flow stays (at 0) until it has been idle for upstream's flow GC timeout.
        for flow, priority, model, target, requests, queued_bytes in gauges:
            labels = [flow, str(priority), self._pool, model, target]
            size.add_metric(labels, requests)
            size_bytes.add_metric(labels, queued_bytes)
        saturation = GaugeMetricFamily(f"{prefix}_flow_control_pool_saturation",
                                       "Pool saturation signal gating Flow Control dispatch (1.0: saturated).",
                                       labels=["inference_pool", "stage"])
        saturation.add_metric([self._pool, STAGE], self._flow.saturation())
        yield from (size, size_bytes, saturation)

    def _capacity(self, stats: dict) -> Iterator[Metric]:
        occupied = {priority: (requests, queued_bytes) for priority, requests, queued_bytes in stats["bands"]}
        by_band = {kind: GaugeMetricFamily(
            f"llm_d_epp_flow_control_capacity_utilization_{kind}",
            f"Fraction of a priority band's {kind} capacity currently occupied (0.0-1.0).",
            labels=["priority", "inference_pool"]) for kind in ("requests", "bytes")}
        for priority, max_requests, max_bytes in stats["band_limits"]:
            requests, queued_bytes = occupied.get(priority, (0, 0))
            for kind, used, limit in (("requests", requests, max_requests), ("bytes", queued_bytes, max_bytes)):
                if limit > 0:
                    by_band[kind].add_metric([str(priority), self._pool], used / limit)
        yield from by_band.values()
        # The all-bands rollup exists only when a global capacity is configured, as upstream.
        for kind, used, limit in (("requests", stats["queued_requests"], stats["max_requests"]),
                                  ("bytes", stats["queued_bytes"], stats["max_bytes"])):
            g = GaugeMetricFamily(f"llm_d_epp_flow_control_global_capacity_utilization_{kind}",
                                  f"Fraction of the global {kind} capacity currently occupied across all bands.",
                                  labels=["inference_pool"])
            if limit > 0:
                g.add_metric([self._pool], used / limit)
            yield g

    def _reclamation(self, stats: dict) -> Iterator[Metric]:
        # With enableEviction off nothing is ever revoked: the families carry their true zeros.
        ev = stats.get("eviction") or {}
        issued_by = dict(ev.get("issued", []))
        issued = CounterMetricFamily("llm_d_epp_flow_control_revocations_issued",
                                     "In-flight eviction revocations issued, by the demand band's priority.",
                                     labels=["priority", "inference_pool"])
        for priority in sorted({p for p, _, _ in stats["band_limits"]} | set(issued_by), reverse=True):
            issued.add_metric([str(priority), self._pool], issued_by.get(priority, 0))
        ended = CounterMetricFamily("llm_d_epp_flow_control_revocations",
                                    "In-flight eviction revocations by terminal outcome.",
                                    labels=["outcome", "inference_pool"])
        for outcome in ("confirmed", "timed_out"):
            ended.add_metric([outcome, self._pool], ev.get(outcome, 0))
        yield from (issued, ended)
        for name, doc in (("reclaim_target", "Last computed reclamation deficit, in saturation-gauge units."),
                          ("pending_reclaim", "Sum of outstanding and cooling pending-reclaim debits.")):
            g = GaugeMetricFamily(f"llm_d_epp_flow_control_{name}", doc, labels=["inference_pool"])
            g.add_metric([self._pool], ev.get(name, 0.0))
            yield g
        if "confirmation" in ev:
            yield histogram("llm_d_epp_flow_control_revocation_confirmation_seconds",
                            "Time from revocation issue to confirmed stream termination.",
                            ["inference_pool"], [([self._pool], ev["confirmation"])])
            return
        confirmation = HistogramMetricFamily("llm_d_epp_flow_control_revocation_confirmation_seconds",
                                             "Time from revocation issue to confirmed stream termination.",
                                             labels=["inference_pool"])
        confirmation.add_metric([self._pool], [(b, 0) for b in REVOCATION_BUCKETS], 0)
        yield confirmation
