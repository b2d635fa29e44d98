"""--enable-grpc-stream-metrics: upstream's extproc_stream* families, read at scrape time from
the Rust ext_proc server's own counters — each Process stream counted while open, timed, and
counted by how it ended (gRPC code spelled as Go's codes.Code.String(), so upstream's queries
match; a stream the proxy resets counts `Canceled`). Health and other methods are not counted."""

from __future__ import annotations

from typing import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .requests import histogram


class NativeStreamCollector(Collector):
    def __init__(self, snapshot: Callable[[], tuple | None]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        if snap is None:
            return
        inflight, ended, duration = snap
        g = GaugeMetricFamily("llm_d_epp_extproc_streams_inflight", "Number of ext_proc gRPC streams currently open.")
        g.add_metric([], inflight)
        total = CounterMetricFamily("llm_d_epp_extproc_streams",
                                    "Total ext_proc gRPC streams completed, by gRPC status code.", labels=["code"])
        for code, n in ended:
            total.add_metric([code], n)
        yield from (g, total)
        yield histogram("llm_d_epp_extproc_stream_duration_seconds",
                        "Duration an ext_proc gRPC stream stays open, in seconds.", [], [([], duration)])
