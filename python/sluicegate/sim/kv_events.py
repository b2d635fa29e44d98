"""KV-cache events published the way vLLM's `ZmqEventPublisher` does: a ZMQ PUB socket, one
message per engine step with events, as three frames — topic, an 8-byte big-endian sequence
number, and a msgpack `KVEventBatch` (`[ts, [event, ...]]`, each event a tagged array)."""

from __future__ import annotations

import time
from typing import Any

import msgpack
import zmq


class KvEventPublisher:
    """Binds `endpoint` (e.g. "tcp://127.0.0.1:*" for a free port); never blocks the engine:
    when no subscriber keeps up, ZMQ drops at its high-water mark, as vLLM's would."""

    def __init__(self, endpoint: str, topic: str = "") -> None:
        self._ctx = zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.PUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, 100_000)
        try:
            self._sock.bind(endpoint)
        except zmq.ZMQError as exc:
            self._sock.close()
            raise OSError(f"kv events endpoint {endpoint!r}: {exc}") from None
        self.address: str = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._topic = topic.encode()
        self._seq = 0
        self.batches = 0
        self.dropped = 0

    def publish(self, events: list[list[Any]]) -> None:
        payload = msgpack.packb([time.time(), events])
        try:
            self._sock.send_multipart([self._topic, self._seq.to_bytes(8, "big"), payload],
                                      flags=zmq.NOBLOCK)
            self.batches += 1
        except zmq.Again:
            self.dropped += 1
        self._seq += 1  # a lost batch shows as a gap to the subscriber

    def close(self) -> None:
        self._sock.close()
