"""The real upstream EPP (llm-d-router's Go binary, `make upstream-epp-bin`) as a routing policy
beside sluicegate's: one process per run, its endpoints the run's simulators through its own
file-discovery plugin (no Kubernetes), its metrics scraped by itself, each request routed over
its ext_proc gRPC port as Envoy would (request headers and body, the picked endpoint read from
its answer, then the model server's response headers and body, then the stream closed)."""

from __future__ import annotations

import asyncio
import contextvars
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import aiohttp
import grpc
from envoy.config.core.v3.base_pb2 import HeaderMap, HeaderValue
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from sluicegate.standalone.children import kill, spawn
from sluicegate.standalone.ports import find_free_port

from benches.quality.fleet import FleetShape, SimFleetProcess
from tests.integration.extproc_client import FULL_DUPLEX, request_body, request_headers, response_body
from benches.quality.policies import (UPSTREAM_SCORER, Policy, PolicyError, SluicegatePolicy, _default_profile,
                                      precise_tokens, publishers_join_s)

VERSION_FILE = Path(__file__).parent / "upstream" / "version"
LOGS = Path(__file__).parent / "out" / "upstream-epp"  # the last run's log per row
ENV_ENABLE = "SLUICEGATE_QUALITY_UPSTREAM"
DESTINATION = "x-gateway-destination-endpoint"


def enabled() -> bool:
    return os.environ.get(ENV_ENABLE, "") not in ("", "0", "false")


def binary() -> Path:
    """Where `make upstream-epp-bin` caches the binary (SLUICEGATE_UPSTREAM_EPP overrides)."""
    if os.environ.get("SLUICEGATE_UPSTREAM_EPP"):
        return Path(os.environ["SLUICEGATE_UPSTREAM_EPP"])
    m = re.search(r"^version (\S+)$", VERSION_FILE.read_text(), re.M)
    if m is None:
        raise ValueError(f"{VERSION_FILE}: no `version <go pseudo-version>` line")
    return Path.home() / ".cache" / "sluicegate" / f"llm-d-router-{m.group(1)}" / "epp"


def missing_reason() -> str | None:
    """Why the upstream rows cannot run, or None when they can."""
    if not enabled():
        return f"{ENV_ENABLE}=1 not set"
    path = binary()
    if not os.access(path, os.X_OK):
        return f"no upstream EPP binary at {path} (make upstream-epp-bin)"
    return None


def upstream_config(profile: str, endpoints_file: Path) -> str:
    """One of the bench's sluicegate profiles (upstream's config schema) as upstream runs it:
    the chart's data layer for vLLM over http (metrics-data-source on /metrics,
    core-metrics-extractor) and file-discovery of the fleet's endpoints."""
    discovery = (
        "- {type: metrics-data-source, parameters: {scheme: http, path: /metrics, insecureSkipVerify: true}}\n"
        "- {type: core-metrics-extractor}\n"
        f'- {{type: file-discovery, parameters: {{path: "{endpoints_file}"}}}}\n')
    if profile.count("\nschedulingProfiles:") != 1:
        raise ValueError("upstream_config: the profile needs one top-level schedulingProfiles list")
    body = profile.replace("\nschedulingProfiles:", "\n" + discovery + "schedulingProfiles:")
    return ("apiVersion: llm-d.ai/v1alpha1\nkind: EndpointPickerConfig\n" + body
            + "\ndataLayer:\n  discovery:\n    pluginRef: file-discovery\n")


def endpoints_yaml(addresses: list[str]) -> str:
    lines = ["endpoints:"]
    for i, address in enumerate(addresses):
        host, port = address.rsplit(":", 1)
        lines += [f"- name: sim-{i}", f'  address: "{host}"', f'  port: "{port}"']
    return "\n".join(lines) + "\n"


