"""The simulated paged KV cache with automatic prefix caching, shaped like vLLM's block pool:
full prompt blocks are named by chained hashes, shared by reference count, and kept after
release as evictable cache entries (LRU) until their space is needed."""

from __future__ import annotations

import hashlib
from collections import OrderedDict

CHARS_PER_TOKEN = 4


def count_tokens(text: str) -> int:
    """Prompt length in tokens under the simulator's ~4 characters per token rule."""
    return max(1, -(-len(text) // CHARS_PER_TOKEN))


def block_hashes(text: str, block_size: int, salt: str = "") -> list[bytes]:
    """Chained hashes of the prompt's full blocks; `salt` (the LoRA adapter) keeps the caches of
    different adapters apart, as vLLM does with its extra hash keys."""
    step = block_size * CHARS_PER_TOKEN
    prev = hashlib.blake2b(salt.encode(), digest_size=8).digest()
    hashes = []
    for start in range(0, len(text) - step + 1, step):
        prev = hashlib.blake2b(prev + text[start:start + step].encode(), digest_size=8).digest()
        hashes.append(prev)
    return hashes


class BlockAllocation:
    """The blocks one request holds: shared hashed prompt blocks plus private blocks."""

    __slots__ = ("hashed", "private")

    def __init__(self) -> None:
        self.hashed: list[bytes] = []
        self.private = 0

    @property
    def blocks(self) -> int:
        return len(self.hashed) + self.private


class KVCache:
    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._refs: dict[bytes, int] = {}  # hashed blocks in use, by reference count
        self._evictable: OrderedDict[bytes, None] = OrderedDict()  # released, LRU first
        self._private = 0

    def _free(self) -> int:
        return self.num_blocks - len(self._refs) - len(self._evictable) - self._private

    def usage(self) -> float:
        """Fraction of blocks held by requests; evictable cached blocks count as free (vLLM)."""
        return (len(self._refs) + self._private) / self.num_blocks

    def cached_prefix(self, hashes: list[bytes]) -> int:
        """Number of leading blocks of `hashes` already in the cache."""
        n = 0
        for h in hashes:
            if h not in self._refs and h not in self._evictable:
                break
            n += 1
        return n

    def allocate(self, hashes: list[bytes], num_tokens: int) -> BlockAllocation | None:
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

    def _ref(self, h: bytes) -> None:
        if h in self._evictable:
            del self._evictable[h]
        self._refs[h] = self._refs.get(h, 0) + 1

    def _make_room(self, blocks: int) -> None:
        while self._free() < blocks:
            self._evictable.popitem(last=False)
