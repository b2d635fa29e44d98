"""`sluicegate top`: a live terminal view of one EPP, read from its /metrics.

Endpoints (queue, running, in flight, KV use, metrics age), request rates and latency per model,
and flow-control queues. Rates and quantiles come from the difference between two scrapes, so
the first frame shows totals and the next ones what happened in the last interval.
"""

from __future__ import annotations

import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text


@dataclass
class Scrape:
    """The samples of one /metrics scrape that the view shows, keyed by label values."""

    at: float
    endpoints: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    pool: dict[str, float] = field(default_factory=dict)
    requests: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    errors: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    running: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    # model -> le -> cumulative count
    latency: dict[str, dict[float, float]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    flow_queue: dict[str, float] = field(default_factory=lambda: defaultdict(float))


_ENDPOINT_GAUGES = {
    "llm_d_epp_per_endpoint_queue_size": "queue",
    "sluicegate_endpoint_in_flight_requests": "in_flight",
    "sluicegate_endpoint_metrics_age_seconds": "age",
    "sluicegate_endpoint_scrape_errors_total": "scrape_errors",
}
_POOL_GAUGES = {
    "llm_d_epp_ready_endpoints": "ready",
    "llm_d_epp_average_kv_cache_utilization": "kv",
    "llm_d_epp_average_queue_size": "queue",
    "llm_d_epp_flow_control_pool_saturation": "saturation",
}


def parse_scrape(text: str, at: float) -> Scrape:
    s = Scrape(at=at)
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name in _ENDPOINT_GAUGES:
                s.endpoints[labels.get("model_server_endpoint", "?")][_ENDPOINT_GAUGES[name]] = value
            elif name in _POOL_GAUGES:
                s.pool[_POOL_GAUGES[name]] = value
            elif name == "llm_d_epp_request_total":
                s.requests[labels["model_name"]] += value
            elif name == "llm_d_epp_request_error_total":
                s.errors[labels["model_name"]] += value
            elif name == "llm_d_epp_request_running":
                s.running[labels["model_name"]] += value
            elif name == "llm_d_epp_request_duration_seconds_bucket":
                s.latency[labels["model_name"]][float(labels["le"])] += value
            elif name == "llm_d_epp_flow_control_queue_size":
                s.flow_queue[f"p{labels.get('priority', '?')} {labels.get('fairness_id', '')}".strip()] += value
    return s


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus-style histogram_quantile over cumulative buckets; None without observations."""
    les = sorted(buckets)
    if not les or buckets[les[-1]] <= 0:
        return None
    rank = q * buckets[les[-1]]
    prev_le, prev_count = 0.0, 0.0
    for le in les:
        count = buckets[le]
        if count >= rank:
            if le == float("inf"):
                return prev_le
            width = count - prev_count
            return prev_le + (le - prev_le) * ((rank - prev_count) / width if width else 1.0)
        prev_le, prev_count = le, count
    return prev_le


def _delta(now: dict, before: dict | None) -> dict:
    if before is None:
        return dict(now)
    return {k: v - before.get(k, 0.0) for k, v in now.items()}


def render(now: Scrape, before: Scrape | None, source: str) -> Group:
    span = (now.at - before.at) if before is not None else None
    head = Text.assemble(
        ("sluicegate top ", "bold"), (source, "cyan"),
        f"   ready {now.pool.get('ready', 0):.0f}   avg KV {now.pool.get('kv', 0):.0%}"
        f"   avg queue {now.pool.get('queue', 0):.1f}",
        f"   saturation {now.pool['saturation']:.2f}" if "saturation" in now.pool else "",
    )
    eps = Table(title="endpoints", expand=True)
    for col in ("endpoint", "queue", "in flight", "metrics age", "scrape errors"):
        eps.add_column(col, justify="left" if col == "endpoint" else "right")
    for addr, v in sorted(now.endpoints.items()):
        age = v.get("age", -1)
        eps.add_row(addr, f"{v.get('queue', 0):.0f}", f"{v.get('in_flight', 0):.0f}",
                    "never" if age < 0 else f"{age * 1000:.0f} ms", f"{v.get('scrape_errors', 0):.0f}")
    reqs = Table(title="requests" + (f" (last {span:.1f} s)" if span else " (since start)"), expand=True)
    for col in ("model", "req/s" if span else "requests", "errors", "running", "p50", "p99"):
        reqs.add_column(col, justify="left" if col == "model" else "right")
    for model in sorted(now.requests):
        n = now.requests[model] - (before.requests.get(model, 0.0) if before else 0.0)
        e = now.errors.get(model, 0.0) - (before.errors.get(model, 0.0) if before else 0.0)
        lat = _delta(now.latency.get(model, {}), before.latency.get(model) if before else None)
        p50, p99 = quantile(0.5, lat), quantile(0.99, lat)
        reqs.add_row(model or "(none)", f"{n / span:.1f}" if span else f"{n:.0f}", f"{e:.0f}",
                     f"{now.running.get(model, 0):.0f}",
                     "-" if p50 is None else f"{p50 * 1000:.0f} ms", "-" if p99 is None else f"{p99 * 1000:.0f} ms")
    parts = [head, eps, reqs]
    if now.flow_queue:
        flows = Table(title="flow control", expand=True)
        flows.add_column("band / flow")
        flows.add_column("queued", justify="right")
        for k, v in sorted(now.flow_queue.items()):
            flows.add_row(k, f"{v:.0f}")
        parts.append(flows)
    return Group(*parts)


def fetch(url: str, token: str | None = None, timeout: float = 5.0) -> str:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read().decode()


def run(url: str, interval: float, once: bool, token: str | None = None, frames: int | None = None,
        console: Console | None = None) -> int:
    """Print one frame (`once`) or refresh every `interval` s until Ctrl-C or `frames` frames."""
    console = console or Console()
    if once:
        console.print(render(parse_scrape(fetch(url, token), time.monotonic()), None, url))
        return 0
    before = None
    shown = 0
    with Live(console=console, auto_refresh=False) as live:
        try:
            while frames is None or shown < frames:
                now = parse_scrape(fetch(url, token), time.monotonic())
                live.update(render(now, before, url), refresh=True)
                before, shown = now, shown + 1
                if frames is None or shown < frames:
                    time.sleep(interval)
        except KeyboardInterrupt:
            pass
    return 0
