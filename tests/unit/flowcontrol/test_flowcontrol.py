"""The asyncio façade over the Rust flow controller, used as an embedder would: `admit` and
`acquire` on a real event loop, outcomes woken in batches from the Rust dispatch thread."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluicegate import errors
from sluicegate.flowcontrol import FlowControlSettings, FlowController
from sluicegate.flowcontrol.config import Band, parse_flow_control
from sluicegate.scheduling import Router

CHAT = "/v1/chat/completions"
BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()


def run(coro, timeout: float = 20.0):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def settle(controller: FlowController, queued: int) -> None:
    """Wait (bounded) until `queued` requests sit in the controller's queues."""
    for _ in range(2000):
        if controller.stats()["queued_requests"] == queued:
            return
        await asyncio.sleep(0.001)  # poll interval of this bounded wait
    raise AssertionError(f"queued {controller.stats()['queued_requests']}, wanted {queued}")


def assert_one_outcome_each(stats: dict) -> None:
    assert stats["submitted"] == (stats["dispatched"] + stats["rejected"] + stats["expired"] + stats["cancelled"]
                                  + stats["queued_requests"])


async def release_in_order(controller: FlowController, admissions: list[tuple[str, int]]) -> list[int]:
    """Queue `admissions` (flow, priority) behind one holder of the only place, then let them
    through one at a time; the indexes in the order they got in."""
    order: list[int] = []
    holder = await controller.acquire()

    async def one(i: int, flow: str, priority: int) -> None:
        async with controller.admit(flow=flow, priority=priority):
            order.append(i)

    tasks = [asyncio.create_task(one(i, f, p)) for i, (f, p) in enumerate(admissions)]
    await settle(controller, len(admissions))
    holder.release()
    await asyncio.gather(*tasks)
    return order


def test_waiting_requests_go_highest_priority_first_and_in_arrival_order_within_one():
    async def go():
        fc = FlowController(max_concurrency=1)
        try:
            prios = [0, 2, 1, 2, 0, 1, -1, 2]
            order = await release_in_order(fc, [("t", p) for p in prios])
            assert [prios[i] for i in order] == sorted(prios, reverse=True)
            assert order == sorted(range(len(prios)), key=lambda i: -prios[i])
            assert_one_outcome_each(fc.stats())
        finally:
            fc.close()

    run(go())


def test_round_robin_alternates_between_backlogged_flows():
    async def go():
        rr = Band(fairness_policy="round-robin-fairness-policy")
        fc = FlowController(FlowControlSettings(default_band=rr), max_concurrency=1)
        try:
            admissions = [("a", 0)] * 6 + [("b", 0)] * 3
            order = await release_in_order(fc, admissions)
            flows = "".join(admissions[i][0] for i in order)
            assert flows[:6].count("a") == 3 and flows[:6].count("b") == 3
        finally:
            fc.close()

    run(go())


def test_no_more_than_max_concurrency_run_at_once():
    async def go():
        fc = FlowController(max_concurrency=3)
        running, peak = 0, 0

        async def one() -> None:
            nonlocal running, peak
            async with fc.admit():
                running += 1
                peak = max(peak, running)
                await asyncio.sleep(0.002)  # the admitted work itself, not synchronisation
                running -= 1

        try:
            await asyncio.gather(*(one() for _ in range(40)))
            assert peak == 3
            assert fc.stats()["dispatched"] == 40 and fc.stats()["in_flight"] == 0
        finally:
            fc.close()

    run(go())


def test_a_request_waiting_past_its_ttl_is_a_429_ttl_expired():
    async def go():
        fc = FlowController(max_concurrency=1)
        try:
            holder = await fc.acquire()
            with pytest.raises(errors.TtlExpiredError) as e:
                await fc.acquire(ttl=0.02)
            assert (e.value.status, e.value.reason) == (429, "rejected-ttl-expired")
            holder.release()
            assert fc.stats()["expired_ttl"] == 1
            assert_one_outcome_each(fc.stats())
        finally:
            fc.close()

    run(go())


