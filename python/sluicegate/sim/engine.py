"""The simulated inference engine: one asyncio task per server runs engine steps like vLLM's
scheduler (decode the running batch, preempt on KV exhaustion, admit waiting requests under
batch, token-budget, LoRA-slot and KV limits), sleeps each step's modelled duration divided by
`speedup`, then hands every advanced request its new token. No per-request timers."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sluicegate.sim.config import SimConfig
from sluicegate.sim.kvcache import BlockAllocation, BlockSource, KVCache
from sluicegate.sim.lora import LoraSlots
from sluicegate.sim.metrics import SimMetrics

WAITING, RUNNING, DONE = 0, 1, 2


class SimRequest:
    """One generation as the engine sees it; the HTTP handler awaits its progress."""

    __slots__ = ("prompt_tokens", "hashes", "source", "max_tokens", "lora", "produced", "state",
                 "aborted", "finish_reason", "alloc", "cached_tokens", "admitted_once", "arrival_sim_ms",
                 "first_token_sim_ms", "done_sim_ms", "arrival_wall", "last_token_wall", "_waiter")

    def __init__(self, prompt_tokens: int, hashes: list[int], max_tokens: int,
                 lora: str | None, finish_reason: str = "length",
                 source: BlockSource | None = None) -> None:
        self.prompt_tokens = prompt_tokens
        self.hashes = hashes
        self.source = source or BlockSource(lora=lora)
        self.max_tokens = max_tokens
        self.lora = lora
        self.produced = 0
        self.state = WAITING
        self.aborted = False
        self.finish_reason = finish_reason  # reported when max_tokens is reached
        self.alloc: BlockAllocation | None = None
        self.cached_tokens = 0  # prefix-cache hit at first admission, as reported in usage
        self.admitted_once = False
        self.arrival_sim_ms = 0.0
        self.first_token_sim_ms = 0.0
        self.done_sim_ms = 0.0
        self.arrival_wall = 0.0
        self.last_token_wall = 0.0
        self._waiter: asyncio.Future[None] | None = None

    @property
    def sim_ttft_ms(self) -> float:
        """Time to first token on the engine's simulated clock (ms, before `speedup`)."""
        return self.first_token_sim_ms - self.arrival_sim_ms

    @property
    def sim_e2e_ms(self) -> float:
        """Arrival to last token on the simulated clock (ms)."""
        return self.done_sim_ms - self.arrival_sim_ms

    async def wait_beyond(self, seen: int) -> None:
        """Return once more than `seen` tokens exist or the request is over."""
        while self.produced <= seen and self.state != DONE:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter

    def _notify(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


@dataclass(frozen=True)
class SimStats:
    requests: int
    finished: int
    aborted: int
    running: int
    waiting: int
    prefix_query_tokens: int
    prefix_hit_tokens: int
    preemptions: int
    lora_loads: int
    sim_time_ms: float


class Engine:
    def __init__(self, config: SimConfig, metrics: SimMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.kv = KVCache(config.kv_blocks, config.block_size,
                          record_events=bool(config.kv_events_endpoint), sliding_window=config.kv_sliding_window)
        # Receives each step's KV events (the server's ZMQ publisher), when events are on.
        self.publish_kv_events: Callable[[list[dict[str, Any]]], None] | None = None
        self.loras = LoraSlots(config.max_loras)
        self.waiting: deque[SimRequest] = deque()
        self.running: list[SimRequest] = []
        self.requests = 0
        self.finished: dict[str, int] = {"length": 0, "stop": 0, "abort": 0}
        self.prefix_query_tokens = 0
        self.prefix_hit_tokens = 0
        self.preemptions = 0
        self.sim_ms = 0.0
        self._preempted_now: set[int] = set()  # ids preempted in the current step
        self._wake = asyncio.Event()
        self._closed = False

    def stats(self) -> SimStats:
        return SimStats(
            requests=self.requests, finished=self.finished["length"] + self.finished["stop"],
            aborted=self.finished["abort"], running=len(self.running), waiting=len(self.waiting),
            prefix_query_tokens=self.prefix_query_tokens, prefix_hit_tokens=self.prefix_hit_tokens,
            preemptions=self.preemptions, lora_loads=self.loras.loads, sim_time_ms=self.sim_ms)

    def submit(self, req: SimRequest) -> None:
        if self._closed:
            raise RuntimeError("the simulated engine is stopped")
        self.requests += 1
        req.arrival_sim_ms = self.sim_ms
        req.arrival_wall = time.monotonic()
        self.waiting.append(req)
        self._wake.set()

    def abort(self, req: SimRequest) -> None:
        """Drop a request whose client went away; a finished request is left alone."""
        if req.state == DONE:
            return
        if req.state == WAITING:
            self.waiting.remove(req)
        else:
            self._release(req)
            self.running.remove(req)
        req.state = DONE
        req.aborted = True
        self.finished["abort"] += 1
        req._notify()

    def close(self) -> None:
        """End every request so their handlers return; called when the server stops."""
        self._closed = True
        for req in [*self.waiting, *self.running]:
            self.abort(req)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        speedup = self.config.speedup
        while True:
            if not self.running and not self.waiting:
                self._wake.clear()
                await self._wake.wait()
                continue
            started = loop.time()
            step_ms, advanced = self._schedule()
            if not advanced:
                # Nothing could run (cannot happen with a valid config); sleep until an arrival.
                self._wake.clear()
                await self._wake.wait()
                continue
            await asyncio.sleep(max(0.0, started + step_ms / 1000.0 / speedup - loop.time()))
            self.sim_ms += step_ms
            self._emit(advanced)
            events = self.kv.drain_events()
            if events and self.publish_kv_events is not None:
                self.publish_kv_events(events)

    def _schedule(self) -> tuple[float, list[SimRequest]]:
        cfg = self.config
        self._preempted_now.clear()
        decoding = self._decode_batch()
        step_ms = cfg.alpha_ms + cfg.beta_ms * len(decoding) if decoding else 0.0
        prefill_ms, admitted = self._admit()
        return step_ms + prefill_ms, decoding + admitted

    def _decode_batch(self) -> list[SimRequest]:
        """Grow each running request's KV by one token, oldest first; when the cache is full,
        preempt the newest running request (vLLM's recompute preemption) until it fits."""
        batch = []
        for req in list(self.running):
            if req.state != RUNNING:
                continue  # preempted earlier in this loop
            while not self.kv.grow(req.alloc, req.prompt_tokens + req.produced):
                victim = self.running[-1]
                self._preempt(victim)
                if victim is req:
                    break
            else:
                batch.append(req)
        return batch

    def _admit(self) -> tuple[float, list[SimRequest]]:
        cfg = self.config
        ms = 0.0
        budget_used = 0
        admitted: list[SimRequest] = []
        lora_blocked: list[SimRequest] = []
        while self.waiting and len(self.running) < cfg.max_num_seqs:
            req = self.waiting[0]
            if id(req) in self._preempted_now:
                break  # its blocks were just taken back; retry next step, as vLLM does
            tokens = req.prompt_tokens + req.produced
            hit_blocks = self.kv.cached_prefix(req.hashes)
            cached = min(hit_blocks * cfg.block_size, tokens - 1)
            if admitted and budget_used + tokens - cached > cfg.max_num_batched_tokens:
                break
            loaded = self.loras.acquire(req.lora) if req.lora else False
            if loaded is None:
                # No adapter slot: this request waits, later ones may still run (as in vLLM).
                lora_blocked.append(self.waiting.popleft())
                continue
            alloc = self.kv.allocate(req.hashes, tokens, req.source)
            if alloc is None:
                if req.lora:
                    self.loras.release(req.lora)
                break
            self.waiting.popleft()
            req.alloc, req.state = alloc, RUNNING
            self.running.append(req)
            admitted.append(req)
            budget_used += tokens - cached
            # Prefills of one step share a forward pass: gamma once, delta per uncached token.
            ms += (0.0 if len(admitted) > 1 else cfg.gamma_ms) + cfg.delta_ms * (tokens - cached)
            ms += cfg.lora_load_ms if loaded else 0.0
            self.prefix_query_tokens += tokens
            self.prefix_hit_tokens += cached
            if not req.admitted_once:
                req.admitted_once, req.cached_tokens = True, cached
        self.waiting.extendleft(reversed(lora_blocked))
        return ms, admitted

    def _preempt(self, req: SimRequest) -> None:
        self._release(req)
        self.running.remove(req)
        req.state = WAITING
        self.waiting.appendleft(req)
        self._preempted_now.add(id(req))
        self.preemptions += 1

    def _release(self, req: SimRequest) -> None:
        self.kv.release(req.alloc)
        req.alloc = None
        if req.lora:
            self.loras.release(req.lora)

    def _emit(self, advanced: list[SimRequest]) -> None:
        now = time.monotonic()
        for req in advanced:
            if req.state != RUNNING:
                continue  # aborted while the step ran
            req.produced += 1
            if req.produced == 1:
                req.first_token_sim_ms = self.sim_ms
                self.metrics.ttft.observe(now - req.arrival_wall)
            else:
                self.metrics.itl.observe(now - req.last_token_wall)
            req.last_token_wall = now
            if req.produced >= req.max_tokens:
                req.done_sim_ms = self.sim_ms
                self._release(req)
                self.running.remove(req)
                req.state = DONE
                self.finished[req.finish_reason] += 1
            req._notify()
