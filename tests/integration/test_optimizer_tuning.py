"""Online tuning against a real simulator: closed-loop clients hold the batch at a few sizes,
/metrics is scraped every half second, and the tuner — started from a wrong profile — ends
on a line that predicts the ITL the clients saw at each batch size (the simulator's line
plus whatever this machine's load adds to its steps), with its error reported."""

from __future__ import annotations

import asyncio
import random
import statistics
import time

import aiohttp
import pytest
import uvloop

from sluicegate.loadgen.client import send
from sluicegate.loadgen.workloads import WorkloadRequest
from sluicegate.optimizer.inputs import AcceleratorProfile
from sluicegate.optimizer.tuning import ProfileTuner, VllmSample, parse_vllm_metrics
from sluicegate.sim.config import SimConfig
from sluicegate.sim.server import SimServer

SIM = SimConfig(alpha_ms=20.0, beta_ms=1.5, gamma_ms=2.0, delta_ms=0.01, max_num_seqs=16,
                loras=(), seed=3)
PROMPT_TOKENS = 100
WRONG = AcceleratorProfile(acc="SIM", acc_count=1, alpha=10.0, beta=0.5, gamma=1.0,
                           delta=0.001, max_batch=16)
LEVELS = (2, 6, 12)  # concurrent clients, so batch sizes
LEVEL_S = 4.0


async def _clients(session, url: str, n: int, until: float, itls: list[float]) -> None:
    rng = random.Random(n)

    async def one() -> None:
        while time.monotonic() < until:
            text = " ".join(f"t{rng.randrange(10**6):06d}" for _ in range(PROMPT_TOKENS // 2))
            r = await send(session, url, WorkloadRequest("/v1/completions", {
                "model": SIM.model, "prompt": text, "max_tokens": 32, "stream": True,
                "ignore_eos": True}))
            assert r.ok, r.error
            if time.monotonic() > until - LEVEL_S + 1.0:  # the batch has filled
                itls.append((r.e2e_s - r.ttft_s) * 1000 / (r.output_tokens - 1))

    await asyncio.gather(*(one() for _ in range(n)))


async def _run() -> tuple[ProfileTuner, dict[int, float]]:
    server = SimServer(SIM)
    await server.start()
    tuner = ProfileTuner(WRONG)
    seen: dict[int, float] = {}
    url = f"http://{server.address}"
    try:
        async with aiohttp.ClientSession() as session:
            async def scrape() -> VllmSample:
                async with session.get(url + "/metrics") as resp:
                    return parse_vllm_metrics(await resp.text())

            for n in LEVELS:
                until = time.monotonic() + LEVEL_S
                itls: list[float] = []
                load = asyncio.create_task(_clients(session, url, n, until, itls))
                await asyncio.sleep(1.0)  # the batch fills
                prev = await scrape()
                while time.monotonic() < until - 0.5:
                    await asyncio.sleep(0.5)
                    cur = await scrape()
                    tuner.observe(prev, cur, PROMPT_TOKENS)
                    prev = cur
                await load
                seen[n] = statistics.mean(itls)
    finally:
        await server.stop()
    return tuner, seen


@pytest.mark.timeout(120)
def test_tuner_learns_the_decode_line_the_clients_see() -> None:
    tuner, seen = uvloop.run(_run())
    fit = tuner.fit.decode
    assert fit.samples >= 10 and fit.rmse_ms < 5.0
    for batch, itl_ms in seen.items():
        assert fit.base + fit.slope * batch == pytest.approx(itl_ms, rel=0.15), (batch, seen)
    # Far from the wrong start: the simulator's slope, and at least its base.
    assert fit.slope == pytest.approx(SIM.beta_ms, rel=0.35)
    assert fit.base >= 0.9 * SIM.alpha_ms
