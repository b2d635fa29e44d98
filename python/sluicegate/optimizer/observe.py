"""Observed load per model from a gateway's own request accounting (no Prometheus needed):
`LoadMeter` counts arrivals and completions in-process; `EppLoadSource` reads the EPP's
request counter and token histograms from its /metrics. Either gives, per model, the
window's arrival rate and mean prompt and output tokens: the `ModelLoad` sized for."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

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


# The EPP's own request accounting on its /metrics (canonical llm_d_epp_* families).
_EPP_FIELDS = {"llm_d_epp_request_total": "requests",
               "llm_d_epp_request_input_tokens_sum": "in_sum",
               "llm_d_epp_request_input_tokens_count": "in_count",
               "llm_d_epp_request_output_tokens_sum": "out_sum",
               "llm_d_epp_request_output_tokens_count": "out_count"}


def sum_samples(text: str, fields: Mapping[str, str], group_label: str | None = None
                ) -> dict[str, dict[str, float]]:
    """Prometheus text → {group: {field: sum of the samples named for it}}, grouped by the
    value of `group_label` (samples without it skipped), or all under "" when None."""
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            field = fields.get(s.name)
            group = s.labels.get(group_label, "") if group_label else ""
            if field is None or (group_label and not group):
                continue
            row = out.setdefault(group, {})
            row[field] = row.get(field, 0.0) + s.value
    return out


@dataclass(frozen=True)
class EppTotals:
    """Cumulative counts for one model as the EPP reports them (summed over its replicas)."""

    requests: float = 0.0
    in_sum: float = 0.0
    in_count: float = 0.0
    out_sum: float = 0.0
    out_count: float = 0.0

    def __add__(self, other: EppTotals) -> EppTotals:
        return EppTotals(*(a + b for a, b in zip(astuple(self), astuple(other))))


def parse_epp_metrics(text: str) -> dict[str, EppTotals]:
    """Per `model_name`, the request counter and the token histograms' sums and counts."""
    return {m: EppTotals(**row)
            for m, row in sum_samples(text, _EPP_FIELDS, "model_name").items()}


class EppLoadSource:
    """Samples the EPPs' /metrics each round; a model's load is the change between the oldest
    sample inside the window and the newest. Counter resets (an EPP restart) count from zero."""

    def __init__(self, urls: Sequence[str], window_s: float, timeout_s: float = 5.0) -> None:
        if not urls:
            raise ConfigError("EppLoadSource: at least one EPP metrics URL is needed")
        if not window_s > 0:
            raise ConfigError(f"EppLoadSource window_s={window_s!r}: must be > 0")
        self.urls = list(urls)
        self.window_s = window_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._samples: deque[tuple[float, dict[str, EppTotals]]] = deque(maxlen=10_000)

    async def sample(self, now: float) -> None:
        totals: dict[str, EppTotals] = {}
        async with aiohttp.ClientSession(timeout=self._timeout) as session:
            for url in self.urls:
                async with session.get(url) as resp:
                    resp.raise_for_status()
                    for model, t in parse_epp_metrics(await resp.text()).items():
                        totals[model] = totals.get(model, EppTotals()) + t
        self.add(now, totals)

    def add(self, now: float, totals: dict[str, EppTotals]) -> None:
        self._samples.append((now, totals))
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.window_s:
            self._samples.popleft()

    def loads(self) -> list[ModelLoad]:
        """One load per model seen, from the window's first and last samples (none until two)."""
        if len(self._samples) < 2:
            return []
        (t0, first), (t1, last) = self._samples[0], self._samples[-1]
        span = max(t1 - t0, 1e-9)
        out = []
        for model, now in last.items():
            before = first.get(model, EppTotals())
            if now.requests < before.requests:  # counter reset
                before = EppTotals()
            d = EppTotals(*(a - b for a, b in zip(astuple(now), astuple(before))))
            mean_in = d.in_sum / d.in_count if d.in_count else 0.0
            mean_out = d.out_sum / d.out_count if d.out_count else 1.0
            out.append(ModelLoad(model=model, arrival_rps=d.requests / span,
                                 input_tokens=mean_in, output_tokens=max(1.0, mean_out)))
        return out