def test_a_full_band_rejects_at_once_with_429_saturated():
    async def go():
        fc = FlowController(FlowControlSettings(default_band=Band(max_requests=2)), max_concurrency=1)
        try:
            holder = await fc.acquire()
            waiters = [asyncio.create_task(fc.acquire()) for _ in range(2)]
            await settle(fc, 2)
            with pytest.raises(errors.SaturatedError) as e:
                await fc.acquire()
            assert (e.value.status, e.value.reason) == (429, "rejected-saturated")
            holder.release()
            for t in waiters:
                (await t).release()
            assert fc.stats()["rejected_capacity"] == 1
            assert_one_outcome_each(fc.stats())
        finally:
            fc.close()

    run(go())


def test_cancelling_a_waiting_task_removes_its_request_and_frees_no_place():
    async def go():
        fc = FlowController(max_concurrency=1)
        try:
            holder = await fc.acquire()
            waiter = asyncio.create_task(fc.acquire())
            await settle(fc, 1)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            s = fc.stats()
            assert (s["cancelled"], s["queued_requests"], s["waiting_tasks"]) == (1, 0, 0)
            holder.release()
            (await fc.acquire()).release()
            assert fc.stats()["in_flight"] == 0
            assert_one_outcome_each(fc.stats())
        finally:
            fc.close()

    run(go())


def test_close_evicts_waiters_with_503_shutting_down_and_refuses_new_ones():
    async def go():
        fc = FlowController(max_concurrency=1)
        await fc.acquire()
        waiter = asyncio.create_task(fc.acquire())
        await settle(fc, 1)
        fc.close()
        with pytest.raises(errors.ShuttingDownError) as e:
            await waiter
        assert (e.value.status, e.value.reason) == (503, "rejected-shutting-down")
        with pytest.raises(errors.ShuttingDownError):
            await fc.acquire()
        assert fc.stats()["evicted"] == 1

    run(go())


def router_with(n_endpoints: int) -> Router:
    r = Router()
    r.set_endpoints([(f"ep{i}", f"10.0.0.{i + 1}:8000", {}) for i in range(n_endpoints)])
    return r


def test_with_no_endpoints_a_request_waits_then_is_routed_when_one_appears():
    async def go():
        router = router_with(0)
        fc = FlowController(FlowControlSettings(detector={"type": "concurrency-detector", "maxConcurrency": 8}),
                            router=router)
        try:
            waiter = asyncio.create_task(fc.acquire(path=CHAT, body=BODY))
            await settle(fc, 1)
            await asyncio.sleep(0.02)  # observation window: the waiter must stay queued
            assert not waiter.done()
            router.set_endpoints([("ep0", "10.0.0.1:8000", {})])
            fc.notify()
            ticket = await waiter
            assert ticket.decision is not None and ticket.decision.primary == "10.0.0.1:8000"
            assert router.status()[0].in_flight == 1
            ticket.release()
            assert router.status()[0].in_flight == 0
        finally:
            fc.close()

    run(go())


def test_with_no_endpoints_a_request_gives_up_after_the_no_endpoint_ttl_with_503():
    async def go():
        settings = FlowControlSettings(no_endpoint_request_ttl_ms=30,
                                       detector={"type": "concurrency-detector", "maxConcurrency": 8})
        fc = FlowController(settings, router=router_with(0))
        try:
            with pytest.raises(errors.NoEndpointsError) as e:
                await fc.acquire(path=CHAT, body=BODY)
            assert (e.value.status, e.value.reason) == (503, "rejected-no-endpoints")
            assert fc.stats()["expired_no_endpoints"] == 1
        finally:
            fc.close()

    run(go())


VLLM = b"vllm:num_requests_waiting %d\nvllm:num_requests_running 1\nvllm:kv_cache_usage_perc 0.1\n"


def test_the_utilization_detector_holds_requests_while_the_pool_is_saturated():
    async def go():
        router = router_with(1)
        fc = FlowController(parse_flow_control({"featureGates": ["flowControl"]}), router=router)
        try:
            router.ingest_metrics("10.0.0.1:8000", VLLM % 9)  # 9 waiting / threshold 5: saturated
            waiter = asyncio.create_task(fc.acquire(path=CHAT, body=BODY))
            await settle(fc, 1)
            await asyncio.sleep(0.02)  # observation window: the waiter must stay queued
            assert not waiter.done() and fc.saturation() >= 1.0
            router.ingest_metrics("10.0.0.1:8000", VLLM % 1)
            (await waiter).release()
        finally:
            fc.close()

    run(go())


