"""The precise prefix index shared by EPP replicas through Redis / Valkey
(`indexerConfig.kvBlockIndexConfig.redisConfig.address`). Model servers publish their KV events
to one replica's ZMQ endpoint; that replica appends each batch it decodes to a Redis stream and
every replica applies the batches the others appended, so all hold the same index. Lookups stay
in each replica's memory (no network call per request). When Redis is away each replica keeps
its own index from the events it receives and keeps serving; appends and reads resume when
Redis returns (batches in between reach only the replica that received them)."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Callable

import redis.asyncio as redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

STREAM = "sluicegate:kv-events"
MAX_LEN = 200_000  # batches kept in the stream (approximate trim)
# Reconnect attempts while Redis is away: the first after RETRY_MIN_S, doubling up to RETRY_MAX_S.
RETRY_MIN_S = 0.25
RETRY_MAX_S = 2.0
MAX_PENDING = 10_000  # batches queued for appending; beyond, new ones are dropped (counted)
CLOSE_WAIT_S = 1.0  # for a cancelled task to end, before and after the connections close
READ_BLOCK_MS = 1000  # one XREAD waits this long for new batches (below the socket timeout)


def redis_url(address: str) -> str:
    """redisConfig.address as upstream takes it: "host:port", "redis://…" or "valkey://…"."""
    if address.startswith("valkey://"):
        return "redis://" + address[len("valkey://"):]
    return address if "://" in address else f"redis://{address}"


class SharedEventLog:
    """`apply(address, model, payload, seq)` applies a batch another replica appended."""

    def __init__(self, address: str, apply: Callable[[str, str, bytes, int | None], None]) -> None:
        self.address = address
        self._client = redis.from_url(redis_url(address), socket_timeout=2.0, socket_connect_timeout=2.0)
        self._apply = apply
        self._origin = f"{os.getpid()}-{uuid.uuid4().hex[:8]}".encode()
        self._last_id = b"$"
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._pending: list[dict[bytes, bytes]] = []
        self.up = False
        self.appended = 0
        self.applied = 0
        self.failures = 0
        self.dropped = 0

    def start(self) -> None:
        if self._task is None:
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._follow(), name="kv-events-redis")
            self._writer = loop.create_task(self._write(), name="kv-events-redis-append")

    async def close(self) -> None:
        tasks = [t for t in (self._task, self._writer) if t is not None]
        self._task = self._writer = None
        for task in tasks:
            task.cancel()
        # A read cancelled inside redis-py can wait on its connection for good (1 close in ~30
        # under load): closing the client's connections ends it.
        _, pending = await asyncio.wait(tasks, timeout=CLOSE_WAIT_S) if tasks else (set(), set())
        await self._client.aclose()
        if pending:
            await asyncio.wait(pending, timeout=CLOSE_WAIT_S)

    def append(self, address: str, model: str, payload: bytes, seq: int | None) -> None:
        """Queue a locally received batch for the stream (sent at once by the append task,
        never blocking the caller); dropped while Redis is away."""
        if not self.up:
            return
        if len(self._pending) >= MAX_PENDING:  # Redis slower than the events: share what it takes
            self.dropped += 1
            return
        entry = {b"o": self._origin, b"e": address.encode(), b"m": model.encode(), b"p": payload}
        if seq is not None:
            entry[b"s"] = str(seq).encode()
        self._pending.append(entry)
        self._wake.set()

    async def _write(self) -> None:
        """Appends each queued batch as soon as it is queued (on its own connection, so the
        other replicas see it within a round trip, not after this one's read times out)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            pending, self._pending = self._pending, []
            if not pending or not self.up:
                continue
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for entry in pending:
                        pipe.xadd(STREAM, entry, maxlen=MAX_LEN, approximate=True)
                    await pipe.execute()
                self.appended += len(pending)
            except (RedisError, OSError) as exc:
                self._down(exc)  # the follow loop reconnects

    def _down(self, exc: BaseException) -> None:
        self.failures += 1
        if self.up:
            log.warning("kv index: Redis at %s unreachable (%s); serving from this replica's "
                        "own index until it returns", self.address, exc)
        self.up = False
        self._pending.clear()

    async def _follow(self) -> None:
        retry = RETRY_MIN_S
        while True:
            try:
                if not self.up:
                    await self._client.ping()
                    if self._last_id == b"$":  # start after what the stream holds now
                        newest = await self._client.xrevrange(STREAM, count=1)
                        self._last_id = newest[0][0] if newest else b"0-0"
                    self.up = True
                    retry = RETRY_MIN_S
                    log.info("kv index: sharing through Redis at %s", self.address)
                answer = await self._client.xread({STREAM: self._last_id}, count=512, block=READ_BLOCK_MS)
                for _, entries in answer or ():
                    for entry_id, fields in entries:
                        self._last_id = entry_id
                        if fields.get(b"o") == self._origin:
                            continue
                        seq = int(fields[b"s"]) if b"s" in fields else None
                        self._apply(fields[b"e"].decode(), fields[b"m"].decode(), fields[b"p"], seq)
                        self.applied += 1
            except (RedisError, OSError) as exc:
                self._down(exc)
                await asyncio.sleep(retry)
                retry = min(retry * 2, RETRY_MAX_S)
