"""Open-loop load driver for the load benches, run as its own process so its CPU is not the
EPP's and can be measured: `python -m benches.load.driver '<json config>'` prints one JSON
result line.

Lean on purpose (uvloop, asyncio streams, hand-written HTTP/1.1 on keep-alive connections, no
JSON on the response path) so that on 2 cores the driver is not the bottleneck; it reports its
own CPU per request so every result says how much of the machine the driver took.

Config keys: url, rate (req/s), duration_s, arrival ("poisson" | "burst"; bursts of
`burst_size` every burst_size/rate s), seed, plus the workload (`sharegpt_like`): stream_ratio,
shared_prefix_ratio, output_tokens, objectives, fairness_ids, token_interval_ms, model (the model
requests name); and
`hold_streams`: open that many streams at once (one HTTP/1.1 connection each), print
`open <n> <us> <statuses>` when all have their first byte, then close them on a line on stdin
(memory at N concurrent streams, and their release).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple
from urllib.parse import urlsplit

from benches.backend import INTERVAL_HEADER
from sluicegate.loadgen.workloads import sharegpt_like


@dataclass
class Results:
    latencies_us: list[int] = field(default_factory=list)
    ttft_us: list[int] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0


class Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer


class Pool:
    """Keep-alive connections to one host:port, opened on demand and reused."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._idle: list[Connection] = []

    async def get(self) -> Connection:
        if self._idle:
            return self._idle.pop()
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        return Connection(reader, writer)

    def put(self, conn: Connection) -> None:
        self._idle.append(conn)

    def close(self) -> None:
        for c in self._idle:
            c.writer.close()


