"""The activator over a real flow controller and Router (no proxy, no cluster): requests for a
pool with no endpoints are held, one scale-up command runs for all of them, and they go when an
endpoint appears or fail with NoEndpointsError at the grace period, leaving nothing queued."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest
import uvloop

from sluicegate.activator.static import StaticActivatorSettings, static_activator
from sluicegate.errors import NoEndpointsError
from sluicegate.flowcontrol import FlowController
from sluicegate.scheduling import Router


def setup(tmp_path, grace_s: float):
    calls = tmp_path / "calls"
    up = (sys.executable, "-c", f"open({str(calls)!r}, 'a').write('up\\n')")
    router = Router()
    router.set_endpoints([])
    flow = FlowController(max_concurrency=100, router=router)
    act = static_activator("pool", flow, router, StaticActivatorSettings(up, None, grace_s=grace_s))
    act.endpoints_changed(0)
    return router, flow, act, calls


async def until(cond, what: str, timeout_s: float = 10.0) -> None:
    """Bounded wait for `cond()` on the running loop."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.01)  # poll interval of this bounded wait


async def managed(act) -> None:
    act.start()
    await until(lambda: act.managed is not None, "activator read its settings", 1.0)


def test_held_at_zero_one_scale_up_then_all_go_when_an_endpoint_appears(tmp_path):
    async def main():
        router, flow, act, calls = setup(tmp_path, grace_s=20)
        await managed(act)

        async def one():
            async with act.flow.admit() as ticket:
                return ticket.waited

        tasks = [asyncio.ensure_future(one()) for _ in range(10)]
        await until(lambda: act.stats.waiting == 10 and act.stats.scale_ups == 1, "10 held and a scale-up")
        assert not any(t.done() for t in tasks)
        router.set_endpoints([("sim-0", "127.0.0.1:9", {})])  # what the EPP does on discovery
        flow.notify()
        act.endpoints_changed(1)
        waited = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        assert all(w > 0 for w in waited) and act.stats.waiting == 0
        assert calls.read_text() == "up\n" and act.stats.scale_ups == 1
        assert flow.stats()["in_flight"] == 0 and flow.stats()["queued_requests"] == 0
        await act.stop()
        flow.close()

    uvloop.run(main())


def test_nothing_ready_within_the_grace_period_fails_every_waiter_and_leaves_no_queue(tmp_path):
    async def main():
        _, flow, act, calls = setup(tmp_path, grace_s=1.0)
        await managed(act)
        t0 = time.monotonic()
        results = await asyncio.gather(*(act.flow.acquire() for _ in range(10)), return_exceptions=True)
        took = time.monotonic() - t0
        assert all(isinstance(r, NoEndpointsError) and "grace period (1 s)" in str(r) for r in results)
        assert took >= 0.9, took  # they waited the grace period (the error names it as the cause)
        await until(lambda: flow.stats()["expired_no_endpoints"] == 10, "the expired requests counted")
        s = flow.stats()
        assert s["queued_requests"] == 0 and s["expired_no_endpoints"] == 10 and act.stats.expired == 10
        assert calls.read_text() == "up\n"
        await act.stop()
        flow.close()

    uvloop.run(main())


def test_requests_held_during_an_unserved_episode_ask_no_second_scale_up_but_a_later_one_does(tmp_path):
    # One request starts the episode; another is held just before it ends and still waits after
    # it: its own grace period answers it, so no second scale-up (the static command would start
    # a second server). A request held after the episode ended asks again.
    async def main():
        _, flow, act, calls = setup(tmp_path, grace_s=0.6)
        await managed(act)
        first = asyncio.ensure_future(act.flow.acquire())
        await until(lambda: act.stats.scale_ups == 1, "the first held request's scale-up")
        await asyncio.sleep(0.4)  # pacing: the second arrives late in the episode, not synchronisation
        late = asyncio.ensure_future(act.flow.acquire())
        results = await asyncio.gather(first, late, return_exceptions=True)
        assert all(isinstance(r, NoEndpointsError) for r in results), results
        assert calls.read_text() == "up\n"  # the late one waited past the episode's end, alone
        after = await asyncio.gather(act.flow.acquire(), return_exceptions=True)
        assert isinstance(after[0], NoEndpointsError)
        assert calls.read_text() == "up\nup\n"  # a request held after the episode: a new one
        await act.stop()
        flow.close()

    uvloop.run(main())


@pytest.mark.parametrize("ready", [1, None])
def test_pool_with_endpoints_or_not_yet_discovered_is_not_held(tmp_path, ready):
    async def main():
        router, flow, act, calls = setup(tmp_path, grace_s=20)
        router.set_endpoints([("sim-0", "127.0.0.1:9", {})])
        act.ready_endpoints = ready
        await managed(act)
        ticket = await asyncio.wait_for(act.flow.acquire(), 5)
        ticket.release()
        assert act.stats.waiting == 0 and not calls.exists()
        await act.stop()
        flow.close()

    uvloop.run(main())


def test_requests_queued_before_the_settings_were_known_still_get_a_scale_up(tmp_path):
    async def main():
        _, flow, act, calls = setup(tmp_path, grace_s=20)
        early = [asyncio.ensure_future(flow.acquire()) for _ in range(3)]  # not held by the activator
        await until(lambda: flow.stats()["queued_requests"] == 3, "3 queued before the settings")
        await managed(act)
        await until(lambda: act.stats.scale_ups == 1, "a scale-up")
        await asyncio.sleep(0.3)  # observation window, not synchronisation: ticks with nothing more to do
        assert calls.read_text() == "up\n" and act.stats.scale_ups == 1 and act.stats.waiting == 0
        for t in early:
            t.cancel()
        await asyncio.gather(*early, return_exceptions=True)
        await act.stop()
        flow.close()

    uvloop.run(main())


def test_the_first_held_request_asks_for_a_scale_up_at_once_not_at_the_next_tick(tmp_path):
    from sluicegate.activator import Activator
    from sluicegate.activator.static import StaticSource

    async def main():
        calls = tmp_path / "calls"
        up = (sys.executable, "-c", f"open({str(calls)!r}, 'a').write('up\\n')")
        router = Router()
        router.set_endpoints([])
        flow = FlowController(max_concurrency=100, router=router)
        act = Activator("pool", flow, StaticSource("pool", StaticActivatorSettings(up, None, grace_s=20)),
                        tick_s=3600)  # one tick at start, then none within the test: only the event can act
        act.endpoints_changed(0)
        await managed(act)
        waiting = asyncio.ensure_future(flow.acquire())
        for _ in range(500):
            if act.stats.scale_ups:
                break
            await asyncio.sleep(0.01)  # poll interval of this bounded wait
        assert calls.read_text() == "up\n" and act.stats.scale_ups == 1 and act.stats.waiting == 1
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        await act.stop()
        flow.close()

    uvloop.run(main())
