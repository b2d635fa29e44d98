"""Prometheus metrics and HTTP health for the EPP, on --metrics-port.

Every family is computed when Prometheus scrapes, from state the request path keeps anyway
(the Rust RequestStats and endpoint status), so serving a request costs two calls into Rust.
"""

from __future__ import annotations

from typing import Callable, Iterator

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .. import __version__
from ..scheduling import Router
from .pool import PoolCollector
from .requests import RequestCollector
from .server import MetricsServer

__all__ = ["MetricsServer", "build_registry"]

# Upstream (Go client) exposes no `_created` series; neither do we.
disable_created_metrics()


class InfoCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        doc = "General information of the current build of the endpoint picker."
        for name in ("llm_d_epp_info", "inference_extension_info"):
            g = GaugeMetricFamily(name, doc, labels=["commit", "build_ref"])
            g.add_metric([__version__, f"sluicegate-{__version__}"], 1)
            yield g


def build_registry(router: Router, pool_name: str, extra: Callable[[], list[Collector]] | None = None) -> CollectorRegistry:
    """The EPP's registry: request, pool and info families plus process/GC/platform ones."""
    registry = CollectorRegistry(auto_describe=False)
    for c in (RequestCollector(router.request_stats()), PoolCollector(pool_name, router.status), InfoCollector(),
              PROCESS_COLLECTOR, GC_COLLECTOR, PLATFORM_COLLECTOR, *(extra() if extra else ())):
        registry.register(c)
    return registry
