"""Observed load and latency per model from a Prometheus server's HTTP query API, with the
workload-variant-autoscaler's queries over vLLM's metrics: arrival rate from
vllm:request_success_total, mean prompt and output tokens from the token histograms, mean
TTFT and ITL (time per output token) from theirs, all `sum(rate(...[window]))` per model_name
and namespace. The MetricsAvailable condition follows the autoscaler's reasons."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

import aiohttp

from .inputs import MetricsStatus, ModelLoad, ModelObservation

SUCCESS = "vllm:request_success_total"
_RATIOS = {  # field -> (sum series, count series)
    "input_tokens": ("vllm:request_prompt_tokens_sum", "vllm:request_prompt_tokens_count"),
    "output_tokens": ("vllm:request_generation_tokens_sum",
                      "vllm:request_generation_tokens_count"),
    "ttft_s": ("vllm:time_to_first_token_seconds_sum", "vllm:time_to_first_token_seconds_count"),
    "itl_s": ("vllm:time_per_output_token_seconds_sum",
              "vllm:time_per_output_token_seconds_count"),
}


class PrometheusError(Exception):
    """The query API failed or answered something other than success."""


class PrometheusSource:
    def __init__(self, url: str, window: str = "1m", timeout_s: float = 5.0,
                 stale_after_s: float = 300.0) -> None:
        self.url = url.rstrip("/")
        self.window = window
        self.stale_after_s = stale_after_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def observe(self, models: Iterable[tuple[str, str]]) -> dict[tuple[str, str],
                                                                       ModelObservation]:
        """Per (namespace, model): what its servers report (metrics missing, stale or
        unreadable leave the load None and say why)."""
        out = {}
        async with aiohttp.ClientSession(timeout=self._timeout) as session:
            for ns, model in sorted(set(models)):
                out[(ns, model)] = await self._observe(session, ns, model)
        return out

    async def _observe(self, session: aiohttp.ClientSession, ns: str, model: str
                       ) -> ModelObservation:
        try:
            selector, status = await self._selector(session, ns, model)
            if not status.available:
                return ModelObservation(model=model, namespace=ns, metrics=status)
            rate = await self._scalar(session, f"sum(rate({SUCCESS}{{{selector}}}[{self.window}]))")
            ratio = {field: await self._scalar(session, (
                f"sum(rate({s}{{{selector}}}[{self.window}]))/"
                f"sum(rate({c}{{{selector}}}[{self.window}]))")) for field, (s, c) in _RATIOS.items()}
        except (aiohttp.ClientError, TimeoutError, PrometheusError) as e:
            return ModelObservation(model=model, namespace=ns, metrics=MetricsStatus(
                False, "PrometheusError", f"querying {self.url}: {e}"))
        load = ModelLoad(model=model, namespace=ns, arrival_rps=rate,
                         input_tokens=ratio["input_tokens"],
                         output_tokens=max(1.0, ratio["output_tokens"]))
        return ModelObservation(model=model, namespace=ns, metrics=status, load=load,
                                ttft_ms=ratio["ttft_s"] * 1000.0, itl_ms=ratio["itl_s"] * 1000.0)

    async def _selector(self, session: aiohttp.ClientSession, ns: str, model: str
                        ) -> tuple[str, MetricsStatus]:
        """The label selector that finds the model's series — with its namespace label, else
        by model_name alone (servers scraped without Kubernetes labels) — and whether fresh."""
        for selector in (f'model_name="{_quote(model)}",namespace="{_quote(ns)}"',
                         f'model_name="{_quote(model)}"'):
            vector = await self._query(session, f"{SUCCESS}{{{selector}}}")
            if vector:
                newest = max(float(s["value"][0]) for s in vector)
                age = time.time() - newest
                if age > self.stale_after_s:
                    return selector, MetricsStatus(False, "MetricsStale", (
                        f"vLLM metrics of {model!r} last updated {age:.0f} s ago"))
                return selector, MetricsStatus(True, "MetricsFound",
                                               "vLLM metrics are available and up to date")
        return "", MetricsStatus(False, "MetricsMissing", (
            f"no {SUCCESS} series for model {model!r} (namespace {ns!r}) in {self.url}: check "
            "that its servers' /metrics are scraped"))

    async def _scalar(self, session: aiohttp.ClientSession, query: str) -> float:
        vector = await self._query(session, query)
        value = float(vector[0]["value"][1]) if vector else 0.0
        return value if math.isfinite(value) else 0.0  # no traffic: 0/0

    async def _query(self, session: aiohttp.ClientSession, query: str) -> list[dict]:
        async with session.get(f"{self.url}/api/v1/query", params={"query": query}) as resp:
            body = await resp.json(content_type=None)
        if body.get("status") != "success":
            raise PrometheusError(f"query {query!r}: {body.get('errorType')}: {body.get('error')}")
        data = body.get("data") or {}
        if data.get("resultType") != "vector":
            raise PrometheusError(f"query {query!r}: resultType {data.get('resultType')!r}")
        return data.get("result") or []


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
