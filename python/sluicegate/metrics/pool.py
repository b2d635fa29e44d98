"""Pool families computed when Prometheus scrapes, from the Router's endpoint status: nothing
is counted on the request path. Canonical llm_d_epp_* names with upstream's `name` label, the
legacy inference_pool_* twins, and sluicegate's own data-layer families."""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Callable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..scheduling import EndpointStatus

# (canonical, legacy or None, help, value over the fresh endpoints)
_POOL_GAUGES: tuple[tuple[str, str | None, str, Callable[[list[EndpointStatus]], float]], ...] = (
    ("llm_d_epp_average_kv_cache_utilization", "inference_pool_average_kv_cache_utilization",
     "The average kv cache utilization for an inference server pool.",
     lambda eps: statistics.fmean(e.kv_usage for e in eps)),
    ("llm_d_epp_average_queue_size", "inference_pool_average_queue_size",
     "The average number of requests pending in the model server queue.",
     lambda eps: statistics.fmean(e.waiting for e in eps)),
    ("llm_d_epp_average_running_requests", "inference_pool_average_running_requests",
     "The average number of running requests across model servers in the pool.",
     lambda eps: statistics.fmean(e.running for e in eps)),
    ("llm_d_epp_std_dev_kv_cache_utilization", None,
     "The standard deviation kv cache utilization for an inference server pool.",
     lambda eps: statistics.pstdev(e.kv_usage for e in eps)),
    ("llm_d_epp_std_dev_queue_size", None,
     "The standard deviation number of requests pending in the model server queue.",
     lambda eps: statistics.pstdev(e.waiting for e in eps)),
    ("llm_d_epp_std_dev_running_requests", None,
     "The standard deviation number of running requests across model servers in the pool.",
     lambda eps: statistics.pstdev(e.running for e in eps)),
)


class PoolCollector(Collector):
    def __init__(self, pool_name: str, status: Callable[[], Sequence[EndpointStatus]]) -> None:
        self._pool = pool_name
        self._status = status

    def collect(self) -> Iterator[Metric]:
        endpoints = list(self._status())
        fresh = [e for e in endpoints if not e.stale]
        for name, legacy, doc, value in _POOL_GAUGES:
            v = value(fresh) if fresh else 0.0
            for n in (name, legacy) if legacy else (name,):
                g = GaugeMetricFamily(n, doc, labels=["name"])
                g.add_metric([self._pool], v)
                yield g
        doc = "The number of ready endpoints (fresh metrics) in the inference server pool."
        for n in ("llm_d_epp_ready_endpoints", "inference_pool_ready_pods"):
            g = GaugeMetricFamily(n, doc, labels=["name"])
            g.add_metric([self._pool], len(fresh))
            yield g
        yield from self._per_endpoint(endpoints)

    def _per_endpoint(self, endpoints: list[EndpointStatus]) -> Iterator[Metric]:
        doc = "The number of requests pending in the model server queue for each endpoint."
        queue = GaugeMetricFamily("llm_d_epp_per_endpoint_queue_size", doc,
                                  labels=["name", "model_server_endpoint"])
        legacy = GaugeMetricFamily("inference_pool_per_pod_queue_size", doc, labels=["name", "model_server_pod"])
        inflight = GaugeMetricFamily("sluicegate_endpoint_in_flight_requests",
                                     "Requests the EPP sent to each endpoint that have not finished.",
                                     labels=["name", "model_server_endpoint"])
        errors = CounterMetricFamily("sluicegate_endpoint_scrape_errors", "Failed metric scrapes per endpoint.",
                                     labels=["name", "model_server_endpoint"])
        age = GaugeMetricFamily("sluicegate_endpoint_metrics_age_seconds",
                                "Age of each endpoint's last good scrape (-1: never scraped).",
                                labels=["name", "model_server_endpoint"])
        for e in endpoints:
            labels = [self._pool, e.address]
            queue.add_metric(labels, e.waiting)
            legacy.add_metric([self._pool, e.name], e.waiting)
            inflight.add_metric(labels, e.in_flight)
            errors.add_metric(labels, e.scrape_errors)
            age.add_metric(labels, e.age_ms / 1000.0 if e.age_ms >= 0 else -1.0)
        yield from (queue, legacy, inflight, errors, age)
        yield from _datalayer_errors(endpoints)


def _datalayer_errors(endpoints: list[EndpointStatus]) -> Iterator[Metric]:
    """Upstream's data-layer error counters under both prefixes, summed over the endpoints. A
    failed metrics scrape (connection, status, timeout or unparsable text) counts as a poll error
    of metrics-data-source: the scraper extracts in the same step, so it has no extract series.
    The attribute sources (models, DCGM, pool metrics) count polls without an answer and answers
    their extractor refused apart; a source gets its series once it has failed."""
    poll: Counter[str] = Counter({"metrics-data-source": sum(e.scrape_errors for e in endpoints)})
    extract: Counter[tuple[str, str]] = Counter()
    for e in endpoints:
        for source, extractor, polls, extracts, _ in e.source_errors:
            poll[source] += polls
            if extracts:
                extract[source, extractor] += extracts
    for prefix in ("llm_d_epp", "llm_d_inference_scheduler"):
        p = CounterMetricFamily(f"{prefix}_datalayer_poll_errors", "Data-source poll errors per source type.",
                                labels=["source_type"])
        for source, n in poll.items():
            p.add_metric([source], n)
        yield p
        x = CounterMetricFamily(f"{prefix}_datalayer_extract_errors", "Extractor errors per source and extractor.",
                                labels=["source_type", "extractor_type"])
        for labels, n in extract.items():
            x.add_metric(list(labels), n)
        yield x
