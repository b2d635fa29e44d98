"""Token-level block hashing and in-process tokenization (the precise prefix index's keys)."""

from typing import final

from typing_extensions import Self

def vllm_block_hashes(tokens: list[int], block_size: int, hash_seed: str, lora: str | None = None,
                      cache_salt: str | None = None) -> list[int]:
    """vLLM's sha256_cbor block hashes of `tokens`, in the integer form KV events carry."""
def request_block_keys(tokens: list[int], block_size: int, hash_seed: str, model: str,
                       cache_salt: str | None = None) -> list[int]:
    """llm-d's cbor-fnv block keys of a prompt's tokens, as the precise index keys them."""

@final
class LocalTokenizer:
    """A token-producer's in-process tokenizer (a tokenizer.json or model directory)."""
    def __new__(cls, path: str) -> Self: ...
    def tokens(self, path: str, body: bytes) -> list[int]:
        """The token ids of a request body sent to `path`, as the EPP computes them."""

__all__ = [
    "LocalTokenizer",
    "request_block_keys",
    "vllm_block_hashes",
]
