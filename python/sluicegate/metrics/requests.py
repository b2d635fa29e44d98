"""Per-request families, read from the Rust RequestStats when Prometheus scrapes. Canonical
names (llm_d_epp_*) with upstream's labels, plus the legacy inference_objective_* /
inference_extension_* twins upstream still emits (their labels drop fairness_id)."""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ..scheduling import RequestStats, SeriesSnapshot

Hist = tuple[list[float], list[int], float]

CANONICAL_LABELS = ["model_name", "target_model_name", "fairness_id", "priority"]
LEGACY_LABELS = ["model_name", "target_model_name", "priority"]

# attribute of SeriesSnapshot -> (canonical name, legacy name or None, help)
HISTOGRAMS = (
    ("duration", "llm_d_epp_request_duration_seconds", "inference_objective_request_duration_seconds",
     "End-to-end request latency distribution in seconds."),
    ("request_size", "llm_d_epp_request_size_bytes", "inference_objective_request_sizes",
     "Incoming request body size distribution in bytes."),
    ("response_size", "llm_d_epp_response_size_bytes", "inference_objective_response_sizes",
     "Outgoing response body size distribution in bytes."),
    ("input_tokens", "llm_d_epp_request_input_tokens", "inference_objective_input_tokens",
     "Input token count distribution per request."),
    ("output_tokens", "llm_d_epp_request_output_tokens", "inference_objective_output_tokens",
     "Output token count distribution per request."),
    ("cached_tokens", "llm_d_epp_request_cached_tokens", None,
     "Prompt tokens read from cache per request, as reported by the model server."),
    ("ntpot", "llm_d_epp_request_ntpot_seconds", "inference_objective_normalized_time_per_output_token_seconds",
     "Normalized time per output token in seconds (end-to-end latency / output tokens)."),
)


def histogram_buckets(h: Hist) -> list[tuple[str, float]]:
    """Per-bucket counts from Rust → Prometheus cumulative buckets ending with +Inf."""
    bounds, counts, _ = h
    out, total = [], 0
    for le, n in zip([*map(_le, bounds), "+Inf"], counts):
        total += n
        out.append((le, total))
    return out


def _le(bound: float) -> str:
    return repr(float(bound))


def _merge(hists: list[Hist]) -> Hist:
    bounds = hists[0][0]
    counts = [sum(col) for col in zip(*(h[1] for h in hists))]
    return bounds, counts, sum(h[2] for h in hists)


def histogram(name: str, doc: str, labels: list[str], series: Iterable[tuple[list[str], Hist]]) -> Metric:
    fam = HistogramMetricFamily(name, doc, labels=labels)
    for values, h in series:
        fam.add_metric(values, histogram_buckets(h), h[2])
    return fam


class RequestCollector(Collector):
    def __init__(self, stats: RequestStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        snap = self._stats.snapshot()
        canon = [([s.model, s.target_model, s.fairness_id, str(s.priority)], s) for s in snap]
        legacy: dict[tuple[str, str, str], list[SeriesSnapshot]] = defaultdict(list)
        for s in snap:
            legacy[(s.model, s.target_model, str(s.priority))].append(s)
        legacy_rows = [(list(k), v) for k, v in legacy.items()]

        yield from self._counts(canon, legacy_rows)
        for attr, name, old, doc in HISTOGRAMS:
            yield histogram(name, doc, CANONICAL_LABELS, ((v, getattr(s, attr)) for v, s in canon))
            if old is not None:
                yield histogram(old, doc, LEGACY_LABELS,
                                ((v, _merge([getattr(s, attr) for s in g])) for v, g in legacy_rows))
        ttft = HistogramMetricFamily(
            "llm_d_epp_request_ttft_seconds",
            "Time to first response byte in seconds; for non-streaming requests the whole duration.",
            labels=[*CANONICAL_LABELS, "streaming"])
        for values, s in canon:
            for streaming, h in (("false", s.ttft), ("true", s.ttft_streaming)):
                if sum(h[1]):
                    ttft.add_metric([*values, streaming], histogram_buckets(h), h[2])
        yield ttft
        yield self._attempts()
        sched = self._stats.scheduler()
        for name in ("llm_d_epp_scheduler_e2e_duration_seconds", "inference_extension_scheduler_e2e_duration_seconds"):
            yield histogram(name, "End-to-end scheduling latency distribution in seconds.", [], [([], sched)])

    def _attempts(self) -> Metric:
        fam = CounterMetricFamily("llm_d_epp_scheduler_attempts", "Total number of scheduling attempts.",
                                  labels=["status", "target_model_name", "endpoint_name", "namespace", "port"])
        for success, model, name, address, n in self._stats.attempts():
            port = address.rpartition(":")[2] if address else ""
            fam.add_metric(["success" if success else "failure", model, name, "", port], n)
        return fam

    def _counts(self, canon, legacy_rows) -> Iterator[Metric]:
        doc_total = "Total number of processed requests."
        doc_err = "Total number of request errors."
        doc_run = "Current number of active running requests."
        total = CounterMetricFamily("llm_d_epp_request", doc_total, labels=CANONICAL_LABELS)
        errs = CounterMetricFamily("llm_d_epp_request_error", doc_err, labels=[*CANONICAL_LABELS, "error_code"])
        running = GaugeMetricFamily("llm_d_epp_request_running", doc_run, labels=CANONICAL_LABELS)
        for values, s in canon:
            total.add_metric(values, s.requests)
            running.add_metric(values, s.running)
            for code, n in s.errors:
                errs.add_metric([*values, code], n)
        old_total = CounterMetricFamily("inference_objective_request", doc_total, labels=LEGACY_LABELS)
        old_errs = CounterMetricFamily("inference_objective_request_error", doc_err, labels=[*LEGACY_LABELS, "error_code"])
        old_running = GaugeMetricFamily("inference_objective_running_requests", doc_run, labels=LEGACY_LABELS)
        for values, group in legacy_rows:
            old_total.add_metric(values, sum(s.requests for s in group))
            old_running.add_metric(values, sum(s.running for s in group))
            by_code: dict[str, int] = defaultdict(int)
            for s in group:
                for code, n in s.errors:
                    by_code[code] += n
            for code, n in by_code.items():
                old_errs.add_metric([*values, code], n)
        yield from (total, errs, running, old_total, old_errs, old_running)
