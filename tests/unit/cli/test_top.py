"""`sluicegate top`: parsing a scrape, quantiles from histogram deltas, and one rendered frame
read from a real EPP metrics server."""

from __future__ import annotations

import io
import math

import pytest
from prometheus_client import generate_latest
from rich.console import Console

from sluicegate.metrics import MetricsServer, build_registry
from sluicegate.scheduling import Router
from sluicegate.top import parse_scrape, quantile, render, run


@pytest.fixture
def router() -> Router:
    r = Router()
    r.set_endpoints([("a", "10.0.0.1:8000", {}), ("b", "10.0.0.2:8000", {})])
    r.ingest_metrics("10.0.0.1:8000", b"vllm:num_requests_waiting 7\nvllm:kv_cache_usage_perc 0.5\n")
    stats = r.request_stats()
    for d in (0.1, 0.2, 0.3, 3.0):
        stats.finished("llama", "llama", "f", 0, False, duration_s=d)
    return r


def test_quantile_interpolates_inside_the_bucket_like_prometheus():
    buckets = {0.1: 0.0, 0.5: 10.0, 1.0: 10.0, math.inf: 10.0}
    assert quantile(0.5, buckets) == pytest.approx(0.3)
    assert quantile(0.5, {1.0: 0.0, math.inf: 0.0}) is None
    assert quantile(0.99, {1.0: 0.0, math.inf: 5.0}) == 1.0  # all above the last bound


def test_scrape_has_endpoints_pool_and_requests(router):
    s = parse_scrape(generate_latest(build_registry(router, "p")).decode(), at=0.0)
    assert s.endpoints["10.0.0.1:8000"]["queue"] == 7
    assert s.endpoints["10.0.0.2:8000"]["age"] == -1
    assert s.pool["ready"] == 1
    assert s.requests == {"llama": 4}
    assert quantile(0.5, s.latency["llama"]) == pytest.approx(0.2, abs=0.05)


def test_second_frame_shows_rates_over_the_interval(router):
    text = generate_latest(build_registry(router, "p")).decode()
    before = parse_scrape(text, at=0.0)
    router.request_stats().finished("llama", "llama", "f", 0, False, duration_s=0.1)
    now = parse_scrape(generate_latest(build_registry(router, "p")).decode(), at=2.0)
    out = io.StringIO()
    Console(file=out, width=120).print(render(now, before, "test"))
    frame = out.getvalue()
    assert "requests (last 2.0 s)" in frame
    header, row = _table_rows(frame, "model"), _table_rows(frame, "llama")
    assert header[:3] == ["model", "req/s", "errors"]
    assert row[:3] == ["llama", "0.5", "0"]  # one request, no error, in two seconds
    assert row[4] != "-"  # and its latency is in the interval's p50


def _table_rows(frame: str, first_cell: str) -> list[str]:
    """The cells of the one table row of `frame` whose first cell is `first_cell`."""
    rows = [[c.strip() for c in line.strip().strip("│┃").split("│" if "│" in line else "┃")]
            for line in frame.splitlines() if line.strip().startswith(("│", "┃"))]
    (row,) = [r for r in rows if r[0] == first_cell]
    return row


def test_once_prints_a_frame_from_a_live_metrics_server(router, loop_thread):
    server = MetricsServer(build_registry(router, "p"), lambda: True, "127.0.0.1", 0)
    loop_thread.run(server.start())
    try:
        out = io.StringIO()
        assert run(f"http://127.0.0.1:{server.port}/metrics", 1.0, once=True, console=Console(file=out, width=120)) == 0
    finally:
        loop_thread.run(server.stop())
    frame = out.getvalue()
    assert "10.0.0.1:8000" in frame and "10.0.0.2:8000" in frame and "llama" in frame and "never" in frame
