"""The simulated paged KV cache with automatic prefix caching, shaped like vLLM's block pool:
full prompt blocks are named by chained hashes, shared by reference count, and kept after
release as evictable cache entries (LRU) until their space is needed. Like vLLM with KV events
enabled, it records `BlockStored` / `BlockRemoved` events for the engine to publish.

Block hashes follow sluicegate's scheme (the EPP computes the same ones): the prompt's bytes
in blocks of `block_size` × 4, chain-hashed with xxh3, seeded by the model name and cache salt.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from sluicegate.scheduling import prefix_block_hashes

CHARS_PER_TOKEN = 4


def count_tokens(text: str) -> int:
    """Prompt length in tokens under the simulator's ~4 characters per token rule."""
    return max(1, -(-len(text) // CHARS_PER_TOKEN))


def block_hashes(text: str, block_size: int, model: str = "", cache_salt: str | None = None) -> list[int]:
    """Chained hashes of the prompt's full blocks; the model (a LoRA adapter's name for its
    requests) and the salt keep caches apart, as vLLM does with its extra hash keys."""
    return prefix_block_hashes(model, cache_salt, text.encode(), block_size * CHARS_PER_TOKEN)


class BlockAllocation:
    """The blocks one request holds: shared hashed prompt blocks plus private blocks."""

    __slots__ = ("hashed", "private")

    def __init__(self) -> None:
        self.hashed: list[int] = []
        self.private = 0

    @property
    def blocks(self) -> int:
        return len(self.hashed) + self.private


class KVCache:
    def __init__(self, num_blocks: int, block_size: int, record_events: bool = False) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        # vLLM's event shapes (msgspec array_like, tag first), taken by `drain_events`.
        self._events: list[list[Any]] | None = [] if record_events else None
        self._refs: dict[int, int] = {}  # hashed blocks in use, by reference count
        self._evictable: OrderedDict[int, None] = OrderedDict()  # released, LRU first
        self._private = 0

    def _free(self) -> int:
        return self.num_blocks - len(self._refs) - len(self._evictable) - self._private

    def usage(self) -> float:
        """Fraction of blocks held by requests; evictable cached blocks count as free (vLLM)."""
        return (len(self._refs) + self._private) / self.num_blocks

    def cached_prefix(self, hashes: list[int]) -> int:
        """Number of leading blocks of `hashes` already in the cache."""
        n = 0
        for h in hashes:
            if h not in self._refs and h not in self._evictable:
                break
            n += 1
        return n

    def allocate(self, hashes: list[int], num_tokens: int) -> BlockAllocation | None:
        """Take blocks for a prompt of `num_tokens` whose full blocks hash to `hashes`, reusing
        the cached prefix; None (and no change) when the cache cannot make room."""
        hit = self.cached_prefix(hashes)
        needed_blocks = -(-num_tokens // self.block_size)
        new_blocks = needed_blocks - hit
        reusable_evictable = sum(1 for h in hashes[:hit] if h in self._evictable)
        if new_blocks > self._free() + len(self._evictable) - reusable_evictable:
            return None
        alloc = BlockAllocation()
        for h in hashes[:hit]:
            self._ref(h)
            alloc.hashed.append(h)
        for h in hashes[hit:needed_blocks]:
            self._make_room(1)
            self._ref(h)
            alloc.hashed.append(h)
        stored = hashes[hit:needed_blocks]
        if stored and self._events is not None:
            parent = hashes[hit - 1] if hit else None
            # token_ids left empty: the EPP hashes the prompt itself under the same scheme.
            self._events.append(["BlockStored", list(stored), parent, [], self.block_size, None, None])
        private = needed_blocks - len(alloc.hashed)
        self._make_room(private)
        self._private += private
        alloc.private = private
        return alloc

    def grow(self, alloc: BlockAllocation, num_tokens: int) -> bool:
        """Extend `alloc` to cover `num_tokens` (decode appends); False when no block is free."""
        missing = -(-num_tokens // self.block_size) - alloc.blocks
        if missing <= 0:
            return True
        if missing > self._free() + len(self._evictable):
            return False
        self._make_room(missing)
        self._private += missing
        alloc.private += missing
        return True

    def release(self, alloc: BlockAllocation) -> None:
        # Reverse order so a prompt's tail blocks are evicted before its shared head.
        for h in reversed(alloc.hashed):
            refs = self._refs[h] - 1
            if refs:
                self._refs[h] = refs
            else:
                del self._refs[h]
                self._evictable[h] = None
        self._private -= alloc.private
        alloc.hashed.clear()
        alloc.private = 0

    def _ref(self, h: int) -> None:
        if h in self._evictable:
            del self._evictable[h]
        self._refs[h] = self._refs.get(h, 0) + 1

    def drain_events(self) -> list[list[Any]]:
        """Events since the last call (empty unless recording)."""
        if not self._events:
            return []
        events, self._events = self._events, []
        return events

    def _make_room(self, blocks: int) -> None:
        evicted = []
        while self._free() < blocks:
            evicted.append(self._evictable.popitem(last=False)[0])
        if evicted and self._events is not None:
            self._events.append(["BlockRemoved", evicted, None])
