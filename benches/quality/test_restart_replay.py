"""What an EPP restart costs precise prefix routing, and what KV-event replay gives back.

Four simulators publish KV events to the EPP's bound endpoint (upstream's transport) and keep
their last batches for replay (vLLM's `replay_endpoint`). An EPP routes the first part of the
shared_prefix workload (32 system prompts, 128 chats) and warms the servers' prefix caches; then
it stops and a new EPP starts, knowing nothing, and routes the next requests. Three rows, each on
a fresh fleet with the same requests: the first EPP goes on (no restart), the new one without
replay, the new one with replay. The servers' prefix-cache hit rate (usage.cached_tokens over
prompt tokens) after the restart says what the restart cost; the first 32 requests after it are
where it costs most. Requests are sent one at a time: only the index decides where they go.

Run: `.venv/bin/python -m pytest -q benches/quality/test_restart_replay.py --benchmark-only -s`."""

from __future__ import annotations

import asyncio
import os
import time

import aiohttp
import pytest

from sluicegate.loadgen.workloads import WorkloadRequest, shared_prefix
from sluicegate.scheduling import Endpoint, Scheduler
from sluicegate.scheduling.kv_events import REPLAY_PORT_LABEL, KvEventSubscriber
from sluicegate.sim.config import DEFAULT_MODEL, SimConfig
from sluicegate.sim.server import SimServer
from tests.harness import free_port_to_dial_early

from benches.quality.driver import _body
from benches.quality.fleet import FleetShape
from benches.quality.policies import _default_profile

WARM = int(os.environ.get("SLUICEGATE_RESTART_WARM", "300"))  # requests before the restart
AFTER = int(os.environ.get("SLUICEGATE_RESTART_AFTER", "160"))  # requests after it
FIRST = 32  # the window right after the restart
ROWS = ("no restart", "restart", "restart + replay")


def _profile(endpoint: str) -> str:
    """The default profile, with the precise producer bound where the servers publish."""
    return _default_profile("- {type: precise-prefix-cache-producer, parameters: "
                            f'{{blockSize: 16, kvEventsConfig: {{zmqEndpoint: "{endpoint}"}}}}}}')


class _Epp:
    """The Router and its KV-event subscriber, as `sluicegate run` holds them."""

    def __init__(self, endpoint: str, servers: list[SimServer], replay: bool) -> None:
        self.scheduler = Scheduler(_profile(endpoint))
        self.scheduler.set_endpoints([Endpoint(s.name, s.address) for s in servers])
        self.subscriber = KvEventSubscriber.from_config(self.scheduler.router, self.scheduler.config.precise_prefix)
        assert self.subscriber is not None
        self.replay = replay
        self.servers = servers

    async def start(self) -> None:
        # The previous EPP's socket lets go of the endpoint a moment after its close (ZMQ
        # closes on its own thread); a new process would find it free.
        for attempt in range(40):
            try:
                self.subscriber.start()
                break
            except OSError:
                if attempt == 39:
                    raise
                await asyncio.sleep(0.05)  # retry interval of this bounded wait
        self.subscriber.endpoints_changed([
            (s.address, {REPLAY_PORT_LABEL: s.kv_events_replay_address.rsplit(":", 1)[1]} if self.replay else {})
            for s in self.servers])
        router = self.scheduler.router
        router.start_scraper()
        for _ in range(200):
            if all(s.age_ms >= 0 for s in router.status()):
                break
            await asyncio.sleep(0.01)  # poll interval of this bounded wait
        await asyncio.sleep(0.5)  # the publishers redial (every 100 ms) and join

    async def stop(self) -> None:
        self.scheduler.router.stop_scraper()
        await self.subscriber.close()


async def _send(session: aiohttp.ClientSession, epp: _Epp, request: WorkloadRequest) -> tuple[int, int]:
    raw = _body(request, FleetShape())
    address = epp.scheduler.router.route("/v1/chat/completions", raw).primary
    try:
        async with session.post(f"http://{address}/v1/chat/completions", data=raw,
                                headers={"content-type": "application/json"}) as resp:
            assert resp.status == 200
            usage = (await resp.json())["usage"]
    finally:
        epp.scheduler.release(address)
    return usage["prompt_tokens"], usage["prompt_tokens_details"]["cached_tokens"]


async def _row(row: str) -> dict[str, float]:
    endpoint = f"tcp://127.0.0.1:{free_port_to_dial_early()}"
    servers = [SimServer(SimConfig(name=f"sim-{i}", seed=i, speedup=50.0, kv_events_endpoint=endpoint,
                                   kv_events_replay_endpoint="tcp://127.0.0.1:*")) for i in range(4)]
    for s in servers:
        await s.start()
    requests = shared_prefix(7, DEFAULT_MODEL, system_prompts=32, conversations=128, max_turns=6)
    epp = _Epp(endpoint, servers, replay=row == "restart + replay")
    try:
        await epp.start()
        async with aiohttp.ClientSession() as session:
            before = [await _send(session, epp, next(requests)) for _ in range(WARM)]
            began = time.monotonic()
            if row != "no restart":
                await epp.stop()
                epp = _Epp(endpoint, servers, replay=row == "restart + replay")
                await epp.start()
            after = [await _send(session, epp, next(requests)) for _ in range(AFTER)]
        replays = sum(n for (_, outcome), n in epp.subscriber.replays.items() if outcome == "complete")
        return {"before": _hits(before), "after": _hits(after), "first": _hits(after[:FIRST]),
                "replays": replays, "replayed": sum(epp.subscriber.replayed.values()),
                "seconds": time.monotonic() - began}
    finally:
        await epp.stop()
        for s in servers:
            await s.stop()


def _hits(samples: list[tuple[int, int]]) -> float:
    return sum(c for _, c in samples) / max(1, sum(p for p, _ in samples))


@pytest.mark.timeout(600)
def test_restart_with_and_without_replay(benchmark) -> None:
    results: dict[str, dict[str, float]] = {}

    def run() -> None:
        for row in ROWS:
            results[row] = asyncio.run(_row(row))

    benchmark.pedantic(run, rounds=1, iterations=1)
    lines = [f"{'row':<18} {'hits before':>11} {'hits after':>10} {'first 32':>9} {'replays':>8} {'batches':>8}"]
    for row, r in results.items():
        lines.append(f"{row:<18} {r['before']:>11.3f} {r['after']:>10.3f} {r['first']:>9.3f} "
                     f"{r['replays']:>8.0f} {r['replayed']:>8.0f}")
    print("\n" + "\n".join(lines))
    benchmark.extra_info.update({row: r for row, r in results.items()})
    # The replay must have happened for its row to mean anything.
    assert results["restart + replay"]["replays"] >= 1
