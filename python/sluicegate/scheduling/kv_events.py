"""The control-plane side of precise-prefix-cache-producer: receives model servers' KV-event
batches over ZMQ and hands each to the Rust index in one call (`Router.apply_kv_events`, GIL
released); decoding and indexing are Rust. Two ways to meet the publishers:

- upstream's (`kvEventsConfig.zmqEndpoint`): the EPP binds one SUB socket that every vLLM
  dials (`--kv-events-config '{"endpoint": "tcp://epp:5557", "topic": "kv@<pod-ip>:<port>@<model>"}'`),
  the topic naming the endpoint and model of each batch;
- sluicegate's earlier one: a SUB socket per endpoint dialling its publisher's bound port.

With `kvEventsConfig.podDiscoveryConfig.replaySocketPort` (upstream's setting) the subscriber
asks each engine's replay socket (vLLM's `replay_endpoint`, a ZMQ ROUTER) for the batches it
missed. From the start of what the engine kept when the EPP first meets it: on dialling it; with
the engines dialling the bound endpoint, at once when the replicas share through Redis, else at
the engine's first batch numbered past 0. So an EPP that restarted rebuilds its index from the
engines' last 10,000 batches. And from the first missing number when a sequence skips ahead (a
network blip, a full high-water mark). Live batches that arrive meanwhile wait and follow in
order; an engine whose numbers start over is indexed afresh.

It also watches what the index does with the events: a warning line when lookups keep missing
while events arrive (tokenizer, block size or model name not as the engines'), or when the
engines' block hashes are not what `hashSeed` gives (another PYTHONHASHSEED)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.asyncio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .._core import Router
from ..metrics.requests import histogram_buckets
from .kv_index_redis import SharedEventLog

log = logging.getLogger(__name__)

# Label naming an endpoint's publisher port when several servers share a host (sluicegate's own;
# upstream derives "tcp://<pod ip>:<socketPort>").
PORT_LABEL = "sluicegate.io/kv-events-port"
# Label naming an endpoint's replay port, over replaySocketPort (same reason).
REPLAY_PORT_LABEL = "sluicegate.io/kv-events-replay-port"
WATCH_INTERVAL_S = 2.0
# A replay that sends nothing for this long has failed; one lasts at most REPLAY_TIMEOUT_S.
REPLAY_IDLE_S = 2.0
REPLAY_TIMEOUT_S = 60.0
# After a failed replay, batches are applied as they come for this long before asking again.
REPLAY_COOLDOWN_S = 30.0
HELD_MAX = 10_000  # live batches held per endpoint while its replay runs (oldest dropped)


def publisher_url(address: str, socket_port: int, labels: Mapping[str, str] | None = None, rank: int = 0) -> str:
    """The ZMQ endpoint of the publisher next to the model server at `address` ("ip:port"):
    socketPort offset by the endpoint's data-parallel rank (one publisher per rank, as vLLM
    binds them), unless a label names the port."""
    host = address.rsplit(":", 1)[0]
    port = (labels or {}).get(PORT_LABEL) or socket_port + rank
    return f"tcp://{host}:{port}"


def replay_url(address: str, replay_port: int, labels: Mapping[str, str] | None = None, rank: int = 0) -> str:
    """The replay socket of the engine at `address` ("ip:port"), offset by its rank as the
    publisher's; "" when it keeps none."""
    label = (labels or {}).get(REPLAY_PORT_LABEL)
    try:
        port = int(label) if label else replay_port + rank if replay_port > 0 else 0
    except ValueError:  # a label that is not a port number: no replay for that endpoint
        return ""
    return f"tcp://{address.rsplit(':', 1)[0]}:{port}" if 0 < port < 65536 else ""


class ReplayError(Exception):
    """A replay that did not complete; `operation` names it in zmq_errors_total."""

    def __init__(self, operation: str, message: str) -> None:
        super().__init__(message)
        self.operation = operation


