"""Per-request metrics recorded by the request path, read at scrape time."""

from typing import final

from typing import Self

# (bucket upper bounds, per-bucket counts with +Inf last, sum)
_Histogram = tuple[list[float], list[int], float]

@final
class SeriesSnapshot:
    model: str
    target_model: str
    fairness_id: str
    priority: int
    requests: int
    errors: list[tuple[str, int]]  # (error_code, count)
    running: int
    duration: _Histogram
    request_size: _Histogram
    response_size: _Histogram
    input_tokens: _Histogram
    output_tokens: _Histogram
    cached_tokens: _Histogram
    ntpot: _Histogram
    ttft: _Histogram
    ttft_streaming: _Histogram
    tpot: _Histogram  # streamed responses: (duration - ttft) / (output tokens - 1)
    itl: _Histogram  # streamed responses: gaps between consecutive body chunks

@final
class RequestStats:
    """Per-request metrics by (model, target model, fairness id, priority); label sets past
    `max_series` count under model "__other__"."""

    def __new__(cls, max_series: int = 1000) -> Self: ...
    def started(self, model: str, target_model: str, fairness_id: str, priority: int) -> None: ...
    def finished(
        self, model: str, target_model: str, fairness_id: str, priority: int, was_started: bool, *,
        error_code: str | None = None, request_bytes: int | None = None, response_bytes: int | None = None,
        input_tokens: int | None = None, output_tokens: int | None = None, cached_tokens: int | None = None,
        duration_s: float | None = None, ttft_s: float | None = None, streaming: bool = False,
    ) -> None: ...
    def snapshot(self) -> list[SeriesSnapshot]: ...
    def scheduler(self) -> _Histogram: ...
    def rescored(self) -> int:
        """Scheduling cycles scored a second time (requests routed on other threads meanwhile)."""
    def attempts(self) -> list[tuple[bool, str, str, str, int]]:
        """(success, target model, endpoint name, endpoint "ip:port", count) per scheduling outcome."""
    def processing(self) -> tuple[_Histogram, _Histogram]:
        """(request processing, response processing) durations in seconds."""
    def rewrites(self) -> list[tuple[str, str, str, int]]:
        """(rewrite rule, request model, target model, count) per weighted model-rewrite decision."""

def plugin_timings() -> list[tuple[str, str, str, _Histogram]]:
    """Per-call plugin durations of this process: (extension point, plugin type, name, histogram)."""

__all__ = [
    "RequestStats",
    "plugin_timings",
    "SeriesSnapshot",
]
