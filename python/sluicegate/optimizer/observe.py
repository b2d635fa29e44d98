"""Observed load per model from a gateway's own request accounting (no Prometheus needed):
arrivals with their prompt tokens and completions with their output tokens, kept for a
sliding window; the window's rate and means are the `ModelLoad` the optimizer sizes for."""

from __future__ import annotations

from collections import deque

from sluicegate.errors import ConfigError

from .inputs import ModelLoad


class LoadMeter:
    def __init__(self, window_s: float, started_at: float, max_events: int = 1_000_000) -> None:
        if not window_s > 0:
            raise ConfigError(f"LoadMeter window_s={window_s!r}: must be > 0")
        self.window_s = window_s
        self._started = started_at
        self._max = max_events
        self._arrivals: dict[str, deque[tuple[float, int]]] = {}
        self._completions: dict[str, deque[tuple[float, int]]] = {}
        self._last_output: dict[str, float] = {}

    def arrived(self, model: str, input_tokens: int, now: float) -> None:
        self._arrivals.setdefault(model, deque(maxlen=self._max)).append((now, input_tokens))

    def completed(self, model: str, output_tokens: int, now: float) -> None:
        self._completions.setdefault(model, deque(maxlen=self._max)).append((now, output_tokens))

    def models(self) -> list[str]:
        return sorted(self._arrivals)

    def load(self, model: str, now: float, namespace: str = "") -> ModelLoad:
        """Arrival rate over the window (or since start, when younger), mean prompt tokens of
        those arrivals, mean output tokens of the window's completions (else the last seen)."""
        since = now - self.window_s
        arrivals = self._trim(self._arrivals.get(model), since)
        completions = self._trim(self._completions.get(model), since)
        span = min(self.window_s, max(now - self._started, 1e-9))
        rate = len(arrivals) / span
        mean_in = sum(n for _, n in arrivals) / len(arrivals) if arrivals else 0.0
        if completions:
            self._last_output[model] = sum(n for _, n in completions) / len(completions)
        mean_out = max(1.0, self._last_output.get(model, 1.0))
        return ModelLoad(model=model, namespace=namespace, arrival_rps=rate,
                         input_tokens=mean_in, output_tokens=mean_out)

    @staticmethod
    def _trim(events: deque[tuple[float, int]] | None, since: float) -> list[tuple[float, int]]:
        if not events:
            return []
        while events and events[0][0] <= since:
            events.popleft()
        return list(events)