@dataclass
class _Stream:
    """One publisher's sequence numbers as this subscriber has seen them."""
    applied: int | None = None  # the last batch handed to the index
    last: dict[str, int] = field(default_factory=dict)  # the last seen per source ("live", "shared")
    model: str = ""  # the model its topic names
    replay: asyncio.Task[None] | None = None
    # Batches that came while the replay ran: (payload, seq, source).
    held: deque[tuple[bytes, int, str]] = field(default_factory=lambda: deque(maxlen=HELD_MAX))
    failed_at: float = float("-inf")


def parse_topic(topic: bytes) -> tuple[str, str] | None:
    """(endpoint "ip:port", model) from llm-d's `kv@<ip:port>@<model>`; None for other topics."""
    parts = topic.decode(errors="replace").split("@", 2)
    if len(parts) != 3 or not parts[1]:
        return None
    return parts[1], parts[2]


class KvEventSubscriber:
    """Feeds the router from bound or dialled SUB sockets; counts per endpoint; `close` stops
    every task and socket."""

    def __init__(self, router: Router, topic_filter: str = "", socket_port: int = 5557,
                 zmq_endpoint: str = "", hash_seed: str = "", redis_address: str = "",
                 replay_port: int = 0) -> None:
        self._router = router
        self._topic = topic_filter.encode()
        self.socket_port = socket_port
        self.replay_port = replay_port
        self.zmq_endpoint = zmq_endpoint
        self.hash_seed = hash_seed
        self._ctx = zmq.asyncio.Context.instance()
        self._tasks: dict[str, tuple[str, asyncio.Task[None]]] = {}  # address -> (url, task)
        self._labels: dict[str, Mapping[str, str]] = {}  # address -> the endpoint's labels
        self._ranks: dict[str, int] = {}  # address -> its data-parallel rank, when not 0
        self._streams: dict[str, _Stream] = {}  # address -> its publisher's sequence
        self._bound: zmq.asyncio.Socket | None = None
        self._bound_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self.bound_address = ""
        self.batches = 0
        self.errors = 0
        self.received: Counter[str] = Counter()  # per endpoint address
        self.decoded: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.unknown: Counter[str] = Counter()  # batches naming no known endpoint
        self.replayed: Counter[str] = Counter()  # batches received from replay sockets
        self.replays: Counter[tuple[str, str]] = Counter()  # (address, "complete" | "failed")
        self.zmq_errors: Counter[tuple[str, str]] = Counter()  # (address, operation)
        self.warnings = 0
        # The index shared with other replicas through Redis, when configured.
        self.shared = SharedEventLog(redis_address, self._apply_shared) if redis_address else None
        self.shared_failed = 0

    @classmethod
    def from_config(cls, router: Router, precise_prefix: Mapping[str, Any] | None) -> KvEventSubscriber | None:
        """The subscriber a config's precise-prefix-cache-producer asks for (EppConfig.precise_prefix);
        None without one."""
        if not precise_prefix:
            return None
        return cls(router, precise_prefix["topicFilter"], precise_prefix["socketPort"],
                   precise_prefix.get("zmqEndpoint") or "", precise_prefix.get("hashSeed") or "",
                   precise_prefix.get("redisAddress") or "", precise_prefix.get("replaySocketPort") or 0)

    def start(self) -> None:
        """Bind the shared endpoint (when configured) and start watching the index."""
        loop = asyncio.get_running_loop()
        if self.zmq_endpoint and self._bound is None:
            sock = self._ctx.socket(zmq.SUB)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, 100_000)
            sock.setsockopt(zmq.SUBSCRIBE, self._topic)
            try:
                sock.bind(self.zmq_endpoint)
            except zmq.ZMQError as exc:
                sock.close()
                raise OSError(f"kvEventsConfig.zmqEndpoint={self.zmq_endpoint!r}: {exc}") from None
            self._bound = sock
            self.bound_address = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            self._bound_task = loop.create_task(self._receive_bound(sock), name="kv-events-bound")
            log.info("kv events: bound %s for model servers to publish to (topic filter %r)",
                     self.bound_address, self._topic.decode())
        if self._watch_task is None:
            self._watch_task = loop.create_task(self._watch(), name="kv-events-watch")
        if self.shared is not None:
            self.shared.start()

    def endpoints_changed(self, endpoints: Iterable[tuple[str, Mapping[str, str]]],
                          ranks: Mapping[str, int] | None = None) -> None:
        """Follow the pool: (address, labels) of every endpoint, and the data-parallel rank of
        those that have one. With a bound endpoint the publishers come to us; otherwise dial
        each one's publisher."""
        self.start()
        self._labels = dict(endpoints)
        self._ranks = dict(ranks or {})
        for address in [a for a in self._streams if a not in self._labels]:
            self._stop_replay(self._streams.pop(address))
        if self.zmq_endpoint:
            # A server publishes to one replica; sharing through Redis, every replica follows all
            # of them, so each may ask every server for its history at once. Without Redis a
            # replica waits for a server's first batch: it must not take in the history of one
            # that publishes to another replica (it would never see that one's evictions).
            if self.shared is not None:
                for address in self._labels:
                    self._catch_up(address)
            return
        self.set_publishers({a: publisher_url(a, self.socket_port, labels, self._ranks.get(a, 0))
                             for a, labels in self._labels.items()})

    def set_publishers(self, publishers: Mapping[str, str]) -> None:
        """`publishers`: endpoint address -> ZMQ url. Starts new subscriptions, stops gone ones;
        a new one first asks its engine's replay socket, when it has one, for what it kept."""
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
                self._catch_up(address)

    def _catch_up(self, address: str) -> None:
        """Ask a server met for the first time for everything it kept, when it keeps some: once
        (a pool change names it again; a failed replay is tried again at a gap, after the
        cooldown)."""
        if address in self._streams:
            return
        stream = self._streams[address] = _Stream()
        if self._replay_url(address):
            self._start_replay(address, stream, 0)

    async def close(self) -> None:
        tasks = [stream.replay for stream in self._streams.values() if stream.replay is not None]
        for stream in self._streams.values():
            self._stop_replay(stream)
        tasks += [task for _, task in self._tasks.values()]
        tasks += [t for t in (self._bound_task, self._watch_task) if t is not None]
        self._tasks.clear()
        self._bound_task = self._watch_task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._bound is not None:
            self._bound.close()
            self._bound = None
        if self.shared is not None:
            await self.shared.close()

    async def _receive_bound(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            frames = await sock.recv_multipart()
            named = parse_topic(frames[0])
            if named is None:
                self.unknown[frames[0].decode(errors="replace")] += 1
                continue
            address, model = named
            self._receive(address, frames, model)

    async def _follow(self, address: str, url: str) -> None:
        sock = self._ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SUBSCRIBE, self._topic)
        sock.connect(url)  # ZMQ reconnects on its own while the publisher is away
        try:
            while True:
                frames = await sock.recv_multipart()
                named = parse_topic(frames[0])
                self._receive(address, frames, named[1] if named else "")
        finally:
            sock.close()

    @property
    def subscriptions(self) -> int:
        """ZMQ subscriptions it holds: one per publisher it dials, or its bound endpoint."""
        return len(self._tasks) + (self._bound is not None)

    @property
    def held(self) -> int:
        """Live batches waiting for a replay to finish."""
        return sum(len(stream.held) for stream in self._streams.values())

    def _replay_url(self, address: str) -> str:
        return replay_url(address, self.replay_port, self._labels.get(address), self._ranks.get(address, 0))

    def _receive(self, address: str, frames: list[bytes], model: str) -> None:
        """A batch from the live stream. vLLM sends (topic, seq, payload); a publisher without
        sequence numbers (topic, payload)."""
        self.received[address] += 1
        seq = int.from_bytes(frames[1], "big") if len(frames) == 3 and len(frames[1]) == 8 else None
        if seq is None:
            self._apply(address, frames[-1], None, model)
            return
        self._arrive(address, frames[-1], seq, model, "live")

    def _apply_shared(self, address: str, model: str, payload: bytes, seq: int | None) -> None:
        """A batch another replica received, from the shared log."""
        if seq is None:
            self._apply(address, payload, None, model, "shared")
        else:
            self._arrive(address, payload, seq, model, "shared")

    def _arrive(self, address: str, payload: bytes, seq: int, model: str, source: str) -> None:
        """Order batches from one publisher, whichever way they came (its live stream, the log
        other replicas share, a replay): each goes to the index once, in sequence. A number
        lower than the last from the same source means the engine restarted: it is indexed
        afresh (the index drops what it held for it when the numbers go back)."""
        stream = self._streams.setdefault(address, _Stream())
        stream.model = model or stream.model
        last = stream.last.get(source)
        if last is not None and seq < last:
            log.info("kv events: %s restarted its sequence (%d after %d); indexing it afresh", address, seq, last)
            self._stop_replay(stream)
            stream.applied = None
        stream.last[source] = seq
        if stream.replay is not None:
            stream.held.append((payload, seq, source))
            return
        self._sequence(address, stream, payload, seq, source, may_replay=source == "live")

    def _sequence(self, address: str, stream: _Stream, payload: bytes, seq: int, source: str,
                  may_replay: bool) -> None:
        if stream.applied is not None and seq <= stream.applied:
            return  # it came another way already
        missed = seq > 0 if stream.applied is None else seq > stream.applied + 1
        if missed and may_replay and self._replay_url(address) \
                and time.monotonic() - stream.failed_at >= REPLAY_COOLDOWN_S:
            stream.held.append((payload, seq, source))
            self._start_replay(address, stream, 0 if stream.applied is None else stream.applied + 1)
            return
        self._apply(address, payload, seq, stream.model, source)
        stream.applied = seq

    def _start_replay(self, address: str, stream: _Stream, start: int) -> None:
        stream.replay = asyncio.get_running_loop().create_task(
            self._replay(address, stream, start), name=f"kv-events-replay-{address}")

    @staticmethod
    def _stop_replay(stream: _Stream) -> None:
        if stream.replay is not None:
            stream.replay.cancel()
            stream.replay = None
        stream.held.clear()

    async def _replay(self, address: str, stream: _Stream, start: int) -> None:
        """Ask the engine's replay socket for its batches from `start` on, then apply the live
        ones held meanwhile. A replay that fails is not asked again for REPLAY_COOLDOWN_S."""
        url = self._replay_url(address)
        began = time.monotonic()
        try:
            n = await asyncio.wait_for(self._fetch(address, stream, url, start), REPLAY_TIMEOUT_S)
        except Exception as exc:  # whatever failed, the live batches held must flow again
            operation = (exc.operation if isinstance(exc, ReplayError)
                         else "replay-timeout" if isinstance(exc, asyncio.TimeoutError) else "replay-connect")
            stream.failed_at = time.monotonic()
            self.replays[(address, "failed")] += 1
            self.zmq_errors[(address, operation)] += 1
            log.warning("kv events: replay from %s for %s failed (%s: %s); applying batches as they "
                        "come, next replay in %.0f s at the earliest", url, address, operation,
                        exc or "no end marker", REPLAY_COOLDOWN_S)
        else:
            self.replays[(address, "complete")] += 1
            log.info("kv events: %s replayed %d batches from seq %d in %.2f s", url, n, start,
                     time.monotonic() - began)
        stream.replay = None
        held = list(stream.held)
        stream.held.clear()
        for payload, seq, source in held:  # a gap left now stays (counted by the index)
            self._sequence(address, stream, payload, seq, source, may_replay=False)

    async def _fetch(self, address: str, stream: _Stream, url: str, start: int) -> int:
        """One replay over a DEALER socket: the request `[b"", start]`, then batches as
        `[b"", topic, seq, payload]` (vLLM before its topics in replies: `[b"", seq, payload]`)
        until the end marker, an empty payload. Applies each in turn; returns how many came."""
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 0)  # a whole replay may queue here
        sock.connect(url)
        n = 0
        try:
            await sock.send_multipart([b"", start.to_bytes(8, "big")])
            while True:
                try:
                    frames = await asyncio.wait_for(sock.recv_multipart(), REPLAY_IDLE_S)
                except asyncio.TimeoutError:
                    raise ReplayError("replay-no-progress" if n == 0 else "replay-incomplete",
                                      f"no answer for {REPLAY_IDLE_S:.0f} s after {n} batches") from None
                if frames and not frames[0]:
                    frames = frames[1:]
                if len(frames) == 2:
                    frames = [b"", *frames]
                if len(frames) != 3 or len(frames[1]) != 8:
                    raise ReplayError("replay-incomplete", f"a reply of {len(frames)} frames is not [topic, seq, payload]")
                topic, seq_bytes, payload = frames
                if not payload:
                    return n
                n += 1
                self.replayed[address] += 1
                seq = int.from_bytes(seq_bytes, "big")
                if stream.applied is not None and seq <= stream.applied:
                    continue
                named = parse_topic(topic)
                # A gap filled is shared with the other replicas; a whole history is not (they
                # have it, and numbers going back would read as a restart there).
                self._apply(address, payload, seq, named[1] if named else stream.model,
                            "gap" if start > 0 else "replay")
                stream.applied = seq
        finally:
            sock.close()

    def _apply(self, address: str, payload: bytes, seq: int | None, model: str, source: str = "live") -> None:
        """Hand one batch to the index. `source`: "live" or "gap" (replayed to fill a gap), both
        shared with the other replicas; "replay" (a history they have); "shared" (from them,
        counted apart)."""
        try:
            known = self._router.apply_kv_events(address, payload, seq, model)
        except ValueError as exc:
            if source == "shared":
                self.shared_failed += 1
                return
            self.errors += 1
            self.failed[address] += 1
            if self.errors <= 10 or self.errors % 1000 == 0:
                log.warning("kv events from %s dropped (%d so far): %s", address, self.errors, exc)
            return
        if source == "shared":
            return
        self.batches += 1
        if not known:
            self.unknown[address] += 1
            return
        self.decoded[address] += 1
        if self.shared is not None and source in ("live", "gap"):
            self.shared.append(address, model, payload, seq)

    async def _watch(self) -> None:
        last = self._router.kv_event_stats() or {}
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            now = self._router.kv_event_stats() or {}
            for line in diagnose(last, now, self.hash_seed):
                self.warnings += 1
                log.warning("%s", line)
            last = now


