"""Per-request families, read from the Rust RequestStats when Prometheus scrapes. Canonical
names (llm_d_epp_*) with upstream's labels, plus the legacy inference_objective_* /
inference_extension_* twins upstream still emits, each with its own older label set."""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .._core.stats import plugin_timings
from ..scheduling import RequestStats, SeriesSnapshot

Hist = tuple[list[float], list[int], float]

CANONICAL_LABELS = ["model_name", "target_model_name", "fairness_id", "priority"]
# The legacy inference_objective_* families keep upstream's older, narrower label sets.
MODEL_LABELS = ["model_name", "target_model_name"]

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
    ("cached_tokens", "llm_d_epp_request_cached_tokens", "inference_objective_prompt_cached_tokens",
     "Prompt tokens read from cache per request, as reported by the model server."),
    ("ntpot", "llm_d_epp_request_ntpot_seconds", "inference_objective_normalized_time_per_output_token_seconds",
     "Normalized time per output token in seconds (end-to-end latency / output tokens)."),
    ("tpot", "llm_d_epp_request_streaming_tpot_seconds", None,
     "Time per output token of streamed responses after the first, in seconds."),
    ("itl", "llm_d_epp_request_streaming_itl_seconds", None,
     "Inter-token latency of streamed responses: the time between consecutive response body chunks."),
)
PLUGIN_PREFIXES = ("llm_d_epp", "inference_extension")


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


def _grouped(snap: list[SeriesSnapshot], key: Callable[[SeriesSnapshot], tuple[str, ...]]):
    groups: dict[tuple[str, ...], list[SeriesSnapshot]] = defaultdict(list)
    for s in snap:
        groups[key(s)].append(s)
    return [(list(k), g) for k, g in groups.items()]


def _by_model(s: SeriesSnapshot) -> tuple[str, ...]:
    return (s.model, s.target_model)


class RequestCollector(Collector):
    def __init__(self, stats: RequestStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        snap = self._stats.snapshot()
        canon = [([s.model, s.target_model, s.fairness_id, str(s.priority)], s) for s in snap]
        by_model = _grouped(snap, _by_model)

        yield from self._counts(snap, canon, by_model)
        for attr, name, old, doc in HISTOGRAMS:
            yield histogram(name, doc, CANONICAL_LABELS, ((v, getattr(s, attr)) for v, s in canon))
            if old is not None:
                yield histogram(old, doc, MODEL_LABELS,
                                ((v, _merge([getattr(s, attr) for s in g])) for v, g in by_model))
        ttft = HistogramMetricFamily(
            "llm_d_epp_request_ttft_seconds",
            "Time to first response byte in seconds; for non-streaming requests the whole duration.",
            labels=[*CANONICAL_LABELS, "streaming"])
        for values, s in canon:
            for streaming, h in (("false", s.ttft), ("true", s.ttft_streaming)):
                if sum(h[1]):
                    ttft.add_metric([*values, streaming], histogram_buckets(h), h[2])
        yield ttft
        yield from self._attempts()
        sched = self._stats.scheduler()
        for name in ("llm_d_epp_scheduler_e2e_duration_seconds", "inference_extension_scheduler_e2e_duration_seconds"):
            yield histogram(name, "End-to-end scheduling latency distribution in seconds.", [], [([], sched)])
        yield CounterMetricFamily(
            "sluicegate_scheduler_rescored_cycles",
            "Scheduling cycles scored a second time because requests routed on other threads changed "
            "the load while they scored.", value=self._stats.rescored())
        request, response = self._stats.processing()
        yield histogram("llm_d_epp_request_processing_duration_seconds",
                        "EPP request processing latency in seconds, from request receipt until its body was "
                        "handled, admission control included.", [], [([], request)])
        yield histogram("llm_d_epp_response_processing_duration_seconds",
                        "EPP response processing latency in seconds: its chunk handlers' time for a streamed "
                        "response, response headers to completion otherwise.", [], [([], response)])
        yield from self._plugins()
        yield from self._rewrites()

    def _plugins(self) -> Iterator[Metric]:
        rows = [([point, kind, name], h) for point, kind, name, h in plugin_timings()]
        for prefix in PLUGIN_PREFIXES:
            yield histogram(f"{prefix}_plugin_duration_seconds",
                            "Plugin processing latency in seconds per extension point, plugin type and name.",
                            ["extension_point", "plugin_type", "plugin_name"], rows)
        # Plugins are compiled Rust with typed access to endpoint data: an undeclared read or
        # write cannot happen, so upstream's violation counter is declared with no series.
        yield CounterMetricFamily("llm_d_epp_plugin_data_scope_violations",
                                  "Endpoint attribute accesses rejected because the plugin did not declare the key.",
                                  labels=["extension_point", "plugin_type", "plugin_name", "access"])

    def _rewrites(self) -> Iterator[Metric]:
        rows = self._stats.rewrites()
        for prefix in PLUGIN_PREFIXES:
            fam = CounterMetricFamily(f"{prefix}_model_rewrite_decisions", "Total number of model rewrite decisions.",
                                      labels=["model_rewrite_name", "model_name", "target_model"])
            for rule, model, target, n in rows:
                fam.add_metric([rule, model, target], n)
            yield fam

    def _attempts(self) -> Iterator[Metric]:
        doc = "Total number of scheduling attempts."
        # The legacy twin names the endpoint `pod_name`, as upstream's deprecated one does.
        for name, endpoint_label in (("llm_d_epp_scheduler_attempts", "endpoint_name"),
                                     ("inference_extension_scheduler_attempts", "pod_name")):
            fam = CounterMetricFamily(name, doc,
                                      labels=["status", "target_model_name", endpoint_label, "namespace", "port"])
            for success, model, endpoint, address, n in self._stats.attempts():
                port = address.rpartition(":")[2] if address else ""
                fam.add_metric(["success" if success else "failure", model, endpoint, "", port], n)
            yield fam

    def _counts(self, snap, canon, by_model) -> Iterator[Metric]:
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
        old_total = CounterMetricFamily("inference_objective_request", doc_total, labels=[*MODEL_LABELS, "priority"])
        for values, group in _grouped(snap, lambda s: (s.model, s.target_model, str(s.priority))):
            old_total.add_metric(values, sum(s.requests for s in group))
        old_errs = CounterMetricFamily("inference_objective_request_error", doc_err,
                                       labels=[*MODEL_LABELS, "error_code"])
        for values, group in by_model:
            by_code: dict[str, int] = defaultdict(int)
            for s in group:
                for code, n in s.errors:
                    by_code[code] += n
            for code, n in by_code.items():
                old_errs.add_metric([*values, code], n)
        old_running = GaugeMetricFamily("inference_objective_running_requests", doc_run, labels=["model_name"])
        for values, group in _grouped(snap, lambda s: (s.model,)):
            old_running.add_metric(values, sum(s.running for s in group))
        yield from (total, errs, running, old_total, old_errs, old_running)