def test_an_unroutable_body_is_a_400_and_frees_its_place():
    async def go():
        fc = FlowController(FlowControlSettings(detector={"type": "concurrency-detector", "maxConcurrency": 1}),
                            router=router_with(1))
        try:
            with pytest.raises(errors.BadRequestError):
                await fc.acquire(path=CHAT, body=b"{not json")
            (await fc.acquire(path=CHAT, body=BODY)).release()
            assert fc.stats()["in_flight"] == 0
        finally:
            fc.close()

    run(go())


def test_objective_priorities_are_static_from_config_and_settable_at_run_time():
    fc = FlowController(replace(FlowControlSettings(), objectives={"premium": 5}), max_concurrency=1)
    try:
        assert (fc.priority_of("premium"), fc.priority_of("unknown"), fc.priority_of("")) == (5, 0, 0)
        fc.set_objective_priority("batch", -2)
        assert fc.priority_of("batch") == -2
        fc.set_objectives({"gold": 9})
        assert (fc.priority_of("gold"), fc.priority_of("premium")) == (9, 0)
        with pytest.raises(errors.ConfigError):
            fc.set_objective_priority("x", "high")  # type: ignore[arg-type]
    finally:
        fc.close()


# Properties: whatever arrives, strict priority across bands, arrival order within one (the
# default global-strict + fcfs policies), and every request exactly one outcome.
admissions = st.lists(st.tuples(st.sampled_from("abc"), st.integers(-2, 2)), min_size=1, max_size=25)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(admissions=admissions, cancel=st.sets(st.integers(0, 24)))
def test_property_order_is_priority_then_arrival_and_each_request_ends_once(admissions, cancel):
    async def go():
        fc = FlowController(max_concurrency=1)
        order: list[int] = []
        try:
            holder = await fc.acquire()

            async def one(i: int, flow: str, priority: int) -> None:
                async with fc.admit(flow=flow, priority=priority):
                    order.append(i)

            tasks = [asyncio.create_task(one(i, f, p)) for i, (f, p) in enumerate(admissions)]
            await settle(fc, len(admissions))
            cancelled = [t for i, t in enumerate(tasks) if i in cancel]
            for t in cancelled:
                t.cancel()
            await asyncio.gather(*cancelled, return_exceptions=True)
            holder.release()
            await asyncio.gather(*(t for i, t in enumerate(tasks) if i not in cancel))
            kept = [i for i in range(len(admissions)) if i not in cancel]
            assert order == sorted(kept, key=lambda i: (-admissions[i][1], i))
            s = fc.stats()
            assert s["dispatched"] == len(kept) + 1 and s["cancelled"] == len(admissions) - len(kept)
            assert_one_outcome_each(s)
        finally:
            fc.close()

    run(go())


def test_legacy_admission_sheds_only_sheddable_requests_and_only_while_saturated():
    router = router_with(1)
    fc = FlowController(replace(FlowControlSettings(), objectives={"batch": -1, "gold": 3}), router=router,
                        queueing=False)
    try:
        with pytest.raises(errors.SaturatedError):
            fc.shed("batch")  # never scraped: counts as saturated
        assert (fc.shed("gold"), fc.shed("")) == (3, 0)
        router.ingest_metrics("10.0.0.1:8000", VLLM % 0)
        assert fc.shed("batch") == -1
    finally:
        fc.close()



@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(backlog=st.lists(st.integers(1, 6), min_size=2, max_size=5))
def test_property_round_robin_keeps_backlogged_flows_within_one_dispatch_of_each_other(backlog):
    async def go():
        rr = Band(fairness_policy="round-robin-fairness-policy")
        fc = FlowController(FlowControlSettings(default_band=rr), max_concurrency=1)
        try:
            admissions = [(f"flow-{f}", 0) for f, n in enumerate(backlog) for _ in range(n)]
            order = await release_in_order(fc, admissions)
            served = {f"flow-{f}": 0 for f in range(len(backlog))}
            for i in order:
                served[admissions[i][0]] += 1
                backlogged = [f for f, n in served.items() if n < backlog[int(f.split("-")[1])]]
                counts = [served[f] for f in backlogged]
                assert not counts or max(counts) - min(counts) <= 1, (served, backlog)
        finally:
            fc.close()

    run(go())