def diagnose(before: Mapping[str, int], after: Mapping[str, int], hash_seed: str) -> list[str]:
    """Warning lines for what changed between two readings of the index's counters."""
    d = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    lines = []
    if d.get("engine_hash_mismatches", 0) > 0:
        lines.append(
            f"kv events: {d['engine_hash_mismatches']} of {d['engine_hash_checks']} engine block hashes "
            f"are not vLLM's sha256_cbor with hashSeed={hash_seed!r}: the model servers run with another "
            "PYTHONHASHSEED or --prefix-caching-hash-algo (matching still works from token ids; "
            "set tokenProcessorConfig.hashSeed to the servers' PYTHONHASHSEED)")
    if d.get("block_size_mismatches", 0) > 0:
        lines.append(f"kv events: {d['block_size_mismatches']} BlockStored events of another block size "
                     "than tokenProcessorConfig.blockSize were ignored")
    if d.get("unknown_parents", 0) > 0 and d.get("admissions", 0) == 0:
        lines.append(f"kv events: {d['unknown_parents']} BlockStored events continue blocks never seen "
                     "(the EPP joined late or lost events); they are skipped until new prefixes arrive "
                     "(kvEventsConfig.podDiscoveryConfig.replaySocketPort set to the engines' replay "
                     "port recovers them)")
    if d.get("tokenize_failures", 0) > 0:
        lines.append(f"kv events: {d['tokenize_failures']} requests could not be tokenized "
                     "(token-producer): they were scored as no prefix match")
    if d.get("events", 0) > 0 and d.get("lookups", 0) >= 5 and d.get("lookup_hits", 0) == 0 \
            and after.get("size", 0) > 0:
        lines.append(
            f"kv events: {d['lookups']} prefix lookups matched no block while {d['events']} events arrived "
            f"and {after['size']} blocks are indexed — the EPP's block keys differ from the engines': "
            "check token-producer (tokenizer, chat template), tokenProcessorConfig.blockSize and the model name")
    return lines


