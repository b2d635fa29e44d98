"""The open-loop load generator against real simulated servers (no proxy in between)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sluicegate.loadgen import LoadReport, run_load
from sluicegate.sim import SimConfig, SimServer


@contextlib.asynccontextmanager
async def servers(count: int = 1, **overrides: Any) -> AsyncIterator[list[SimServer]]:
    started = []
    try:
        for i in range(count):
            server = SimServer(SimConfig(**{"speedup": 50.0, "seed": i, **overrides}))
            await server.start()
            started.append(server)
        yield started
    finally:
        for server in started:
            await server.stop()


def url(server: SimServer) -> str:
    return f"http://{server.address}"


async def one_load(workload: str = "mixed", **overrides: Any) -> tuple[LoadReport, SimServer]:
    async with servers(**overrides) as (server,):
        report = await run_load(url(server), workload, rate=40.0, duration_s=1.0, seed=3)
        return report, server


def test_every_request_is_counted_once() -> None:
    report, server = asyncio.run(one_load())
    assert report.requests > 10
    assert report.errors == 0 and report.dropped == 0
    assert report.status_counts == {"200": report.requests}
    assert server.stats().finished == report.requests


def test_output_tokens_match_what_the_server_generated() -> None:
    async def body() -> None:
        async with servers() as (server,):
            report = await run_load(url(server), "varied", rate=40.0, duration_s=1.0, seed=5)
            generated = [s for s in server.metrics.registry.collect()
                         if s.name == "vllm:inter_token_latency_seconds"][0]
            intervals = [s.value for s in generated.samples if s.name.endswith("_count")][0]
        # Every token after a request's first is one inter-token interval.
        assert report.output_tokens == intervals + report.requests
        assert report.output_tokens_per_s > 0
    asyncio.run(body())


def test_percentiles_are_ordered_and_ttft_precedes_e2e() -> None:
    report, _ = asyncio.run(one_load("shared_prefix"))
    assert 0 < report.ttft_p50_ms <= report.ttft_p90_ms <= report.ttft_p99_ms
    assert 0 < report.e2e_p50_ms <= report.e2e_p99_ms
    assert report.ttft_p50_ms <= report.e2e_p50_ms


def test_per_endpoint_counts_name_the_server_that_answered() -> None:
    async def body() -> None:
        async with servers(2) as (a, b):
            report_a, report_b = await asyncio.gather(
                run_load(url(a), "lora", rate=30.0, duration_s=1.0, seed=1),
                run_load(url(b), "lora", rate=30.0, duration_s=1.0, seed=2))
            assert report_a.per_endpoint == {a.name: report_a.requests}
            assert report_b.per_endpoint == {b.name: report_b.requests}
            assert (a.stats().requests, b.stats().requests) == (report_a.requests, report_b.requests)
    asyncio.run(body())


def test_client_errors_are_counted_with_their_status() -> None:
    # The server serves another model, so every request of the default model is a 404.
    report, _ = asyncio.run(one_load("varied", model="other-model", loras=()))
    assert report.requests > 0
    assert report.errors == report.requests
    assert report.status_counts == {"404": report.requests}
    assert report.ttft_p50_ms is None and report.output_tokens == 0


def test_arrivals_beyond_max_in_flight_are_dropped_not_queued() -> None:
    async def body() -> None:
        async with servers(speedup=1.0) as (server,):
            report = await run_load(url(server), "varied", rate=50.0, duration_s=0.5, seed=0,
                                    max_in_flight=1)
        assert report.dropped > 0
        assert report.requests >= 1 and report.errors == 0
    asyncio.run(body())


def test_requests_past_the_client_timeout_are_errors() -> None:
    async def body() -> None:
        async with servers(speedup=0.05) as (server,):
            report = await run_load(url(server), "varied", rate=20.0, duration_s=0.3, seed=0,
                                    request_timeout_s=0.2)
        assert report.requests > 0
        assert report.status_counts == {"0": report.requests}
        assert report.errors == report.requests
    asyncio.run(body())


def test_model_option_sets_the_requested_model() -> None:
    async def body() -> None:
        async with servers(model="served-name", loras=()) as (server,):
            report = await run_load(url(server), "varied", rate=20.0, duration_s=0.3, seed=0,
                                    model="served-name")
        assert report.requests > 0 and report.errors == 0
    asyncio.run(body())


@pytest.mark.parametrize("bad", [{"workload": "nope"}, {"rate": 0.0}, {"duration_s": -1.0},
                                 {"max_in_flight": 0}, {"url": "127.0.0.1:1"}])
def test_bad_arguments_are_rejected_naming_the_field(bad: dict[str, Any]) -> None:
    args = {"url": "http://127.0.0.1:1", "workload": "mixed", "rate": 1.0, "duration_s": 1.0, **bad}
    field = next(iter(bad))
    with pytest.raises(ValueError, match=field):
        asyncio.run(run_load(**args))
