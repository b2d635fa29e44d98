"""The optimizer in a closed loop with simulated vLLM servers: a deterministic load rises from
one to eight servers' worth and falls back; the gateway's request accounting (LoadMeter)
feeds the optimizer every interval, its decisions go through the stabilizer and `actuate` to
a Scaler that starts and drains real simulator servers. Desired replicas reach the sizing for
each step within two intervals on the way up (plus the scale-down window on the way down)
and the TTFT once a step has settled stays within the SLO — the TTFT the simulator reports on
its own clock, so the check does not depend on how busy this machine is."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from dataclasses import dataclass, replace

import aiohttp
import pytest
import uvloop

from sluicegate.loadgen.workloads import WorkloadRequest
from sluicegate.optimizer import greedy
from sluicegate.optimizer.actuation import Stabilizer, actuate, decide
from sluicegate.optimizer.inputs import (Accelerator, AcceleratorProfile, ModelSlo,
                                         OptimizerInput, ScaleTarget, ServiceClass, Variant)
from sluicegate.optimizer.observe import LoadMeter
from sluicegate.optimizer.problem import build_problem
from sluicegate.optimizer.queueing import ServerParams
from sluicegate.optimizer.sizing import SloTarget, max_rate_rps, replicas_needed
from sluicegate.sim.config import SimConfig
from sluicegate.sim.server import SIM_TTFT_HEADER, SimServer

INTERVAL_S = 2.0  # optimizer interval T; decisions at (n + 0.5) T, steps on multiples of 4T
STEP_S = 4 * INTERVAL_S
STEPS = (1, 2, 4, 8, 4, 1)  # servers' worth of load
SCALE_DOWN_WINDOW_S = 1.5 * INTERVAL_S
IN_TOKENS, OUT_TOKENS = 200, 16
SLO = SloTarget(ttft_ms=400.0, itl_ms=60.0)
SIM = SimConfig(alpha_ms=40.0, beta_ms=2.0, gamma_ms=10.0, delta_ms=0.05, max_num_seqs=4,
                loras=(), seed=1)
PROFILE = AcceleratorProfile(acc="SIM", acc_count=1, alpha=SIM.alpha_ms, beta=SIM.beta_ms,
                             gamma=SIM.gamma_ms, delta=SIM.delta_ms, max_batch=SIM.max_num_seqs)
VARIANT = Variant(name="sim", namespace="loop", model=SIM.model, slo_class_ref=("", ""),
                  profiles=(PROFILE,), min_replicas=1,
                  scale_target=ScaleTarget(kind="SimFleet", name="sim"))
BASE = OptimizerInput(
    service_classes=(ServiceClass(name="Premium", priority=1, slos=(
        ModelSlo(model=SIM.model, ttft_ms=SLO.ttft_ms, itl_ms=SLO.itl_ms),)),),
    accelerators=(Accelerator(name="SIM", device="simulator", cost=1.0),),
    variants=(VARIANT,), loads=())


class SimScaler:
    """`actuation.Scaler` over simulator servers in this loop: scaling up starts servers,
    scaling down takes them out of routing at once and stops them when their requests end."""

    def __init__(self) -> None:
        self.active: list[SimServer] = []
        self.in_flight: dict[int, int] = {}
        self._drains: list[asyncio.Task] = []
        self._seed = 0

    async def get_replicas(self, target: ScaleTarget, namespace: str) -> int | None:
        return len(self.active)

    async def set_replicas(self, target: ScaleTarget, namespace: str, replicas: int) -> None:
        while len(self.active) < replicas:
            self._seed += 1
            server = SimServer(replace(SIM, seed=self._seed))
            await server.start()
            self.in_flight[id(server)] = 0
            self.active.append(server)
        while len(self.active) > replicas:
            self._drains.append(asyncio.create_task(self._drain(self.active.pop())))

    def pick(self) -> SimServer:
        return min(self.active, key=lambda s: self.in_flight[id(s)])

    async def _drain(self, server: SimServer) -> None:
        deadline = time.monotonic() + 30.0
        while self.in_flight[id(server)] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # poll interval of this bounded drain
        await server.stop()

    async def close(self) -> None:
        await asyncio.gather(*self._drains)
        await asyncio.gather(*(s.stop() for s in self.active))
        self.active.clear()


@dataclass
class Sample:
    sent: float
    ttft_ms: float | None
    ok: bool


def _prompt(rng: random.Random) -> WorkloadRequest:
    # ~IN_TOKENS tokens of unique words (4 characters per token): no prefix-cache hits.
    text = " ".join(f"w{rng.randrange(10**6):06d}" for _ in range(IN_TOKENS * 4 // 8))
    return WorkloadRequest("/v1/completions", {"model": SIM.model, "prompt": text,
                                               "max_tokens": OUT_TOKENS, "stream": False,
                                               "ignore_eos": True})


async def _load(t0: float, per_server_rps: float, scaler: SimScaler, meter: LoadMeter,
                samples: list[Sample]) -> None:
    rng = random.Random(7)
    tasks: list[asyncio.Task] = []
    async with aiohttp.ClientSession() as session:

        async def one(server: SimServer, sent: float) -> None:
            req = _prompt(rng)
            try:
                async with session.post(f"http://{server.address}{req.path}", json=req.body) as resp:
                    body = await resp.json(content_type=None)
                    ok = resp.status == 200
                    # TTFT on the simulator's own clock: what the sizing promised, however busy
                    # this machine is (a wall-clock TTFT adds the host's scheduling delays).
                    ttft_ms = float(resp.headers[SIM_TTFT_HEADER]) if ok else None
            finally:
                scaler.in_flight[id(server)] -= 1
            meter.completed(SIM.model, body["usage"]["completion_tokens"] if ok else 0, time.monotonic())
            samples.append(Sample(sent - t0, ttft_ms, ok))

        for step, k in enumerate(STEPS):
            rate = k * per_server_rps
            start = t0 + step * STEP_S
            for i in range(int(rate * STEP_S)):
                at = start + i / rate
                await asyncio.sleep(max(0.0, at - time.monotonic()))  # pacing: the open-loop arrival schedule
                meter.arrived(SIM.model, IN_TOKENS, at)
                server = scaler.pick()
                scaler.in_flight[id(server)] += 1
                tasks.append(asyncio.create_task(one(server, at)))
        await asyncio.wait_for(asyncio.gather(*tasks), 60.0)


async def _optimize(t0: float, scaler: SimScaler, meter: LoadMeter,
                    decisions: list[tuple[float, int, int]]) -> None:
    stabilizer = Stabilizer(SCALE_DOWN_WINDOW_S)
    for n in range(int(len(STEPS) * STEP_S / INTERVAL_S)):
        at = t0 + (n + 0.5) * INTERVAL_S
        await asyncio.sleep(max(0.0, at - time.monotonic()))  # pacing: the optimizer interval
        inp = replace(BASE, loads=(meter.load(SIM.model, at),))
        sol = greedy.solve(build_problem(inp))
        (d,) = decide(sol, inp.variants, at, stabilizer)
        await actuate([d], scaler)
        decisions.append((at - t0, d.allocation.replicas, d.desired_replicas))


async def _closed_loop(per_server_rps: float):
    scaler = SimScaler()
    await scaler.set_replicas(VARIANT.scale_target, VARIANT.namespace, 1)
    t0 = time.monotonic() + 0.5
    meter = LoadMeter(window_s=INTERVAL_S, started_at=t0)
    samples: list[Sample] = []
    decisions: list[tuple[float, int, int]] = []
    try:
        await asyncio.gather(_load(t0, per_server_rps, scaler, meter, samples),
                             _optimize(t0, scaler, meter, decisions))
    finally:
        await scaler.close()
    return samples, decisions


@pytest.mark.timeout(180)
def test_replicas_follow_the_load_and_ttft_stays_within_the_slo() -> None:
    params = ServerParams(alpha=PROFILE.alpha, beta=PROFILE.beta, gamma=PROFILE.gamma,
                          delta=PROFILE.delta, max_batch=PROFILE.max_batch,
                          max_queue=int(VARIANT.max_queue_per_batch * PROFILE.max_batch),
                          input_tokens=IN_TOKENS, output_tokens=OUT_TOKENS)
    per_replica = max_rate_rps(params, SLO)
    per_server_rps = 0.85 * per_replica  # one server's worth, within its SLO
    ideal = [replicas_needed(k * per_server_rps, per_replica, min_replicas=1) for k in STEPS]
    assert ideal == sorted(ideal[:4]) + ideal[4:] and ideal[3] >= 6

    samples, decisions = uvloop.run(_closed_loop(per_server_rps))

    assert all(s.ok for s in samples), [s for s in samples if not s.ok][:3]
    per_step = STEP_S / INTERVAL_S
    for step, want in enumerate(ideal):
        in_step = [d for d in decisions if int(d[0] // STEP_S) == step]
        assert len(in_step) == per_step
        # Up: the second decision after the change; down (and at the start, where the young
        # meter's first second over-counts): the third, after the scale-down window.
        rising = step > 0 and want >= ideal[step - 1]
        settled = in_step[1:] if rising else in_step[2:]
        assert [desired for _, _, desired in settled] == [want] * len(settled), (step, in_step)
        # TTFT of the requests sent once the step has settled (after the last change).
        after = step * STEP_S + (2.5 if not rising else 1.5) * INTERVAL_S + 0.5
        ttft = [s.ttft_ms for s in samples
                if s.ttft_ms is not None and after <= s.sent < (step + 1) * STEP_S]
        assert ttft and statistics.mean(ttft) <= SLO.ttft_ms, (step, statistics.mean(ttft))