# The index's and the event pool's counters under upstream's names (llm-d-kv-cache's
# collector), each also under the deprecated kvcache_* name upstream keeps for dashboards:
# (name, deprecated name, key in kv_event_stats, help). max_pod_hit_count and lookup_hits
# count the same thing there, the longest chain one pod holds per lookup.
_COUNTER_FAMILIES = (
    ("llm_d_epp_kv_cache_index_admissions_total", "kvcache_index_admissions_total", "admissions",
     "Total number of KV-block admissions"),
    ("llm_d_epp_kv_cache_index_evictions_total", "kvcache_index_evictions_total", "evictions",
     "Total number of KV-block evictions"),
    ("llm_d_epp_kv_cache_index_lookup_requests_total", "kvcache_index_lookup_requests_total", "lookups",
     "Total number of lookup calls"),
    ("llm_d_epp_kv_cache_index_lookup_hits_total", "kvcache_index_lookup_hits_total", "lookup_hits",
     "Contiguous prefix blocks matched by the best pod per lookup"),
    ("llm_d_epp_kv_cache_index_max_pod_hit_count_total", "kvcache_index_max_pod_hit_count_total", "lookup_hits",
     "Longest contiguous per-pod prefix chain observed per lookup"),
    ("llm_d_epp_kv_cache_events_dedup_removed_hashes_suppressed_total",
     "kvcache_kvevents_dedup_removed_hashes_suppressed_total", "dedup_suppressed",
     "Block hashes whose removal an earlier announcement in the same place still outweighed"),
    ("llm_d_epp_kv_cache_events_dedup_removed_hashes_forwarded_total",
     "kvcache_kvevents_dedup_removed_hashes_forwarded_total", "dedup_forwarded",
     "Block hashes in BlockRemoved events that reached the index"),
)


