"""Request-body parsing (sluicegate.scheduling's façade reads it)."""

from typing import final

@final
class ParsedRequest:
    kind: str  # "chat_completions" | "completions" | "embeddings" | "responses" | "anthropic_messages" | "passthrough"
    model: str | None
    stream: bool
    max_tokens: int | None
    cache_salt: str | None
    prompt_len: int  # bytes of flat prompt text

def parse_request(path: str, body: bytes) -> ParsedRequest:
    """Parse an inference request body; raises sluicegate.errors.BadRequestError naming the field."""

def rewrite_model(body: bytes, model: str) -> bytes:
    """Return the body with its top-level "model" replaced; every other byte kept as it was."""

def replace_model_in_chunk(chunk: bytes, old: str, new: str) -> bytes:
    """Replace `"model":"old"` (any JSON spacing) with `"model":"new"` in a response chunk."""

def prefix_block_hashes(model: str, cache_salt: str | None, prompt: bytes, block_bytes: int) -> list[int]:
    """Chained hashes of the prompt's full blocks, seeded by model and salt."""

def find_usage(tail: bytes) -> tuple[int, int, int] | None:
    """(prompt_tokens, completion_tokens, cached_tokens) of the last complete OpenAI `usage`
    object in the tail of a response body or SSE stream; None when there is none."""

__all__ = [
    "ParsedRequest",
    "parse_request",
    "rewrite_model",
    "replace_model_in_chunk",
    "prefix_block_hashes",
    "find_usage",
]
