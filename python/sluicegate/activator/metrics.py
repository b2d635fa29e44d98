"""The activator's families, read from its counters when Prometheus scrapes. The waiting gauge
is the signal for HPA/KEDA: requests that wait because the pool has no ready endpoint."""

from __future__ import annotations

from typing import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .activator import Activator


class ActivatorCollector(Collector):
    def __init__(self, activator: Activator) -> None:
        self._act = activator

    def collect(self) -> Iterator[Metric]:
        s, labels, pool = self._act.stats, ["inference_pool"], [self._act.pool]
        g = GaugeMetricFamily("sluicegate_scale_from_zero_waiting_requests",
                              "Requests waiting for the pool's first ready endpoint (pool at zero).", labels=labels)
        g.add_metric(pool, s.waiting)
        yield g
        g = GaugeMetricFamily("sluicegate_activator_managed",
                              "1 when the pool's activator annotations are valid and its scale target found.",
                              labels=labels)
        g.add_metric(pool, 1 if s.managed else 0)
        yield g
        c = CounterMetricFamily("sluicegate_activator_scale_events", "Replica changes made by the activator.",
                                labels=["inference_pool", "direction"])
        c.add_metric([*pool, "up"], s.scale_ups)
        c.add_metric([*pool, "down"], s.scale_downs)
        yield c
        c = CounterMetricFamily("sluicegate_scale_from_zero_expired_requests",
                                "Requests failed with 503 because no endpoint was ready within the grace period.",
                                labels=labels)
        c.add_metric(pool, s.expired)
        yield c