def _upstream_families(stats: Mapping[str, int], router: Router) -> Iterator[Metric]:
    """Upstream's counters with their deprecated twins, the events its hybrid-allocator rules
    leave out, and its lookup-latency histogram (with its twin)."""
    for name, old, key, help_ in _COUNTER_FAMILIES:
        yield CounterMetricFamily(name, help_, value=stats.get(key, 0))
        yield CounterMetricFamily(old, f"Deprecated: use {name}. {help_}", value=stats.get(key, 0))
    stores = CounterMetricFamily("llm_d_epp_kv_cache_events_stores_skipped_total",
                                 "BlockStored events left out of the prefix index", labels=["cache_kind", "reason"])
    removals = CounterMetricFamily("llm_d_epp_kv_cache_events_removals_skipped_total",
                                   "BlockRemoved events of groups left out of the prefix index",
                                   labels=["cache_kind", "reason"])
    for removal, kind, reason, n in router.kv_event_skips():
        (removals if removal else stores).add_metric([kind, reason], n)
    yield stores
    yield removals
    latency = router.kv_lookup_latency()
    if latency is not None:
        name, help_ = "llm_d_epp_kv_cache_index_lookup_latency_seconds", "Latency of Lookup calls in seconds"
        for family, doc in ((name, help_), ("kvcache_index_lookup_latency_seconds", f"Deprecated: use {name}. {help_}")):
            yield HistogramMetricFamily(family, doc, buckets=histogram_buckets(latency), sum_value=latency[2])


