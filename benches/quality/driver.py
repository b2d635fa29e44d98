"""One workload against one policy on a fresh fleet: open-loop Poisson arrivals, each request
routed by the policy and sent straight to the picked simulator (non-streamed), timed on the
simulators' clock (the model's time, free of this machine's CPU contention) and the wall clock."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import os
import random
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import aiohttp

from sluicegate.loadgen.report import percentile
from sluicegate.loadgen.workloads import WorkloadRequest, lora, shared_prefix, varied
from sluicegate.sim.config import DEFAULT_MODEL

from benches.quality.fleet import INFERENCE_SIM, FleetShape, start_fleet
from benches.quality.policies import LeastRequestPolicy, Policy, PolicyError

WORKLOADS = ("shared_prefix", "varied", "lora", "burst")
# `burst`: arrivals in clumps of BURST requests within BURST_SPREAD_S, the clumps a Poisson
# process at rate / BURST, so a whole clump lands between two scrapes (50 ms).
BURST = 24
BURST_SPREAD_S = 0.005
Answered = Callable[[int, list[tuple[str, str]], bytes], Awaitable[None]]


def workload(name: str, seed: int, shape: FleetShape) -> Iterator[WorkloadRequest]:
    if name == "shared_prefix":
        # Many long system prompts (tenants, agents), each opening several multi-turn chats: more
        # distinct prefixes than one server's KV cache holds, so where a request goes decides
        # whether its prefix is cached.
        return shared_prefix(seed, DEFAULT_MODEL, system_prompts=32, conversations=128, max_turns=6)
    if name in ("varied", "burst"):  # independent prompts: no prefix decides where they go
        return varied(seed, DEFAULT_MODEL)
    if name == "lora":
        return lora(seed, DEFAULT_MODEL, adapters=shape.loras)
    raise ValueError(f"workload {name!r}: one of {', '.join(WORKLOADS)}")


def arrival_offsets(name: str, seed: int, rate: float, duration_s: float) -> list[float]:
    """Seconds from the start at which requests arrive: Poisson at `rate`, or for `burst`
    clumps of BURST (each spread uniformly over BURST_SPREAD_S) at rate / BURST."""
    rng = random.Random(f"quality-arrivals|{seed}|{name}")
    if name != "burst":
        return list(itertools.takewhile(
            lambda t: t < duration_s, itertools.accumulate(rng.expovariate(rate) for _ in itertools.count())))
    starts = itertools.takewhile(
        lambda t: t < duration_s, itertools.accumulate(rng.expovariate(rate / BURST) for _ in itertools.count()))
    return sorted(start + rng.uniform(0.0, BURST_SPREAD_S) for start in starts for _ in range(BURST))


@dataclass
class Sample:
    ok: bool
    sim_ttft_ms: float = 0.0
    sim_e2e_ms: float = 0.0
    wall_e2e_ms: float = 0.0
    output_tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0  # the server's prefix-cache hit at admission (usage.cached_tokens)


@dataclass
class RunResult:
    workload: str
    policy: str
    rate: float
    duration_s: float
    speedup: float
    samples: list[Sample] = field(default_factory=list)
    counters: dict[str, float] = field(default_factory=dict)
    # Later turns of a conversation sent to another server than its previous turn (the turns
    # that leave their cached history behind), and where each conversation's last turn went.
    moves: int = 0
    last_server: dict[tuple[str, ...], str] = field(default_factory=dict)
    # First turns sent to a server that never had their system prompt while another had it.
    spreads: int = 0
    prompt_servers: dict[str, set[str]] = field(default_factory=dict)
    # SLUICEGATE_QUALITY_TRACE set: one record per request, in arrival order (`trace_record`).
    trace: list[dict[str, object]] | None = None

    def count_move(self, request: WorkloadRequest, address: str) -> str:
        """What placing this request at `address` was: "" (not a chat), "cold" (the first
        request of its system prompt placed), "first" (a first turn sent to a server that had
        its system prompt), "spread" (a first turn sent elsewhere), "stay" or "move" (a later
        turn, on its previous turn's server or not). Counted in the order requests are placed."""
        messages = request.body.get("messages") or []
        if len(messages) < 2:
            return ""
        # A conversation: its system prompt and first user turn (a new one on the same system
        # prompt starts with another user turn).
        key = (messages[0]["content"], messages[1]["content"])
        before = self.last_server.get(key)
        kind = "stay"
        if before is not None and before != address and len(messages) > 2:
            self.moves += 1
            kind = "move"
        servers = self.prompt_servers.setdefault(messages[0]["content"], set())
        if len(messages) == 2:
            kind = "cold" if not servers else "first"
            if servers and address not in servers:
                self.spreads += 1
                kind = "spread"
        servers.add(address)
        self.last_server[key] = address
        return kind

    def summary(self) -> dict[str, float | int | str | None]:
        ok = [s for s in self.samples if s.ok]
        ttft = [s.sim_ttft_ms for s in ok]
        e2e = [s.sim_e2e_ms for s in ok]
        c = self.counters
        return {
            "workload": self.workload, "policy": self.policy, "rate": round(self.rate, 2),
            "requests": len(self.samples), "errors": len(self.samples) - len(ok),
            "ttft_p50_ms": percentile(ttft, 50), "ttft_p90_ms": percentile(ttft, 90),
            "ttft_p99_ms": percentile(ttft, 99), "e2e_p50_ms": percentile(e2e, 50),
            "e2e_p99_ms": percentile(e2e, 99),
            "wall_e2e_p50_ms": percentile([s.wall_e2e_ms for s in ok], 50),
            # Simulated-clock throughput: wall seconds stand for `speedup` model seconds.
            "output_tok_s": sum(s.output_tokens for s in ok) / (self.duration_s * self.speedup),
            "prefix_hit_rate": c["prefix_hits"] / c["prefix_queries"] if c.get("prefix_queries") else 0.0,
            "preemptions": int(c.get("preemptions", 0)), "adapter_loads": int(c.get("adapter_loads", 0)),
            "moves": self.moves, "spreads": self.spreads,
        }


def trace_record(request: WorkloadRequest, address: str, kind: str, sample: Sample) -> dict[str, object]:
    """Where one request went and what the server had cached of it (to compare two policies'
    placements request by request: the same seed sends the same requests in the same order)."""
    messages = request.body.get("messages") or []
    return {"system": zlib.crc32(messages[0]["content"].encode()) if messages else 0,
            "conversation": zlib.crc32("".join(m["content"] for m in messages[:2]).encode()),
            "turn": len(messages) // 2, "address": address, "kind": kind, "ok": sample.ok,
            "prompt_tokens": sample.prompt_tokens, "cached_tokens": sample.cached_tokens,
            "ttft_ms": sample.sim_ttft_ms}


def _body(request: WorkloadRequest, shape: FleetShape) -> bytes:
    """Non-streamed for our simulators (they time TTFT on their own clock); streamed, as the
    workload asks, for llm-d-inference-sim (TTFT is when its first chunk arrives)."""
    if shape.server == INFERENCE_SIM:
        return json.dumps(request.body).encode()
    body = {k: v for k, v in request.body.items() if k not in ("stream", "stream_options")}
    return json.dumps(body).encode()


async def _send(session: aiohttp.ClientSession, address: str, path: str, body: bytes,
                answered: Answered | None = None) -> Sample:
    """`answered` gets the server's answer (status, headers, body) once it is timed: a policy
    that routes through an ext_proc stream sends it back on the stream, as Envoy does."""
    started = time.perf_counter()
    try:
        async with session.post(f"http://{address}{path}", data=body,
                                headers={"content-type": "application/json"}) as resp:
            raw = await resp.read()
            wall_ms = (time.perf_counter() - started) * 1000.0
            if answered is not None:
                await answered(resp.status, list(resp.headers.items()), raw)
            payload = json.loads(raw)
            if resp.status != 200:
                return Sample(False)
            usage = payload["usage"]
            return Sample(True, float(resp.headers["x-sim-ttft-ms"]), float(resp.headers["x-sim-e2e-ms"]),
                          wall_ms, usage["completion_tokens"], usage["prompt_tokens"],
                          (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0))
    except (aiohttp.ClientError, asyncio.TimeoutError, KeyError, ValueError, PolicyError):
        return Sample(False)


async def _send_streamed(session: aiohttp.ClientSession, address: str, path: str, body: bytes,
                         answered: Answered | None = None) -> Sample:
    """A streamed request timed on the wall clock: TTFT when the first chunk arrives (the server
    answers its headers with it), the usage from the last one."""
    started = time.perf_counter()
    first = 0.0
    usage = None
    chunks = []
    try:
        async with session.post(f"http://{address}{path}", data=body,
                                headers={"content-type": "application/json"}) as resp:
            async for line in resp.content:
                chunks.append(line)
                if not line.startswith(b"data: {"):
                    continue
                first = first or time.perf_counter()
                if b'"usage":{' in line:
                    usage = json.loads(line[6:]).get("usage") or usage
            wall_ms = (time.perf_counter() - started) * 1000.0
            if answered is not None:
                await answered(resp.status, list(resp.headers.items()), b"".join(chunks))
            if resp.status != 200 or usage is None or not first:
                return Sample(False)
            return Sample(True, (first - started) * 1000.0, wall_ms, wall_ms, usage["completion_tokens"],
                          usage["prompt_tokens"], (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0))
    except (aiohttp.ClientError, asyncio.TimeoutError, KeyError, ValueError, PolicyError):
        return Sample(False)


def _sender(shape: FleetShape) -> Callable[..., Awaitable[Sample]]:
    return _send_streamed if shape.server == INFERENCE_SIM else _send


async def run_policy(name: str, policy: Policy, shape: FleetShape, rate: float, duration_s: float,
                     seed: int, timeout_s: float = 120.0) -> RunResult:
    """Bounded: a run that has not finished `timeout_s` after its last arrival fails, naming
    what every task of the loop was waiting on."""
    try:
        async with asyncio.timeout(duration_s + timeout_s + 30):
            return await _run_policy(name, policy, shape, rate, duration_s, seed, timeout_s)
    except TimeoutError:
        stacks = io.StringIO()
        for task in asyncio.all_tasks():
            task.print_stack(limit=6, file=stacks)
        raise RuntimeError(f"{name}/{policy.name} did not finish; tasks:\n{stacks.getvalue()}") from None


async def _run_policy(name: str, policy: Policy, shape: FleetShape, rate: float, duration_s: float,
                      seed: int, timeout_s: float) -> RunResult:
    fleet = start_fleet(shape, seed)
    send = _sender(shape)
    result = RunResult(name, policy.name, rate, duration_s, shape.speedup)
    try:
        await policy.start(fleet)
        requests = workload(name, seed, shape)
        pending: set[asyncio.Task[None]] = set()
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:

            async def one(request: WorkloadRequest, slot: int) -> None:
                body = _body(request, shape)
                try:
                    address = await policy.pick_async(request.path, body)
                except PolicyError:  # routing refused (an ext_proc answer without an endpoint)
                    result.samples.append(Sample(False))
                    return
                kind = result.count_move(request, address)
                try:
                    sample = await send(session, address, request.path, body, policy.answered)
                    result.samples.append(sample)
                    if result.trace is not None:
                        result.trace[slot] = trace_record(request, address, kind, sample)
                finally:
                    policy.done(address)

            offsets = arrival_offsets(name, seed, rate, duration_s)
            if os.environ.get("SLUICEGATE_QUALITY_TRACE"):
                result.trace = [{} for _ in offsets]
            loop = asyncio.get_running_loop()
            start = loop.time()
            for slot, offset in enumerate(offsets):
                await asyncio.sleep(max(0.0, start + offset - loop.time()))
                task = asyncio.create_task(one(next(requests), slot))
                pending.add(task)
                task.add_done_callback(pending.discard)
            if pending:
                await asyncio.wait(set(pending), timeout=timeout_s + 5)
            result.counters = await fleet.counters(session)
    finally:
        await policy.stop()
        fleet.stop()
    return result


async def capacity(name: str, shape: FleetShape, seconds: float, seed: int) -> float:
    """Requests/s (wall) the fleet completes when kept saturated (closed loop, 2 requests per
    batch slot outstanding, least-outstanding routing); the open-loop rate is a share of it."""
    fleet = start_fleet(shape, seed)
    send = _sender(shape)
    policy = LeastRequestPolicy(seed)
    done = 0
    try:
        await policy.start(fleet)
        requests = workload(name, seed + 1, shape)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                         timeout=aiohttp.ClientTimeout(total=120)) as session:
            loop = asyncio.get_running_loop()
            warm, end = loop.time() + seconds / 3, loop.time() + seconds

            async def worker() -> None:
                nonlocal done
                while loop.time() < end:
                    request = next(requests)
                    body = _body(request, shape)
                    address = policy.pick(request.path, body)
                    try:
                        sample = await send(session, address, request.path, body)
                    finally:
                        policy.done(address)
                    if sample.ok and warm <= loop.time() < end:
                        done += 1

            await asyncio.gather(*(worker() for _ in range(2 * shape.count * shape.max_num_seqs)))
    finally:
        await policy.stop()
        fleet.stop()
    return done / (seconds * 2 / 3)