class UpstreamEpp:
    """The Go EPP on free 127.0.0.1 ports, in file-discovery mode, its config and endpoints in a
    temp dir; its log (one line per request phase) in `log`, kept after the run."""

    def __init__(self, profile: str, addresses: list[str], log: Path) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sluicegate-upstream-epp-"))
        self.log = log
        (self.dir / "endpoints.yaml").write_text(endpoints_yaml(addresses))
        (self.dir / "config.yaml").write_text(upstream_config(profile, self.dir / "endpoints.yaml"))
        self.count = len(addresses)
        self.grpc_port, self.metrics_port = find_free_port(), find_free_port()
        self.argv = [str(binary()), "--pool-name", "quality", "--pool-namespace", "bench",
                     "--config-file", str(self.dir / "config.yaml"),
                     "--grpc-port", str(self.grpc_port), "--grpc-health-port", str(find_free_port()),
                     "--metrics-port", str(self.metrics_port), "--secure-serving=false",
                     "--metrics-endpoint-auth=false", "--tracing=false", "--enable-pprof=false",
                     # more flags, e.g. --zap-log-level=5 to log each lookup's block keys and scores
                     *shlex.split(os.environ.get("SLUICEGATE_UPSTREAM_EPP_ARGS", ""))]
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self, session: aiohttp.ClientSession, timeout_s: float = 30.0) -> None:
        """Started once its /metrics counts every endpoint ready and scraped (bounded)."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as log:
            self.proc = spawn(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout_s
        ready = re.compile(r'^llm_d_epp_ready_endpoints\{name="quality"\} (\d+)', re.M)
        scraped = re.compile(r'^llm_d_epp_per_endpoint_queue_size\{', re.M)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the upstream EPP exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                async with session.get(f"http://127.0.0.1:{self.metrics_port}/metrics") as resp:
                    text = await resp.text()
                m = ready.search(text)
                if m and int(m.group(1)) == self.count and len(scraped.findall(text)) == self.count:
                    return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)  # poll interval of this bounded wait
        raise TimeoutError(f"the upstream EPP did not report {self.count} endpoints in {timeout_s} s:\n{self.log_tail()}")

    async def save_metrics(self) -> None:
        """Its /metrics at the end of the run beside its log (index size, KV events, lookups)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
                async with session.get(f"http://127.0.0.1:{self.metrics_port}/metrics") as resp:
                    self.log.with_suffix(".metrics").write_text(await resp.text())
        except aiohttp.ClientError as e:
            self.log.with_suffix(".metrics").write_text(f"# not read: {e!r}\n")

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is not None:
            kill(self.proc)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


def destination(resp: pb.ProcessingResponse) -> str | None:
    """The endpoint an ext_proc answer picks: its header mutation, else the envoy.lb metadata."""
    common = resp.request_headers.response if resp.HasField("request_headers") else resp.request_body.response
    for opt in common.header_mutation.set_headers:
        if opt.header.key.lower() == DESTINATION:
            return (opt.header.raw_value.decode() or opt.header.value).split(",")[0].strip()
    lb = resp.dynamic_metadata.fields.get("envoy.lb")
    if lb is not None and DESTINATION in lb.struct_value.fields:
        return lb.struct_value.fields[DESTINATION].string_value.split(",")[0].strip()
    return None


