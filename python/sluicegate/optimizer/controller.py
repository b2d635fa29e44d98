"""The in-cluster loop: every interval, read the VariantAutoscalings and ConfigMaps (plus the
files' OptimizerConfig for capacity and load), take the accelerator counts from the Nodes and
the observed load (and TTFT/ITL) from Prometheus or the EPPs' request accounting when given,
solve, stabilize, export the gauges, and with `actuate` set the scale targets; every
VariantAutoscaling gets its status either way. A bad input or an API error is logged and the
loop keeps its last decisions."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
from kubernetes import client

from .actuation import Decision, MetricsExporter, Stabilizer, actuate, decide
from .config import parse_sourced
from .fit import ProfileFit, apply_fits
from .inputs import (AcceleratorProfile, ModelLoad, ModelObservation, OptimizerInput,
                     ScaleTarget, Variant)
from .inventory import node_inventory, read_nodes
from .kube import KubeScaler, model_server_urls, read_documents, write_status
from .observe import EppLoadSource
from .tuning import ProfileTuner, VllmSample, parse_vllm_metrics
from .problem import Problem, Solution, build_problem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ControllerOptions:
    interval_s: float = 60.0
    scale_down_window_s: float = 300.0
    actuate: bool = False
    configmap_namespace: str = "workload-variant-autoscaler-system"
    tune_port: int | None = None  # model servers' metrics port: tune profiles online
    prometheus_url: str | None = None  # observed load, TTFT and ITL from vLLM's metrics
    prometheus_window: str = "1m"
    inventory_from_nodes: bool = False  # accelerator counts from the Nodes


class _Tuning:
    """A ProfileTuner per (model, accelerator) fed by every ready pod of the variants using it;
    the previous scrape is kept per pod URL."""

    def __init__(self, api: client.ApiClient, port: int) -> None:
        self._api, self._port = api, port
        self.tuners: dict[tuple[str, str], ProfileTuner] = {}
        self._prev: dict[str, VllmSample] = {}

    async def round(self, inp: OptimizerInput) -> dict[tuple[str, str], ProfileFit]:
        seen: set[str] = set()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            for v in inp.variants:
                profile = _profile_in_use(v)
                if profile is None:
                    continue
                target = v.scale_target or ScaleTarget(kind="Deployment", name=v.name)
                urls = await asyncio.to_thread(model_server_urls, self._api, target,
                                               v.namespace, self._port)
                load = inp.load_of(v.model, v.namespace)
                tuner = self.tuners.setdefault((v.model, profile.acc), ProfileTuner(profile))
                for url in urls:
                    try:
                        async with session.get(url) as resp:
                            cur = parse_vllm_metrics(await resp.text())
                    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                        log.warning("tuning: %s: %s", url, e)
                        continue
                    seen.add(url)
                    if url in self._prev:
                        tuner.observe(self._prev[url], cur, load.input_tokens if load else 0.0)
                    self._prev[url] = cur
        for url in set(self._prev) - seen:
            del self._prev[url]
        return {k: t.fit for k, t in self.tuners.items() if t.decode.samples}


def _profile_in_use(v: Variant) -> AcceleratorProfile | None:
    if len(v.profiles) == 1:
        return v.profiles[0]
    return next((p for p in v.profiles if p.acc == v.current_accelerator), None)


class OptimizerController:
    def __init__(self, api: client.ApiClient, extra_docs: Sequence[tuple[Any, str]],
                 solve: Callable[[Problem], Solution], opts: ControllerOptions,
                 exporter: MetricsExporter | None = None,
                 load_source: EppLoadSource | None = None) -> None:
        self._api = api
        self._extra = list(extra_docs)
        self._solve = solve
        self.opts = opts
        self.exporter = exporter or MetricsExporter()
        self._stabilizer = Stabilizer(opts.scale_down_window_s)
        self._scaler = KubeScaler(api)
        self._load_source = load_source
        self.tuning = _Tuning(api, opts.tune_port) if opts.tune_port else None
        self._prometheus = None
        if opts.prometheus_url:
            from .prometheus import PrometheusSource

            self._prometheus = PrometheusSource(opts.prometheus_url, opts.prometheus_window)

    async def run_once(self, now: float | None = None) -> tuple[Solution, list[Decision]]:
        docs = await asyncio.to_thread(read_documents, self._api, self.opts.configmap_namespace)
        inp = parse_sourced(docs + self._extra)
        if self.opts.inventory_from_nodes:
            inventory = node_inventory(await asyncio.to_thread(read_nodes, self._api),
                                       inp.accelerators)
            if inventory.unmatched:
                log.warning("optimizer: GPUs on nodes with no accelerator-unit-costs entry "
                            "for their device: %s", inventory.unmatched)
            inp = inventory.apply(inp)
        observed: dict[tuple[str, str], ModelObservation] = {}
        if self._prometheus is not None:
            observed = await self._prometheus.observe((v.namespace, v.model)
                                                      for v in inp.variants)
            inp = with_observed_load(inp, [o.load for o in observed.values() if o.load])
        if self._load_source is not None:
            await self._load_source.sample(time.monotonic())
            inp = with_observed_load(inp, self._load_source.loads())
        if self.tuning is not None:
            fits = await self.tuning.round(inp)
            self.exporter.update_fits(fits)
            inp = apply_fits(inp, fits)
        problem = await asyncio.to_thread(build_problem, inp)  # sizing: numpy, seconds at most
        sol = self._solve(problem)
        decisions = decide(sol, inp.variants, time.time() if now is None else now,
                           self._stabilizer, inp=inp, observed=observed)
        self.exporter.update(sol, decisions)
        if self.opts.actuate:
            after = await actuate(decisions, self._scaler)
        else:  # currentAlloc still reports what the targets have
            after = {d.variant.key: await self._scaler.get_replicas(d.target, d.variant.namespace)
                     for d in decisions}
        for d in decisions:
            await write_status(self._api, d, after.get(d.variant.key), self.opts.actuate)
        return sol, decisions

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                sol, _ = await self.run_once()
                log.info("optimizer: %s, %.2f cents/hour, SLO not met: %s", sol.solver,
                         sol.cost, ", ".join(sol.unmet()) or "none")
            except Exception:  # one bad round must not stop the controller
                log.exception("optimizer round failed; keeping the previous decisions")
            try:
                await asyncio.wait_for(stop.wait(), self.opts.interval_s)
            except asyncio.TimeoutError:
                pass


def with_observed_load(inp: OptimizerInput, observed: Sequence[ModelLoad]) -> OptimizerInput:
    """The configured loads, with every model observed (by the EPPs or Prometheus) taking its
    observed load instead (in the observed namespace only, when it names one)."""
    def covered(x: ModelLoad) -> bool:
        return any(o.model == x.model and (not o.namespace or o.namespace == x.namespace
                                           or not x.namespace) for o in observed)
    return replace(inp, loads=tuple(x for x in inp.loads if not covered(x)) + tuple(observed))
