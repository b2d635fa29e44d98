"""Sequential client on one keep-alive connection, timing each request, and percentile summaries.

One request in flight at a time: the figure is the latency a request pays on the path, not what
the path sustains under load (that is the load benches' job).
"""

from __future__ import annotations

import http.client
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from benches.backend import ECHO_HEADER


class KeepAliveClient:
    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        parts = urlsplit(url)
        self._conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
        self._conn.connect()
        # http.client sends headers and a bytes body in one write, so Nagle only matters here.
        self._conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, method: str, path: str, body: bytes | None,
             headers: dict[str, str]) -> tuple[int, str | None, int]:
        """One request: (status, the destination the backend was routed by, wall time in ns)."""
        start = time.perf_counter_ns()
        self._conn.request(method, path, body=body, headers=headers)
        response = self._conn.getresponse()
        response.read()
        elapsed = time.perf_counter_ns() - start
        return response.status, response.getheader(ECHO_HEADER), elapsed

    def close(self) -> None:
        self._conn.close()


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    if not sorted_values:
        raise ValueError("percentile: no values")
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil without floats drifting
    return sorted_values[int(rank) - 1]


@dataclass(frozen=True)
class LatencySummary:
    n: int
    p50_us: float
    p99_us: float
    mean_us: float

    @classmethod
    def of(cls, latencies_ns: list[int]) -> LatencySummary:
        ordered = sorted(latencies_ns)
        return cls(n=len(ordered), p50_us=percentile(ordered, 50) / 1000,
                   p99_us=percentile(ordered, 99) / 1000,
                   mean_us=sum(ordered) / len(ordered) / 1000)