class UpstreamGoPolicy(Policy):
    """Routes through the upstream EPP's ext_proc stream, one stream per request, full-duplex
    streamed bodies as upstream's Envoy config sets them. The stream of the request a task is
    sending lives in a context variable: the bench runs each request in its own task."""

    def __init__(self, name: str, profile: str | Callable[[SimFleetProcess], str]) -> None:
        self.name = name
        self.profile = profile  # or made from the fleet (a render URL)
        self.epp: UpstreamEpp | None = None
        self.channel: grpc.aio.Channel | None = None
        self.stream: contextvars.ContextVar[grpc.aio.StreamStreamCall | None] = contextvars.ContextVar(
            f"{name}-stream", default=None)
        self.open: set[grpc.aio.StreamStreamCall] = set()

    async def start(self, fleet: SimFleetProcess) -> None:
        # No sluicegate Router scrapes here: upstream's own scraper (50 ms, its default) is the
        # one scraper on the simulators, as in the sluicegate rows.
        self.addresses = list(fleet.addresses)
        profile = self.profile if isinstance(self.profile, str) else self.profile(fleet)
        self.epp = UpstreamEpp(profile, self.addresses, LOGS / f"{self.name}.log")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            await self.epp.start(session)
        if fleet.shape.token_level:  # its precise producer bound at start: the servers join, as for ours
            await asyncio.sleep(publishers_join_s(fleet.shape))
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.epp.grpc_port}")
        self.stub = pb_grpc.ExternalProcessorStub(self.channel)

    async def pick_async(self, path: str, body: bytes) -> str:
        call = self.stub.Process()
        self.open.add(call)
        self.stream.set(call)
        try:
            return await self._route(call, path, body)
        except grpc.aio.AioRpcError as e:
            self.done("")
            raise PolicyError(f"the upstream EPP's stream failed before routing: {e.code()} {e.details()}") from e
        except PolicyError:
            self.done("")
            raise

    async def _route(self, call: grpc.aio.StreamStreamCall, path: str, body: bytes) -> str:
        headers = {":scheme": "http", ":authority": "quality", "content-type": "application/json",
                   "content-length": str(len(body)), "x-request-id": str(uuid.uuid4())}
        await call.write(request_headers(path, headers, mode=FULL_DUPLEX))
        await call.write(request_body(body, True))
        picked = None
        while True:
            resp = await call.read()
            if resp is grpc.aio.EOF:
                raise PolicyError(f"the upstream EPP closed the stream before routing (picked {picked})")
            kind = resp.WhichOneof("response")
            if kind == "immediate_response":
                raise PolicyError(f"the upstream EPP answered {resp.immediate_response.status.code}: "
                                   f"{resp.immediate_response.body[:200]!r}")
            picked = destination(resp) or picked
            if kind == "request_body" and resp.request_body.response.body_mutation.streamed_response.end_of_stream:
                break
        if picked is None:
            raise PolicyError("the upstream EPP routed without naming an endpoint")
        return picked

    async def answered(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        """The model server's answer back through the stream, then the stream closed."""
        call = self.stream.get()
        if call is None:
            return
        pairs = [(":status", str(status))] + [(k.lower(), v) for k, v in headers]
        try:
            await call.write(pb.ProcessingRequest(response_headers=pb.HttpHeaders(
                headers=HeaderMap(headers=[HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs]))))
            await call.write(response_body(body, True))
            await call.done_writing()
            while await call.read() is not grpc.aio.EOF:
                pass
        except grpc.aio.AioRpcError as e:  # Envoy would fail the request (failure_mode_allow off)
            raise PolicyError(f"the upstream EPP's stream failed in the response phase: {e.code()}") from e
        finally:
            self.open.discard(call)
            self.stream.set(None)

    def done(self, address: str) -> None:
        call = self.stream.get()
        if call is not None:  # no answer to send back (the request failed): as Envoy, reset
            call.cancel()
            self.open.discard(call)
            self.stream.set(None)

    async def stop(self) -> None:
        for call in self.open:
            call.cancel()
        self.open.clear()
        if self.channel is not None:
            await self.channel.close()
        if self.epp is not None:
            await self.epp.save_metrics()
            self.epp.stop()


def upstream_policies(shape: FleetShape) -> list[UpstreamGoPolicy]:
    """`upstream-go`: upstream's default profile (the chart's default-plugins.yaml, its
    approximate prefix producer created by default); against vLLM-style servers also
    `upstream-go+precise`: the same pipeline as sluicegate+precise-render (token-producer through
    the first server's render API, precise-prefix-cache-producer binding the ZMQ endpoint the
    servers dial, speculative indexing), the scorer pointed at the precise producer as upstream
    requires (`prefixMatchInfoProducerName`)."""
    out = [UpstreamGoPolicy("upstream-go", _default_profile())]
    if shape.token_level:
        def precise(fleet: SimFleetProcess) -> str:
            return precise_tokens(shape, f"http://{fleet.addresses[0]}").replace(
                "- {type: prefix-cache-scorer}",
                "- {type: prefix-cache-scorer, parameters: {prefixMatchInfoProducerName: precise-prefix-cache-producer}}")
        out.append(UpstreamGoPolicy("upstream-go+precise", precise))
    return out


class ScrapedQueuePolicy(SluicegatePolicy):
    """`sluicegate-scraped-queue`: our port of upstream's scorer with the request
    released as soon as it is routed, so the Router holds nothing in flight and its
    queue-scorer sees the scraped waiting queue alone, as upstream's does (sluicegate's counts
    max(waiting, in flight − running)). A diagnostic row: what that one difference moves."""

    def __init__(self) -> None:
        super().__init__("sluicegate-scraped-queue", UPSTREAM_SCORER)

    def pick(self, path: str, body: bytes) -> str:
        address = super().pick(path, body)
        self.scheduler.release(address)
        return address

    def done(self, address: str) -> None:
        pass
