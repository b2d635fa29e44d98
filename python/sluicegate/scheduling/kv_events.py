"""The control-plane side of precise-prefix-cache-producer: one ZMQ SUB socket per endpoint's
KV-event publisher (vLLM's `--kv-events-config`), each batch handed to the Rust index in one
call (`Router.apply_kv_events`, GIL released). Decoding and indexing are Rust; this only moves
frames."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import zmq
import zmq.asyncio

from .._core import Router

log = logging.getLogger(__name__)

# Label naming an endpoint's publisher port when several servers share a host (sluicegate's own;
# upstream derives "tcp://<pod ip>:<socketPort>").
PORT_LABEL = "sluicegate.io/kv-events-port"


def publisher_url(address: str, socket_port: int, labels: Mapping[str, str] | None = None) -> str:
    """The ZMQ endpoint of the publisher next to the model server at `address` ("ip:port")."""
    host = address.rsplit(":", 1)[0]
    port = (labels or {}).get(PORT_LABEL) or socket_port
    return f"tcp://{host}:{port}"


class KvEventSubscriber:
    """Subscribes to each endpoint's publisher and feeds the router; `set_publishers` follows
    the endpoint set, `close` stops every task and socket."""

    def __init__(self, router: Router, topic_filter: str = "", socket_port: int = 5557) -> None:
        self._router = router
        self._topic = topic_filter.encode()
        self.socket_port = socket_port
        self._ctx = zmq.asyncio.Context.instance()
        self._tasks: dict[str, tuple[str, asyncio.Task[None]]] = {}  # address -> (url, task)
        self.batches = 0
        self.errors = 0

    @classmethod
    def from_config(cls, router: Router, precise_prefix: Mapping[str, Any] | None) -> KvEventSubscriber | None:
        """The subscriber a config's precise-prefix-cache-producer asks for (EppConfig.precise_prefix);
        None without one."""
        if not precise_prefix:
            return None
        return cls(router, precise_prefix["topicFilter"], precise_prefix["socketPort"])

    def endpoints_changed(self, endpoints: Iterable[tuple[str, Mapping[str, str]]]) -> None:
        """Follow the pool: (address, labels) of every endpoint, publishers at their host."""
        self.set_publishers({a: publisher_url(a, self.socket_port, labels) for a, labels in endpoints})

    def set_publishers(self, publishers: Mapping[str, str]) -> None:
        """`publishers`: endpoint address -> ZMQ url. Starts new subscriptions, stops gone ones."""
        for address in list(self._tasks):
            url, task = self._tasks[address]
            if publishers.get(address) != url:
                task.cancel()
                del self._tasks[address]
        for address, url in publishers.items():
            if address not in self._tasks:
                task = asyncio.get_running_loop().create_task(
                    self._follow(address, url), name=f"kv-events-{address}")
                self._tasks[address] = (url, task)

    async def close(self) -> None:
        tasks = [task for _, task in self._tasks.values()]
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _follow(self, address: str, url: str) -> None:
        sock = self._ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SUBSCRIBE, self._topic)
        sock.connect(url)  # ZMQ reconnects on its own while the publisher is away
        try:
            while True:
                frames = await sock.recv_multipart()
                self._apply(address, frames)
        finally:
            sock.close()

    def _apply(self, address: str, frames: list[bytes]) -> None:
        # vLLM sends (topic, seq, payload); a publisher without sequence numbers (topic, payload).
        seq = int.from_bytes(frames[1], "big") if len(frames) == 3 and len(frames[1]) == 8 else None
        try:
            self._router.apply_kv_events(address, frames[-1], seq)
            self.batches += 1
        except ValueError as exc:
            self.errors += 1
            if self.errors <= 10 or self.errors % 1000 == 0:
                log.warning("kv events from %s dropped (%d so far): %s", address, self.errors, exc)
