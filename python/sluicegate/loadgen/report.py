"""`LoadReport`: what one load run measured — counts, latency percentiles over the successful
requests, output throughput and how many requests each endpoint served."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sluicegate.loadgen.client import RequestResult


@dataclass(frozen=True)
class LoadReport:
    workload: str
    rate: float
    duration_s: float  # from the first arrival slot to the last response
    requests: int  # sent; `dropped` arrivals found max_in_flight requests open and were not sent
    errors: int
    dropped: int
    ttft_p50_ms: float | None
    ttft_p90_ms: float | None
    ttft_p99_ms: float | None
    e2e_p50_ms: float | None
    e2e_p99_ms: float | None
    output_tokens: int
    output_tokens_per_s: float
    per_endpoint: dict[str, int] = field(default_factory=dict)
    status_counts: dict[str, int] = field(default_factory=dict)  # "0" = no response

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between ranks; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def build_report(workload: str, rate: float, duration_s: float, results: Sequence[RequestResult],
                 dropped: int) -> LoadReport:
    ok = [r for r in results if r.ok]
    ttft_ms = [r.ttft_s * 1000.0 for r in ok if r.ttft_s is not None]
    e2e_ms = [r.e2e_s * 1000.0 for r in ok]
    tokens = sum(r.output_tokens for r in ok)
    return LoadReport(
        workload=workload, rate=rate, duration_s=duration_s, requests=len(results),
        errors=len(results) - len(ok), dropped=dropped,
        ttft_p50_ms=percentile(ttft_ms, 50), ttft_p90_ms=percentile(ttft_ms, 90),
        ttft_p99_ms=percentile(ttft_ms, 99), e2e_p50_ms=percentile(e2e_ms, 50),
        e2e_p99_ms=percentile(e2e_ms, 99), output_tokens=tokens,
        output_tokens_per_s=tokens / duration_s if duration_s > 0 else 0.0,
        per_endpoint=dict(sorted(Counter(r.endpoint for r in results if r.endpoint).items())),
        status_counts=dict(sorted(Counter(str(r.status) for r in results).items())))
