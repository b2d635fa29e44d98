"""The standalone Envoy bootstrap, checked by the real Envoy 1.40 binary: every variant is
accepted, the process starts and stops cleanly, and with no EPP running the fail-open paths
route to real aiohttp backends while client-supplied destinations are ignored."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import grpc
import pytest
from aiohttp import web
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext_proc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ext_proc_grpc
from google.protobuf import json_format, struct_pb2
from grpc_health.v1 import _async as health_async
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sluicegate.errors import ConfigError
from sluicegate.standalone import (
    EnvoyOptions,
    EnvoyProcess,
    EppReplica,
    EnvoyStartError,
    envoy_bootstrap,
    find_free_port,
    validate_bootstrap,
)

DESTINATION = "x-gateway-destination-endpoint"


def _dead_epp_options(**overrides: object) -> EnvoyOptions:
    """Options whose EPP ports have nothing listening: the EPP is down for the whole test."""
    base = dict(
        listen_port=0,
        admin_port=0,
        listen_address="127.0.0.1",
        epp_port=find_free_port(),
        epp_health_port=find_free_port(),
        concurrency=1,
        failure_mode_allow=True,
    )
    base.update(overrides)
    return EnvoyOptions(**base)  # type: ignore[arg-type]


@asynccontextmanager
async def backend(name: str) -> AsyncIterator[str]:
    """A model-server stand-in that reports who it is and what body it received."""

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {
                "backend": name,
                "body_sha256": hashlib.sha256(body).hexdigest(),
                "body_len": len(body),
            }
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = find_free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.post(url + "/v1/completions", data=body, headers=headers) as resp:
            payload = await resp.json(content_type=None) if resp.status == 200 else {}
            return resp.status, payload


class FixedDestinationEpp(ext_proc_grpc.ExternalProcessorServicer):
    """A real full-duplex ext_proc server that always picks `destination` (header and envoy.lb
    metadata, as the Endpoint Picker Protocol says), echoes bodies, and records the metadata
    Envoy forwards with the response headers. It checks the Envoy wiring, not the EPP."""

    def __init__(self, destination: str) -> None:
        self.destination = destination
        self.response_metadata: list[dict] = []

    def _route(self) -> ext_proc.ProcessingResponse:
        header = base_pb2.HeaderValue(key=DESTINATION, raw_value=self.destination.encode())
        mutation = ext_proc.HeaderMutation(set_headers=[base_pb2.HeaderValueOption(header=header)])
        metadata = struct_pb2.Struct()
        metadata.update({"envoy.lb": {DESTINATION: self.destination}})
        common = ext_proc.CommonResponse(header_mutation=mutation)
        return ext_proc.ProcessingResponse(
            request_headers=ext_proc.HeadersResponse(response=common), dynamic_metadata=metadata
        )

    async def Process(self, requests, context):  # noqa: N802 (gRPC method name)
        async for request in requests:
            kind = request.WhichOneof("request")
            if kind == "request_headers":
                yield self._route()
            elif kind == "response_headers":
                self.response_metadata.append(json_format.MessageToDict(request.metadata_context))
                yield ext_proc.ProcessingResponse(response_headers=ext_proc.HeadersResponse())
            elif kind in ("request_body", "response_body"):
                chunk = getattr(request, kind)
                echo = ext_proc.StreamedBodyResponse(
                    body=chunk.body, end_of_stream=chunk.end_of_stream
                )
                mutation = ext_proc.BodyMutation(streamed_response=echo)
                body = ext_proc.BodyResponse(response=ext_proc.CommonResponse(body_mutation=mutation))
                yield ext_proc.ProcessingResponse(**{kind: body})
            else:
                yield ext_proc.ProcessingResponse(**{kind: ext_proc.TrailersResponse()})


@asynccontextmanager
async def fixed_destination_epp(
    destination: str, port: int, health_port: int
) -> AsyncIterator[FixedDestinationEpp]:
    servicer = FixedDestinationEpp(destination)
    server, health_server = grpc.aio.server(), grpc.aio.server()
    ext_proc_grpc.add_ExternalProcessorServicer_to_server(servicer, server)
    health = health_async.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, health_server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    health_server.add_insecure_port(f"127.0.0.1:{health_port}")
    await server.start()
    await health_server.start()
    service = "envoy.service.ext_proc.v3.ExternalProcessor"
    await health.set(service, health_pb2.HealthCheckResponse.SERVING)
    try:
        yield servicer
    finally:
        await server.stop(None)
        await health_server.stop(None)


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# -- the bootstrap itself ------------------------------------------------------------------------

VARIANTS = list(
    itertools.product(
        ("original_dst", "override_host"),
        ("full_duplex", "buffered", "streamed"),
        (False, True),  # skip_response
        (False, True),  # failure_mode_allow
    )
)


@pytest.mark.envoy
@pytest.mark.parametrize("upstream,processing,skip_response,fail_open", VARIANTS)
def test_every_bootstrap_variant_passes_envoy_validate(
    upstream: str, processing: str, skip_response: bool, fail_open: bool
) -> None:
    opts = EnvoyOptions(
        upstream_mode=upstream,  # type: ignore[arg-type]
        processing_mode=processing,  # type: ignore[arg-type]
        skip_response=skip_response,
        failure_mode_allow=fail_open,
        endpoints=("10.0.0.1:8000", "10.0.0.2:8000"),
        fallback_endpoint="10.0.0.1:8000",
    )
    validate_bootstrap(envoy_bootstrap(opts))


@pytest.mark.envoy
@pytest.mark.parametrize("upstream", ["original_dst", "override_host", "round_robin"])
def test_upstream_http2_speaks_h2c_to_the_model_servers_only(upstream: str) -> None:
    opts = EnvoyOptions(upstream_mode=upstream, endpoints=("10.0.0.1:8000",),  # type: ignore[arg-type]
                        upstream_http2=True)
    bootstrap = envoy_bootstrap(opts)
    validate_bootstrap(bootstrap)
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    options = clusters["inference_pool"]["typed_extension_protocol_options"]
    (http,) = options.values()
    assert http["explicit_http_config"] == {"http2_protocol_options": {}}
    default = {c["name"]: c for c in envoy_bootstrap(EnvoyOptions(upstream_mode=upstream,  # type: ignore[arg-type]
               endpoints=("10.0.0.1:8000",)))["static_resources"]["clusters"]}
    assert "typed_extension_protocol_options" not in default["inference_pool"]


@pytest.mark.envoy
def test_envoy_validate_rejection_is_reported_as_config_error() -> None:
    bootstrap = envoy_bootstrap(EnvoyOptions())
    bootstrap["static_resources"]["clusters"][0]["no_such_field"] = 1
    with pytest.raises(ConfigError, match="no_such_field"):
        validate_bootstrap(bootstrap)


def test_client_destination_is_stripped_before_ext_proc_and_served_header_read_after() -> None:
    hcm = envoy_bootstrap(EnvoyOptions(fallback_endpoint="10.0.0.1:8000"))["static_resources"][
        "listeners"
    ][0]["filter_chains"][0]["filters"][0]["typed_config"]
    names = [f["name"] for f in hcm["http_filters"]]
    assert names == [
        "envoy.filters.http.header_mutation",
        "envoy.filters.http.ext_proc",
        "envoy.filters.http.header_to_metadata",
        "envoy.filters.http.router",
    ]


@pytest.mark.parametrize("mode", ["override_host", "round_robin"])
def test_static_upstream_mode_without_endpoints_is_rejected_naming_the_field(mode: str) -> None:
    with pytest.raises(ConfigError, match="endpoints"):
        EnvoyOptions(upstream_mode=mode)  # type: ignore[arg-type]


def test_fallback_endpoint_must_be_ip_and_port() -> None:
    with pytest.raises(ConfigError, match="fallback_endpoint"):
        EnvoyOptions(fallback_endpoint="model-server:8000")


@pytest.mark.envoy
@pytest.mark.parametrize("tls", [False, True])
def test_epp_replicas_are_hosts_of_the_one_epp_cluster_each_checked_on_its_health_port(tls: bool) -> None:
    opts = EnvoyOptions(epp_port=9002, epp_health_port=9003, epp_tls=tls,
                        epp_replicas=(EppReplica("10.0.0.7", 9102, 9103),))
    bootstrap = envoy_bootstrap(opts)
    validate_bootstrap(bootstrap)
    (epp,) = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "epp"]
    hosts = [(e["endpoint"]["address"]["socket_address"]["address"],
              e["endpoint"]["address"]["socket_address"]["port_value"],
              e["endpoint"]["health_check_config"]["port_value"])
             for e in epp["load_assignment"]["endpoints"][0]["lb_endpoints"]]
    assert hosts == [("127.0.0.1", 9002, 9003), ("10.0.0.7", 9102, 9103)]


def test_a_bad_epp_replica_is_rejected_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"epp_replicas\[0\].host"):
        EnvoyOptions(epp_replicas=(EppReplica("epp-1", 9002),))
    with pytest.raises(ConfigError, match=r"epp_replicas\[0\].port"):
        EnvoyOptions(epp_replicas=(EppReplica("10.0.0.7", 0),))
    with pytest.raises(ConfigError, match="separate health port"):
        EnvoyOptions(epp_tls=True, epp_replicas=(EppReplica("10.0.0.7", 9102),))


# -- the process ---------------------------------------------------------------------------------


@pytest.mark.envoy
def test_envoy_starts_ready_and_stop_leaves_no_process() -> None:
    async def scenario() -> None:
        envoy = EnvoyProcess(_dead_epp_options(fallback_endpoint="127.0.0.1:9"))
        async with envoy:
            pid = envoy.pid
            assert pid is not None and _pid_alive(pid)
        assert not _pid_alive(pid)

    asyncio.run(scenario())


@pytest.mark.envoy
def test_envoy_that_cannot_bind_raises_start_error_and_leaves_no_process() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        envoy = EnvoyProcess(_dead_epp_options(admin_port=taken.getsockname()[1]))
        with pytest.raises(EnvoyStartError):
            envoy.start_blocking()
    assert envoy.pid is not None and not _pid_alive(envoy.pid)


@pytest.mark.envoy
def test_envoy_sees_a_dead_epp_as_unhealthy() -> None:
    async def scenario() -> None:
        async with EnvoyProcess(_dead_epp_options(fallback_endpoint="127.0.0.1:9")) as envoy:
            assert await envoy.epp_healthy() is False

    asyncio.run(scenario())


# -- fail-open with no EPP -----------------------------------------------------------------------


@pytest.mark.envoy
def test_fail_open_post_reaches_fallback_backend_with_body_intact() -> None:
    body = os.urandom(256 * 1024)

    async def scenario() -> None:
        async with backend("fallback") as fallback:
            opts = _dead_epp_options(fallback_endpoint=fallback)
            async with EnvoyProcess(opts) as envoy:
                status, payload = await _post(envoy.url, body)
        assert status == 200
        assert payload["backend"] == "fallback"
        assert payload["body_len"] == len(body)
        assert payload["body_sha256"] == hashlib.sha256(body).hexdigest()

    asyncio.run(scenario())


@pytest.mark.envoy
def test_client_supplied_destination_does_not_choose_the_backend() -> None:
    async def scenario() -> None:
        async with backend("fallback") as fallback, backend("chosen-by-client") as other:
            opts = _dead_epp_options(fallback_endpoint=fallback)
            async with EnvoyProcess(opts) as envoy:
                status, payload = await _post(envoy.url, b'{"x":1}', {DESTINATION: other})
        assert status == 200
        assert payload["backend"] == "fallback"

    asyncio.run(scenario())


@pytest.mark.envoy
def test_fail_closed_with_dead_epp_refuses_the_request() -> None:
    async def scenario() -> None:
        async with backend("fallback") as fallback:
            opts = _dead_epp_options(fallback_endpoint=fallback, failure_mode_allow=False)
            async with EnvoyProcess(opts) as envoy:
                status, _ = await _post(envoy.url, b'{"x":1}')
        assert status >= 500

    asyncio.run(scenario())


@pytest.mark.envoy
def test_override_host_fail_open_spreads_requests_by_fallback_policy() -> None:
    async def scenario() -> None:
        async with backend("a") as a, backend("b") as b:
            opts = _dead_epp_options(upstream_mode="override_host", endpoints=(a, b))
            async with EnvoyProcess(opts) as envoy:
                served = [await _post(envoy.url, b'{"x":1}') for _ in range(6)]
        assert {status for status, _ in served} == {200}
        assert {payload["backend"] for _, payload in served} == {"a", "b"}

    asyncio.run(scenario())


@pytest.mark.envoy
def test_override_host_retries_past_a_dead_endpoint() -> None:
    dead = f"127.0.0.1:{find_free_port()}"

    async def scenario() -> None:
        async with backend("live") as live:
            opts = _dead_epp_options(upstream_mode="override_host", endpoints=(dead, live))
            async with EnvoyProcess(opts) as envoy:
                served = [await _post(envoy.url, b'{"x":1}') for _ in range(6)]
        assert served == [(200, served[0][1])] * 6
        assert served[0][1]["backend"] == "live"

    asyncio.run(scenario())


@pytest.mark.envoy
def test_round_robin_mode_passes_envoy_validate_without_ext_proc_or_epp_cluster() -> None:
    bootstrap = envoy_bootstrap(
        EnvoyOptions(upstream_mode="round_robin", endpoints=("10.0.0.1:8000", "10.0.0.2:8000"))
    )
    validate_bootstrap(bootstrap)
    resources = bootstrap["static_resources"]
    hcm = resources["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert [f["name"] for f in hcm["http_filters"]] == [
        "envoy.filters.http.header_mutation",
        "envoy.filters.http.router",
    ]
    assert [(c["name"], c.get("lb_policy")) for c in resources["clusters"]] == [
        ("inference_pool", "ROUND_ROBIN")
    ]


@pytest.mark.envoy
def test_round_robin_mode_alternates_endpoints_and_ignores_client_destination() -> None:
    async def scenario() -> None:
        async with backend("a") as a, backend("b") as b:
            opts = _dead_epp_options(upstream_mode="round_robin", endpoints=(a, b))
            async with EnvoyProcess(opts) as envoy:
                served = [await _post(envoy.url, b'{"x":1}', {DESTINATION: a}) for _ in range(6)]
        assert {status for status, _ in served} == {200}
        names = [payload["backend"] for _, payload in served]
        assert names.count("a") == names.count("b") == 3

    asyncio.run(scenario())


# -- with an EPP that always picks one destination -----------------------------------------------


@pytest.mark.envoy
def test_epp_destination_wins_over_client_header_and_fallback() -> None:
    async def scenario() -> None:
        async with backend("fallback") as fallback, backend("picked") as picked:
            opts = _dead_epp_options(fallback_endpoint=fallback, epp_tls=False)
            async with fixed_destination_epp(picked, opts.epp_port, opts.health_port):
                async with EnvoyProcess(opts, wait_epp_healthy=True) as envoy:
                    status, payload = await _post(envoy.url, b'{"x":1}', {DESTINATION: fallback})
        assert (status, payload["backend"]) == (200, "picked")

    asyncio.run(scenario())


@pytest.mark.envoy
@pytest.mark.parametrize("upstream", ["original_dst", "override_host"])
def test_served_endpoint_reaches_the_epp_as_envoy_lb_metadata(upstream: str) -> None:
    async def scenario() -> None:
        async with backend("picked") as picked:
            opts = _dead_epp_options(
                upstream_mode=upstream, endpoints=(picked,), fallback_endpoint=picked, epp_tls=False
            )
            async with fixed_destination_epp(picked, opts.epp_port, opts.health_port) as epp:
                async with EnvoyProcess(opts, wait_epp_healthy=True) as envoy:
                    status, _ = await _post(envoy.url, b'{"x":1}')
        assert status == 200
        lb = epp.response_metadata[0]["filterMetadata"]["envoy.lb"]
        assert lb["x-gateway-destination-endpoint-served"] == picked

    asyncio.run(scenario())


@pytest.mark.envoy
def test_override_host_moves_past_a_dead_first_endpoint_of_the_epp_list() -> None:
    dead = f"127.0.0.1:{find_free_port()}"

    async def scenario() -> None:
        async with backend("other") as other, backend("second") as second:
            opts = _dead_epp_options(
                upstream_mode="override_host", endpoints=(dead, second, other), epp_tls=False
            )
            async with fixed_destination_epp(f"{dead},{second}", opts.epp_port, opts.health_port):
                async with EnvoyProcess(opts, wait_epp_healthy=True) as envoy:
                    served = [await _post(envoy.url, b'{"x":1}') for _ in range(4)]
        assert [(status, payload["backend"]) for status, payload in served] == [(200, "second")] * 4

    asyncio.run(scenario())


@pytest.mark.envoy
def test_after_an_epp_crash_requests_fail_open_and_return_when_it_is_back() -> None:
    async def scenario() -> None:
        async with backend("fallback") as fallback, backend("picked") as picked:
            opts = _dead_epp_options(fallback_endpoint=fallback, epp_tls=False)
            async with EnvoyProcess(opts) as envoy:
                async with fixed_destination_epp(picked, opts.epp_port, opts.health_port):
                    await _wait_until_served_by(envoy.url, "picked")
                # Full duplex cannot fail open once a body went out on a dead stream, so
                # some requests fail until the EPP is ejected or fails its health check.
                await _wait_until_served_by(envoy.url, "fallback")
                after = [await _post(envoy.url, b"x" * 1000) for _ in range(10)]
                async with fixed_destination_epp(picked, opts.epp_port, opts.health_port):
                    await _wait_until_served_by(envoy.url, "picked")
        assert [(status, payload["backend"]) for status, payload in after] == [(200, "fallback")] * 10

    asyncio.run(scenario())


async def _wait_until_served_by(url: str, name: str, attempts: int = 100) -> None:
    for _ in range(attempts):
        status, payload = await _post(url, b'{"x":1}')
        if status == 200 and payload["backend"] == name:
            return
        await asyncio.sleep(0.1)  # poll interval of this bounded wait
    raise AssertionError(f"requests never reached {name!r}")


@pytest.mark.envoy
def test_envoy_config_command_prints_a_bootstrap_envoy_accepts(capsys: pytest.CaptureFixture) -> None:
    import argparse

    import yaml

    from sluicegate.standalone.config_command import add_arguments, print_config

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--upstream-mode", "override_host", "--endpoint", "10.0.0.1:8000", "--validate"]
    )
    assert print_config(args) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["static_resources"]["clusters"][1]["name"] == "inference_pool"
    assert "typed_extension_protocol_options" not in printed["static_resources"]["clusters"][1]
    assert print_config(parser.parse_args(["--upstream-http2", "--validate"])) == 0
    h2c = yaml.safe_load(capsys.readouterr().out)["static_resources"]["clusters"][1]
    assert "typed_extension_protocol_options" in h2c
