"""upstream's opt-in ext_proc stream families (--enable-grpc-stream-metrics): streams open now,
how long each stayed open, how each ended by gRPC code as Go spells it. The Rust server counts
each stream; this collector reads its counters at scrape time and gives them upstream's names."""

from __future__ import annotations

from typing import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .._core.extproc import STREAM_DURATION_BUCKETS

PREFIX = "llm_d_epp_extproc_"
# (streams open, cumulative buckets then +Inf, sum in s, [(code, ended)]) or None when off
Snapshot = tuple[int, list[int], float, list[tuple[str, int]]]


class StreamMetrics(Collector):
    def __init__(self, read: Callable[[], Snapshot | None]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        snapshot = self._read()
        if snapshot is None:
            return
        inflight, buckets, total_s, ended = snapshot
        yield GaugeMetricFamily(f"{PREFIX}streams_inflight", "Number of ext_proc gRPC streams currently open.",
                                value=inflight)
        bounds = [*(floatToGoString(b) for b in STREAM_DURATION_BUCKETS), "+Inf"]
        yield HistogramMetricFamily(f"{PREFIX}stream_duration_seconds",
                                    "Duration an ext_proc gRPC stream stays open, in seconds.",
                                    buckets=list(zip(bounds, buckets)), sum_value=total_s)
        total = CounterMetricFamily(f"{PREFIX}streams", "Total ext_proc gRPC streams completed, by gRPC status code.",
                                    labels=["code"])
        for code, n in ended:
            total.add_metric([code], n)
        yield total

