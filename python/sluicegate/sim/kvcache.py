"""The simulated paged KV cache with automatic prefix caching, shaped like vLLM's block pool:
full prompt blocks are named by chained hashes, shared by reference count, and kept after
release as evictable cache entries (LRU) until their space is needed. Like vLLM with KV events
enabled, it records `BlockStored` / `BlockRemoved` events for the engine to publish.

Block hashes are vLLM's (sim/block_hash.py, over real token ids) when the server has a
tokenizer; without one, sluicegate's byte scheme (the prompt's bytes in blocks of
`block_size` × 4, chain-hashed with xxh3, seeded by the model name and cache salt), which the
EPP reproduces without a tokenizer. Events are recorded as field maps and encoded by the
publisher in either of vLLM's wire forms.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from sluicegate.scheduling import prefix_block_hashes
from sluicegate.sim.block_hash import extra_keys

CHARS_PER_TOKEN = 4


def count_tokens(text: str) -> int:
    """Prompt length in tokens under the simulator's ~4 characters per token rule."""
    return max(1, -(-len(text) // CHARS_PER_TOKEN))


def block_hashes(text: str, block_size: int, model: str = "", cache_salt: str | None = None) -> list[int]:
    """Chained hashes of the prompt's full blocks; the model (a LoRA adapter's name for its
    requests) and the salt keep caches apart, as vLLM does with its extra hash keys."""
    return prefix_block_hashes(model, cache_salt, text.encode(), block_size * CHARS_PER_TOKEN)


class BlockSource:
    """What a prompt's stored blocks are made of, for `BlockStored` events: its token ids (None
    under the byte scheme), the LoRA adapter and the cache salt (vLLM's extra keys)."""

    __slots__ = ("token_ids", "lora", "salt")

    def __init__(self, token_ids: list[int] | None = None, lora: str | None = None,
                 salt: str | None = None) -> None:
        self.token_ids = token_ids
        self.lora = lora
        self.salt = salt


_NO_SOURCE = BlockSource()


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
    def __init__(self, num_blocks: int, block_size: int, record_events: bool = False,
                 sliding_window: int = 0) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        # vLLM's events as field maps (see sim/kv_events.py for the wire forms), taken by
        # `drain_events`.
        self._events: list[dict[str, Any]] | None = [] if record_events else None
        self._refs: dict[int, int] = {}  # hashed blocks in use, by reference count
        self._evictable: OrderedDict[int, None] = OrderedDict()  # released, LRU first
        self._private = 0
        # A hybrid model (> 0): group 0 is full attention, group 1 a sliding window of this many
        # tokens, whose announced blocks are kept in `_window` until it removes them.
        self.sliding_window = sliding_window
        self._window: set[int] = set()

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

    def allocate(self, hashes: list[int], num_tokens: int,
                 source: BlockSource = _NO_SOURCE) -> BlockAllocation | None:
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
        run_start = None  # the run of newly cached blocks being collected
        end = min(needed_blocks, len(hashes))  # a partial last block has no hash
        for i in range(hit, end):
            h = hashes[i]
            cached = h in self._refs or h in self._evictable
            if not cached:
                self._make_room(1)
                run_start = i if run_start is None else run_start
            elif run_start is not None:  # a block already cached ends a run: vLLM announces only new ones
                self._store(hashes, run_start, i, source)
                run_start = None
            self._ref(h)
            alloc.hashed.append(h)
        if run_start is not None:
            self._store(hashes, run_start, end, source)
        private = needed_blocks - len(alloc.hashed)
        self._make_room(private)
        self._private += private
        alloc.private = private
        return alloc

    def _store(self, hashes: list[int], start: int, end: int, source: BlockSource) -> None:
        """Announce blocks start..end (newly cached) in every group."""
        if self._events is None:
            return
        event = self._stored_event(hashes, start, end, source)
        if not self.sliding_window:
            self._events.append(event)
            return
        self._events.append({**event, "group_idx": 0, "kv_cache_spec_kind": "full_attention"})
        self._events.append({**event, "group_idx": 1, "kv_cache_spec_kind": "sliding_window",
                             "kv_cache_spec_sliding_window": self.sliding_window})
        self._window.update(hashes[start:end])

    def _stored_event(self, hashes: list[int], start: int, end: int, source: BlockSource) -> dict[str, Any]:
        bs = self.block_size
        tokens = source.token_ids
        event: dict[str, Any] = {
            "type": "BlockStored", "block_hashes": list(hashes[start:end]),
            "parent_block_hash": hashes[start - 1] if start else None,
            # Under the byte scheme there are no token ids: the EPP hashes the prompt bytes.
            "token_ids": list(tokens[start * bs:end * bs]) if tokens is not None else [],
            "block_size": bs, "lora_id": None, "medium": "GPU", "lora_name": source.lora,
        }
        if source.lora or source.salt:
            event["extra_keys"] = [list(extra_keys(i, source.lora, source.salt) or ()) or None
                                   for i in range(start, end)]
        return event

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
        # The window group's blocks behind the window, now unused: removed first.
        in_window = -(-self.sliding_window // self.block_size)
        behind = set(alloc.hashed[:max(0, len(alloc.hashed) - in_window)]) if self.sliding_window else set()
        dropped = []
        # Reverse order so a prompt's tail blocks are evicted before its shared head.
        for h in reversed(alloc.hashed):
            refs = self._refs[h] - 1
            if refs:
                self._refs[h] = refs
            else:
                del self._refs[h]
                self._evictable[h] = None
                if h in behind and h in self._window:
                    self._window.discard(h)
                    dropped.append(h)
        if dropped and self._events is not None:
            self._events.append(_removed(dropped, group=1))
        self._private -= alloc.private
        alloc.hashed.clear()
        alloc.private = 0

    def _ref(self, h: int) -> None:
        if h in self._evictable:
            del self._evictable[h]
        self._refs[h] = self._refs.get(h, 0) + 1

    def clear(self) -> None:
        """Drop every cached (evictable) block, as vLLM's reset_prefix_cache does."""
        self._evictable.clear()
        self._window.clear()
        if self._events is not None:
            self._events.append({"type": "AllBlocksCleared"})

    def drain_events(self) -> list[dict[str, Any]]:
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
            self._events.append(_removed(evicted, group=0 if self.sliding_window else None))
            window = [h for h in evicted if h in self._window]  # none unless a hybrid model
            if window:
                self._window.difference_update(window)
                self._events.append(_removed(window, group=1))


def _removed(hashes: list[int], group: int | None = None) -> dict[str, Any]:
    """A `BlockRemoved` from the GPU; `group`: the KV-cache group of a hybrid model."""
    event: dict[str, Any] = {"type": "BlockRemoved", "block_hashes": hashes, "medium": "GPU"}
    if group is not None:
        event["group_idx"] = group
    return event
