"""KV-cache events published the way vLLM's `ZmqEventPublisher` does: a ZMQ PUB socket that
binds when the endpoint has a wildcard (`tcp://*:5557`, `ipc://`) and otherwise connects out
to a subscriber that bound it (llm-d's EPP), one message per engine step with events, as three
frames — topic (`kv@<pod-ip>:<port>@<model>` for llm-d), an 8-byte big-endian sequence number,
and a msgpack `KVEventBatch`. Two wire forms of the events, as vLLM versions differ: "array"
(msgspec array_like: `[ts, [["BlockStored", ...], ...], dp_rank]`) and "map" (named fields with
a `type` tag: `[ts, [{"type": "BlockStored", ...}], dp_rank]`); the batch is an array in both,
as vLLM's `EventBatch` (array_like) is, and as upstream's decoder reads it (a map-shaped batch
decodes there as a batch of no events).

With a replay endpoint (vLLM's `--kv-events-config '{"replay_endpoint": "tcp://*:5558"}'`) the
publisher also keeps its last batches and binds a ZMQ ROUTER socket where a subscriber that
joined late or saw a gap in the sequence numbers asks for them: a request `[b"", start seq]`
(8 bytes, big-endian) from a DEALER gets every kept batch from that number on as
`[topic, seq, payload]`, then an end marker `[b"", END_SEQ, b""]`."""

from __future__ import annotations

import random
import time
from collections import deque
from typing import Any

import msgpack
import zmq
import zmq.asyncio

ENCODINGS = ("array", "map")
# Field order of each event in the array form; trailing fields at their default are omitted
# (msgspec omit_defaults): `extra_keys`, and the hybrid allocator's group fields.
FIELDS = {
    "BlockStored": ("block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id",
                    "medium", "lora_name", "extra_keys", "group_idx", "kv_cache_spec_kind",
                    "kv_cache_spec_sliding_window"),
    "BlockRemoved": ("block_hashes", "medium", "group_idx"),
    "AllBlocksCleared": (),
}
_DEFAULTED = {"extra_keys", "group_idx", "kv_cache_spec_kind", "kv_cache_spec_sliding_window"}
# The end of a replay: -1 as a signed 64-bit big-endian sequence number (vLLM's END_SEQ).
END_SEQ = (2**64 - 1).to_bytes(8, "big")
REPLAY_BATCHES = 10_000  # batches kept for replay (vLLM's buffer_steps)


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
    as vLLM's would; the sequence number still advances, so the loss shows as a gap. `loss` is a
    fault to inject: that fraction of batches is not sent live (a network blip), though kept for
    replay."""

    def __init__(self, endpoint: str, topic: str = "", encoding: str = "array", replay_endpoint: str = "",
                 loss: float = 0.0, seed: int = 0) -> None:
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
        self._loss = loss
        self._rng = random.Random(f"kv-events-loss|{seed}")
        self._kept: deque[tuple[int, bytes]] = deque(maxlen=REPLAY_BATCHES)
        self._replay: zmq.asyncio.Socket | None = None
        self.replay_address = ""
        if replay_endpoint:
            replay = zmq.asyncio.Context.instance().socket(zmq.ROUTER)
            replay.setsockopt(zmq.LINGER, 0)
            replay.setsockopt(zmq.SNDHWM, REPLAY_BATCHES + 1)  # a whole replay fits: none dropped
            try:
                replay.bind(replay_endpoint)
            except zmq.ZMQError as exc:
                replay.close()
                self._sock.close()
                raise OSError(f"kv events replay endpoint {replay_endpoint!r}: {exc}") from None
            self._replay = replay
            self.replay_address = replay.getsockopt_string(zmq.LAST_ENDPOINT)
        self.batches = 0
        self.dropped = 0
        self.lost = 0
        self.replays = 0

    def set_topic(self, topic: str) -> None:
        self._topic = topic.encode()

    def publish(self, events: list[dict[str, Any]]) -> None:
        payload = encode_batch(events, self._encoding, time.time())
        if self._replay is not None:
            self._kept.append((self._seq, payload))
        if self._loss and self._rng.random() < self._loss:
            self.lost += 1
        else:
            try:
                self._sock.send_multipart([self._topic, self._seq.to_bytes(8, "big"), payload],
                                          flags=zmq.NOBLOCK)
                self.batches += 1
            except zmq.Again:
                self.dropped += 1
        self._seq += 1

    async def serve_replay(self) -> None:
        """Answer replay requests until cancelled (nothing to do without a replay endpoint).
        A request that is not `[identity, b"", 8-byte seq]` is ignored, as vLLM ignores it."""
        if self._replay is None:
            return
        sock = self._replay
        while True:
            frames = await sock.recv_multipart()
            if len(frames) != 3 or len(frames[2]) != 8:
                continue
            identity, start = frames[0], int.from_bytes(frames[2], "big")
            for seq, payload in [kept for kept in self._kept if kept[0] >= start]:
                await sock.send_multipart([identity, b"", self._topic, seq.to_bytes(8, "big"), payload])
            await sock.send_multipart([identity, b"", b"", END_SEQ, b""])
            self.replays += 1

    def close(self) -> None:
        self._sock.close()
        if self._replay is not None:
            self._replay.close()
            self._replay = None
