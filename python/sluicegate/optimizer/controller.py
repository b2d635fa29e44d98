"""The in-cluster loop: every interval, read the VariantAutoscalings and ConfigMaps (plus the
files' OptimizerConfig for capacity and load), take the observed load from the EPPs' request
accounting when given, solve, stabilize, export the gauges, and with `actuate` set the scale
targets; every VariantAutoscaling gets its status either way. A bad input or an API error is
logged and the loop keeps its last decisions."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from kubernetes import client

from .actuation import Decision, MetricsExporter, Stabilizer, actuate, decide
from .config import parse_sourced
from .inputs import ModelLoad, OptimizerInput
from .kube import KubeScaler, read_documents, write_status
from .observe import EppLoadSource
from .problem import Problem, Solution, build_problem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ControllerOptions:
    interval_s: float = 60.0
    scale_down_window_s: float = 300.0
    actuate: bool = False
    configmap_namespace: str = "workload-variant-autoscaler-system"


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

    async def run_once(self, now: float | None = None) -> tuple[Solution, list[Decision]]:
        docs = await asyncio.to_thread(read_documents, self._api, self.opts.configmap_namespace)
        inp = parse_sourced(docs + self._extra)
        if self._load_source is not None:
            await self._load_source.sample(time.monotonic())
            inp = with_observed_load(inp, self._load_source.loads())
        problem = await asyncio.to_thread(build_problem, inp)  # sizing: numpy, seconds at most
        sol = self._solve(problem)
        decisions = decide(sol, inp.variants, time.time() if now is None else now,
                           self._stabilizer)
        self.exporter.update(sol, decisions)
        applied = await actuate(decisions, self._scaler) if self.opts.actuate else {}
        for d in decisions:
            await write_status(self._api, d, applied.get(d.variant.key, False))
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
    """The configured loads, with every model the EPPs saw taking its observed load instead."""
    seen = {x.model for x in observed}
    return replace(inp, loads=tuple(x for x in inp.loads if x.model not in seen) + tuple(observed))
