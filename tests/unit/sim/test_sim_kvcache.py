"""The simulator's paged KV cache and LoRA slots, exercised directly."""

from __future__ import annotations

from sluicegate.sim.kvcache import KVCache, block_hashes, count_tokens
from sluicegate.sim.lora import LoraSlots

BLOCK = 4  # tokens per block, 16 characters


def test_prompts_sharing_a_prefix_share_leading_block_hashes() -> None:
    a = block_hashes("x" * 64 + "tail-one" * 4, BLOCK)
    b = block_hashes("x" * 64 + "tail-two" * 4, BLOCK)
    assert a[:4] == b[:4] and a[4] != b[4]


def test_adapter_salt_separates_caches() -> None:
    assert block_hashes("x" * 64, BLOCK, "lora-a") != block_hashes("x" * 64, BLOCK, "lora-b")


def test_token_count_is_four_characters_per_token_rounded_up() -> None:
    assert (count_tokens("abcd"), count_tokens("abcde"), count_tokens("")) == (1, 2, 1)


def test_a_released_prompt_is_found_in_the_cache() -> None:
    cache = KVCache(num_blocks=10, block_size=BLOCK)
    hashes = block_hashes("y" * 64, BLOCK)
    alloc = cache.allocate(hashes, 16)
    cache.release(alloc)
    assert cache.cached_prefix(hashes) == 4
    assert cache.usage() == 0.0  # cached-but-idle blocks count as free, as in vLLM


def test_shared_blocks_are_counted_once() -> None:
    cache = KVCache(num_blocks=10, block_size=BLOCK)
    hashes = block_hashes("z" * 64, BLOCK)
    cache.allocate(hashes, 16)
    cache.allocate(hashes, 16)
    assert cache.usage() == 0.4


def test_least_recently_released_blocks_are_evicted_first() -> None:
    cache = KVCache(num_blocks=4, block_size=BLOCK)
    old, new = block_hashes("o" * 32, BLOCK), block_hashes("n" * 32, BLOCK)
    cache.release(cache.allocate(old, 8))
    cache.release(cache.allocate(new, 8))
    cache.allocate(block_hashes("f" * 32, BLOCK), 8)
    assert cache.cached_prefix(old) == 0 and cache.cached_prefix(new) == 2


def test_allocation_fails_without_change_when_blocks_are_held() -> None:
    cache = KVCache(num_blocks=3, block_size=BLOCK)
    cache.allocate([], 8)
    assert cache.allocate([], 8) is None
    assert round(cache.usage(), 3) == 0.667


def test_growth_beyond_free_blocks_is_refused() -> None:
    cache = KVCache(num_blocks=2, block_size=BLOCK)
    alloc = cache.allocate([], 4)
    assert cache.grow(alloc, 8) and not cache.grow(alloc, 9)


def test_lora_slots_load_then_reuse_then_refuse_when_all_pinned() -> None:
    slots = LoraSlots(max_loras=1)
    assert slots.acquire("a") is True
    assert slots.acquire("a") is False
    assert slots.acquire("b") is None
    assert slots.loads == 1


def test_lora_slots_swap_out_an_idle_adapter() -> None:
    slots = LoraSlots(max_loras=1)
    slots.acquire("a")
    slots.release("a")
    assert slots.acquire("b") is True
    assert slots.resident() == ["b"] and slots.loads == 2


def test_only_blocks_cached_anew_are_announced() -> None:
    """A block already cached further along a prompt (its own earlier blocks were evicted) is
    reused, not announced again: each announcement gets exactly one removal, as the EPP's
    reference-counting index expects (vLLM caches and evicts each block once)."""
    cache = KVCache(num_blocks=8, block_size=BLOCK, record_events=True)
    hashes = [11, 12, 13, 14]
    cache.release(cache.allocate(hashes, 16))
    cache.drain_events()
    cache._evictable.pop(12)  # noqa: SLF001 - block 1 alone gone, as an eviction of it leaves things
    cache.release(cache.allocate(hashes, 16))
    stored = [(e["block_hashes"], e["parent_block_hash"]) for e in cache.drain_events() if e["type"] == "BlockStored"]
    assert stored == [([12], 11)]


def test_a_hybrid_model_announces_both_groups_and_drops_the_window_first() -> None:
    """With a sliding window, every stored block is announced for group 0 (full attention) and
    group 1 (the window); a released request's blocks behind the window leave group 1 at once,
    and an eviction removes a block from each group still holding it."""
    cache = KVCache(num_blocks=6, block_size=BLOCK, record_events=True, sliding_window=2 * BLOCK)
    hashes = [21, 22, 23, 24]
    cache.release(cache.allocate(hashes, 16))
    events = cache.drain_events()
    assert [(e["type"], e.get("group_idx"), e.get("kv_cache_spec_kind")) for e in events] == [
        ("BlockStored", 0, "full_attention"), ("BlockStored", 1, "sliding_window"), ("BlockRemoved", 1, None)]
    assert events[1]["kv_cache_spec_sliding_window"] == 2 * BLOCK
    assert sorted(events[2]["block_hashes"]) == [21, 22]  # behind the window's last two blocks
    assert cache.cached_prefix(hashes) == 4  # caching is the full group's
    cache.allocate([31, 32, 33, 34], 16)  # needs 2 of the 4 cached blocks: 24, then 23, go first
    removed = [(e["block_hashes"], e["group_idx"]) for e in cache.drain_events() if e["type"] == "BlockRemoved"]
    assert removed == [([24], 0), ([24], 1), ([23], 0), ([23], 1)]