class KvEventsCollector(Collector):
    """Upstream's llm_d_epp_kv_cache_* families where they exist, sluicegate_kv_* otherwise;
    read from the subscriber's and the index's counters at scrape time."""

    def __init__(self, subscriber: KvEventSubscriber, router: Router) -> None:
        self._sub = subscriber
        self._router = router

    def collect(self) -> Iterator[Metric]:
        s = self._sub
        for name, help_, counts in (
            ("llm_d_epp_kv_cache_events_messages_received_total", "Messages received from ZMQ subscribers", s.received),
            ("sluicegate_kv_events_decoded_total", "KV-event batches decoded and applied to the index", s.decoded),
            ("sluicegate_kv_events_failed_total", "KV-event batches that did not decode", s.failed),
            ("sluicegate_kv_events_unknown_endpoint_total", "KV-event batches naming no known endpoint", s.unknown),
            ("sluicegate_kv_events_replayed_total", "KV-event batches received from engines' replay sockets",
             s.replayed),
        ):
            family = CounterMetricFamily(name, help_, labels=["pod_identifier"])
            for address, n in sorted(counts.items()):
                family.add_metric([address], n)
            yield family
        for name, help_, label, pairs in (
            ("llm_d_epp_kv_cache_events_zmq_errors_total", "Total number of ZMQ subscriber errors", "operation",
             s.zmq_errors),
            ("sluicegate_kv_events_replays_total", "Replays asked of engines' replay sockets, by outcome", "outcome",
             s.replays),
        ):
            family = CounterMetricFamily(name, help_, labels=["pod_identifier", label])
            for (address, value), n in sorted(pairs.items()):
                family.add_metric([address, value], n)
            yield family
        stats = self._router.kv_event_stats() or {}
        yield from _upstream_families(stats, self._router)
        yield GaugeMetricFamily("llm_d_epp_kv_cache_events_active_subscribers",
                                "Number of ZMQ subscribers currently managed",
                                value=s.subscriptions)
        yield GaugeMetricFamily("llm_d_epp_kv_cache_events_pool_queue_depth",
                                "KV-event batches waiting to be applied (held while a replay runs)",
                                value=s.held)
        for name, key, help_ in (
            ("sluicegate_kv_cache_index_lookup_blocks_total", "lookup_blocks", "Blocks asked for by lookups"),
            ("sluicegate_kv_events_total", "events", "KV events applied"),
            ("sluicegate_kv_events_seq_gaps_total", "seq_gaps", "Batches whose sequence number skipped ahead"),
            ("sluicegate_kv_events_block_size_mismatches_total", "block_size_mismatches",
             "BlockStored events of another block size than configured"),
            ("sluicegate_kv_events_unknown_parents_total", "unknown_parents",
             "BlockStored events continuing a block the index never saw"),
            ("sluicegate_kv_events_engine_hash_checks_total", "engine_hash_checks",
             "Engine block hashes recomputed with tokenProcessorConfig.hashSeed"),
            ("sluicegate_kv_events_engine_hash_mismatches_total", "engine_hash_mismatches",
             "Engine block hashes that differ from vLLM's sha256_cbor with hashSeed"),
            ("sluicegate_token_producer_failures_total", "tokenize_failures", "Requests the token-producer could not tokenize"),
        ):
            yield CounterMetricFamily(name, help_, value=stats.get(key, 0))
        yield GaugeMetricFamily("sluicegate_kv_cache_index_size", "Block keys confirmed by KV events",
                                value=stats.get("size", 0))
        blocks = stats.get("lookup_blocks", 0)
        yield GaugeMetricFamily("sluicegate_kv_cache_index_hit_ratio",
                                "Blocks the best endpoint held over blocks looked up, since start",
                                value=stats.get("lookup_hits", 0) / blocks if blocks else 0.0)
        yield CounterMetricFamily("sluicegate_kv_events_warnings_total", "Diagnostic warnings logged",
                                  value=s.warnings)
        if s.shared is not None:
            yield GaugeMetricFamily("sluicegate_kv_index_redis_up", "Whether the shared index's Redis answers",
                                    value=1.0 if s.shared.up else 0.0)
            family = CounterMetricFamily("sluicegate_kv_index_redis_batches_total",
                                         "KV-event batches shared through Redis", labels=["direction"])
            family.add_metric(["appended"], s.shared.appended)
            family.add_metric(["applied"], s.shared.applied)
            family.add_metric(["dropped"], s.shared.dropped)
            yield family
