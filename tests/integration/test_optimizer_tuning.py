"""Online tuning against a real simulator: closed-loop clients hold the batch at a few sizes,
/metrics is scraped every half second, and the tuner — started from a wrong profile — ends
on a line that predicts the ITL the clients saw at each batch size (the simulator's line
plus whatever this machine's load adds to its steps), with its error reported.

No bound here is a wall-clock number: what the clients saw is the reference, and every
tolerance grows with the spread the run itself measured (a busy machine makes steps slower
and noisier; the tuner must follow the clients, not the simulator's nominal line)."""

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
from sluicegate.optimizer.fit import least_squares
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
SCRAPE_S = 0.5


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


def _window_itl_ms(prev: VllmSample, cur: VllmSample) -> float | None:
    """The mean ITL of one scrape window, as the tuner sees it (None: too few tokens)."""
    tokens = cur.itl_count - prev.itl_count
    return (cur.itl_sum - prev.itl_sum) / tokens * 1000.0 if tokens >= 20 else None


async def _run() -> tuple[ProfileTuner, dict[int, list[float]], dict[int, list[float]]]:
    """The tuner after all levels; per level, the clients' per-request ITLs and the per-window
    ITLs the tuner was fed (ms)."""
    server = SimServer(SIM)
    await server.start()
    tuner = ProfileTuner(WRONG)
    seen: dict[int, list[float]] = {}
    fed: dict[int, list[float]] = {}
    url = f"http://{server.address}"
    try:
        async with aiohttp.ClientSession() as session:
            async def scrape() -> VllmSample:
                async with session.get(url + "/metrics") as resp:
                    return parse_vllm_metrics(await resp.text())

            for n in LEVELS:
                until = time.monotonic() + LEVEL_S
                seen[n], fed[n] = [], []
                load = asyncio.create_task(_clients(session, url, n, until, seen[n]))
                # The first second of a level is the batch filling (left out of both the clients'
                # and the tuner's samples), then one scrape window.
                await asyncio.sleep(1.0)  # pacing, not synchronisation (see above)
                prev = await scrape()
                while time.monotonic() < until - SCRAPE_S:
                    await asyncio.sleep(SCRAPE_S)  # pacing: the scrape interval
                    cur = await scrape()
                    tuner.observe(prev, cur, PROMPT_TOKENS)
                    if (itl := _window_itl_ms(prev, cur)) is not None:
                        fed[n].append(itl)
                    prev = cur
                await load
    finally:
        await server.stop()
    return tuner, seen, fed


def _spread(groups: dict[int, list[float]]) -> float:
    """Pooled standard deviation within the levels (ms): the noise this run measured."""
    dev = [(x - statistics.mean(xs)) ** 2 for xs in groups.values() if len(xs) > 1 for x in xs]
    return (sum(dev) / max(1, len(dev) - len(groups))) ** 0.5


@pytest.mark.timeout(120)
def test_tuner_learns_the_decode_line_the_clients_see() -> None:
    tuner, seen, fed = uvloop.run(_run())
    fit = tuner.fit.decode
    clients = {n: statistics.mean(v) for n, v in seen.items()}
    line = least_squares(list(clients), list(clients.values()))  # the clients' own line
    noise = _spread(seen)  # per-request ITL spread the clients measured
    window_noise = _spread(fed)  # per-window spread of what the tuner was fed
    print(f"\nclients' ITL {({n: round(v, 1) for n, v in clients.items()})} ms, spread {noise:.1f} ms; "
          f"tuner: {fit.base:.1f} + {fit.slope:.2f}·batch, error {fit.rmse_ms:.1f} ms "
          f"(windows' spread {window_noise:.1f} ms); clients' line {line.base:.1f} + {line.slope:.2f}·batch")
    assert fit.samples >= 10
    # The reported error is the size of the noise it was fed (plus the level switches it saw).
    assert fit.rmse_ms < 5.0 + 3 * window_noise
    for batch, itl_ms in clients.items():
        # Clients and tuner both see the same steps; 15 % covers the batch not being exactly n
        # (a client between two requests), the spread covers a busy machine.
        tolerance = 0.15 * itl_ms + 2 * noise
        assert abs(fit.base + fit.slope * batch - itl_ms) <= tolerance, (batch, clients, fit, noise)
        # Far from the wrong start: much nearer the clients than the prior was.
        wrong = WRONG.alpha + WRONG.beta * batch
        assert abs(fit.base + fit.slope * batch - itl_ms) < 0.5 * abs(wrong - itl_ms) + 2 * noise
    # The slope the clients saw across batch sizes (a mean over the batch range, so the noise
    # on it is the spread divided by that range).
    span = max(LEVELS) - min(LEVELS)
    assert abs(fit.slope - line.slope) <= 0.35 * line.slope + 2 * noise / span, (fit, line, noise)