async def _read_response(conn: Connection, started: int, results: Results) -> bool:
    """Read one response; whether the connection may be reused."""
    head = await conn.reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    results.statuses[status] = results.statuses.get(status, 0) + 1
    lower = head.lower()
    first = None
    if b"transfer-encoding: chunked" in lower:
        while True:
            size = int((await conn.reader.readline()).split(b";", 1)[0], 16)
            if first is None:
                first = time.perf_counter_ns()
            if size == 0:
                await conn.reader.readline()
                break
            await conn.reader.readexactly(size + 2)
    else:
        i = lower.find(b"content-length:")
        length = int(lower[i + 15:lower.find(b"\r\n", i)]) if i >= 0 else 0
        await conn.reader.readexactly(length)
        first = time.perf_counter_ns()
    end = time.perf_counter_ns()
    results.latencies_us.append((end - started) // 1000)
    results.ttft_us.append((first - started) // 1000)
    return b"connection: close" not in lower


async def one(pool: Pool, raw: bytes, results: Results) -> None:
    started = time.perf_counter_ns()
    conn = None
    try:
        conn = await pool.get()
        conn.writer.write(raw)
        if await _read_response(conn, started, results):
            pool.put(conn)
            conn = None
    except (OSError, asyncio.IncompleteReadError, ValueError):
        results.errors += 1
    finally:
        if conn is not None:
            conn.writer.close()


def _raw_request(host: str, path: str, body: dict, headers: dict[str, str]) -> bytes:
    data = json.dumps(body, separators=(",", ":")).encode()
    lines = [f"POST {path} HTTP/1.1", f"host: {host}", "content-type: application/json",
             f"content-length: {len(data)}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def requests(cfg: dict, host: str):
    extra = {}
    if cfg.get("token_interval_ms"):
        extra[INTERVAL_HEADER] = str(cfg["token_interval_ms"])
    named = {"model": cfg["model"]} if cfg.get("model") else {}
    for req in sharegpt_like(cfg.get("seed", 0), **named, stream_ratio=cfg.get("stream_ratio", 0.5),
                             shared_prefix_ratio=cfg.get("shared_prefix_ratio", 0.3),
                             output_tokens=cfg.get("output_tokens"),
                             objectives=tuple(cfg.get("objectives", ())),
                             fairness_ids=tuple(cfg.get("fairness_ids", ()))):
        yield _raw_request(host, req.path, req.body, {**req.headers, **extra})


async def open_loop(cfg: dict) -> dict:
    parts = urlsplit(cfg["url"])
    pool = Pool(parts.hostname or "127.0.0.1", parts.port or 80)
    results = Results()
    rng = random.Random(cfg.get("seed", 0))
    rate, duration = float(cfg["rate"]), float(cfg["duration_s"])
    burst = int(cfg.get("burst_size", 1)) if cfg.get("arrival") == "burst" else 1
    source = requests(cfg, parts.netloc)
    tasks: set[asyncio.Task] = set()
    cpu0, t0 = time.process_time(), time.perf_counter()
    next_at, sent, lag = t0, 0, 0.0
    while next_at - t0 < duration:
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            lag = max(lag, -delay)
        for _ in range(burst):
            task = asyncio.create_task(one(pool, next(source), results))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        gap = burst / rate
        next_at += rng.expovariate(1 / gap) if burst == 1 else gap
    if tasks:
        await asyncio.wait(tasks, timeout=cfg.get("drain_s", 30))
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    pool.close()
    return {"sent": sent, "statuses": results.statuses, "errors": results.errors, "wall_s": wall,
            "driver_cpu_s": cpu, "max_lag_s": lag, "latencies_us": results.latencies_us,
            "ttft_us": results.ttft_us}


async def hold_streams(cfg: dict) -> dict:
    parts = urlsplit(cfg["url"])
    n = int(cfg["hold_streams"])
    source = requests({**cfg, "stream_ratio": 1.0}, parts.netloc)
    conns = []
    for _ in range(n):
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port, limit=1 << 20)
        conns.append(Connection(reader, writer))
    t0 = time.perf_counter_ns()
    for c in conns:
        c.writer.write(next(source))
    # Every stream has its head once all are open; the driver reports, then reads them out.
    heads = await asyncio.gather(*(c.reader.readuntil(b"\r\n\r\n") for c in conns), return_exceptions=True)
    statuses: dict[str, int] = {}
    for h in heads:  # a status code, or the error that kept a stream from its head
        key = h[9:12].decode() if isinstance(h, bytes) and h.startswith(b"HTTP/1.1 ") else type(h).__name__
        statuses[key] = statuses.get(key, 0) + 1
    opened = sum(1 for h in heads if isinstance(h, bytes) and h.startswith(b"HTTP/1.1 200"))
    took_us = (time.perf_counter_ns() - t0) // 1000
    print(f"open {opened} {took_us} {json.dumps(statuses, separators=(',', ':'))}", flush=True)
    sys.stdin.readline()  # the bench measures, then lets the streams go (closing ends them)
    for c in conns:
        c.writer.close()
    return {"opened": opened, "wanted": n, "errors": n - opened, "statuses": statuses}


class Held(NamedTuple):
    opened: int  # streams that got a 200 head
    took_s: float  # from the first request sent to the last head read
    statuses: dict[str, int]  # head status code (or the error instead) -> streams


@contextlib.contextmanager
def held_streams(url: str, n: int, cwd: str | Path, **workload) -> Iterator[Held]:
    """Run the driver in `hold_streams` mode as a process: yields what it opened while the
    streams are held; leaving the block closes their connections and stops the process."""
    cfg = json.dumps({"url": url, "hold_streams": n, **workload})
    proc = subprocess.Popen([sys.executable, "-m", "benches.load.driver", cfg], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=cwd)
    try:
        fields = (proc.stdout.readline() if proc.stdout else "").split()  # "open <n> <us> <statuses>"
        if len(fields) != 4:
            raise RuntimeError(f"load driver did not hold its streams (exit={proc.poll()})")
        yield Held(int(fields[1]), int(fields[2]) / 1e6, json.loads(fields[3]))
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def main() -> None:
    import uvloop

    cfg = json.loads(sys.argv[1])
    run = hold_streams if cfg.get("hold_streams") else open_loop
    out = uvloop.run(run(cfg))
    # The loop may leave stdout non-blocking: a result above the pipe's 128 KiB would then be cut
    # mid-write while the reader is slow (seen under load as JSON ending at byte 131072).
    os.set_blocking(sys.stdout.fileno(), True)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
