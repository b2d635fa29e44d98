"""KV-cache events published the way vLLM's `ZmqEventPublisher` does: a ZMQ PUB socket that
binds when the endpoint has a wildcard (`tcp://*:5557`, `ipc://`) and otherwise connects out
to a subscriber that bound it (llm-d's EPP), one message per engine step with events, as three
frames — topic (`kv@<pod-ip>:<port>@<model>` for llm-d), an 8-byte big-endian sequence number,
and a msgpack `KVEventBatch`. Two wire forms of the events, as vLLM versions differ: "array"
(msgspec array_like: `[ts, [["BlockStored", ...], ...], dp_rank]`) and "map" (named fields with
a `type` tag: `[ts, [{"type": "BlockStored", ...}], dp_rank]`); the batch is an array in both,
as vLLM's `EventBatch` (array_like) is, and as upstream's decoder reads it (a map-shaped batch
decodes there as a batch of no events)."""

from __future__ import annotations

import time
from typing import Any

import msgpack
import zmq

ENCODINGS = ("array", "map")
# Field order of each event in the array form; trailing fields at their default are omitted
# (msgspec omit_defaults), which only `extra_keys` has.
FIELDS = {
    "BlockStored": ("block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id",
                    "medium", "lora_name", "extra_keys"),
    "BlockRemoved": ("block_hashes", "medium"),
    "AllBlocksCleared": (),
}
_DEFAULTED = {"extra_keys"}


def topic_for(pod_address: str, model: str) -> str:
    """The topic llm-d's subscriber maps to an endpoint and a model."""
    return f"kv@{pod_address}@{model}"


def binds(endpoint: str) -> bool:
    """vLLM's rule: a wildcard or local-transport endpoint is bound, anything else dialled."""
    return "*" in endpoint or "::" in endpoint or endpoint.startswith(("ipc://", "inproc://"))


def encode_event(event: dict[str, Any], encoding: str) -> Any:
    kind = event["type"]
    if encoding == "map":
        return {k: v for k, v in event.items() if not (k in _DEFAULTED and v is None)}
    values = [event.get(name) for name in FIELDS[kind]]
    while values and FIELDS[kind][len(values) - 1] in _DEFAULTED and values[-1] is None:
        values.pop()
    return [kind, *values]


def encode_batch(events: list[dict[str, Any]], encoding: str, ts: float, dp_rank: int = 0) -> bytes:
    return msgpack.packb([ts, [encode_event(e, encoding) for e in events], dp_rank])


class KvEventPublisher:
    """Never blocks the engine: when no subscriber keeps up, ZMQ drops at its high-water mark,
    as vLLM's would; the sequence number still advances, so the loss shows as a gap."""

    def __init__(self, endpoint: str, topic: str = "", encoding: str = "array") -> None:
        if encoding not in ENCODINGS:
            raise ValueError(f"kv events encoding {encoding!r}: must be one of {ENCODINGS}")
        self._encoding = encoding
        self._ctx = zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.PUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, 100_000)
        try:
            if binds(endpoint):
                self._sock.bind(endpoint)
                self.address: str = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
            else:
                self._sock.connect(endpoint)
                self.address = endpoint
        except zmq.ZMQError as exc:
            self._sock.close()
            raise OSError(f"kv events endpoint {endpoint!r}: {exc}") from None
        self._topic = topic.encode()
        self._seq = 0
        self.batches = 0
        self.dropped = 0

    def set_topic(self, topic: str) -> None:
        self._topic = topic.encode()

    def publish(self, events: list[dict[str, Any]]) -> None:
        payload = encode_batch(events, self._encoding, time.time())
        try:
            self._sock.send_multipart([self._topic, self._seq.to_bytes(8, "big"), payload],
                                      flags=zmq.NOBLOCK)
            self.batches += 1
        except zmq.Again:
            self.dropped += 1
        self._seq += 1

    def close(self) -> None:
        self._sock.close()
