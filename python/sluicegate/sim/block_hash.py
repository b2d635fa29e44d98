"""vLLM's block hashes (`--prefix-caching-hash-algo sha256_cbor`), written for the simulator
independently of the EPP's Rust code so tests can compare the two: block i hashes to
sha256(canonical CBOR of (parent, token ids, extra keys)); block 0's parent is NONE_HASH =
sha256(cbor(PYTHONHASHSEED)); extra keys are the LoRA name on every block and the cache salt on
block 0. Events carry each hash as the integer of its last 8 bytes (big-endian)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

_NULL = b"\xf6"


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    for extra, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes([major << 5 | extra]) + n.to_bytes(size, "big")
    raise ValueError(f"integer {n} does not fit CBOR's 64-bit argument")


def cbor(value: object) -> bytes:
    """Canonical CBOR of the types block hashing uses: None, non-negative int, bytes, str and
    sequences of them (tuples and lists are both arrays, as in cbor2)."""
    if value is None:
        return _NULL
    if isinstance(value, bool):
        raise TypeError("bool is not a block-hash input")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("negative integers are not block-hash inputs")
        return _head(0, value)
    if isinstance(value, bytes):
        return _head(2, len(value)) + value
    if isinstance(value, str):
        raw = value.encode()
        return _head(3, len(raw)) + raw
    if isinstance(value, (list, tuple)):
        return _head(4, len(value)) + b"".join(cbor(v) for v in value)
    raise TypeError(f"cannot CBOR-encode {type(value).__name__}")


def none_hash(seed: str) -> bytes:
    return hashlib.sha256(cbor(seed)).digest()


def external(block_hash: bytes) -> int:
    """The integer form KV events carry (VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES)."""
    return int.from_bytes(block_hash[-8:], "big")


def extra_keys(block_index: int, lora: str | None, salt: str | None) -> tuple[str, ...] | None:
    keys = ([lora] if lora else []) + ([salt] if salt and block_index == 0 else [])
    return tuple(keys) or None


def block_hashes(tokens: Sequence[int], block_size: int, seed: str, lora: str | None = None,
                 salt: str | None = None) -> list[bytes]:
    """Chained hashes of the full blocks of `tokens`."""
    parent = none_hash(seed)
    out = []
    for i in range(len(tokens) // block_size):
        block = tuple(tokens[i * block_size:(i + 1) * block_size])
        parent = hashlib.sha256(cbor((parent, block, extra_keys(i, lora, salt)))).digest()
        out.append(parent)
    return out
