"""The simulator's token side when it has a tokenizer: a request body's token ids as vLLM
computes them (chat template for chat, special tokens for completions, token-id prompts as
given), their vLLM block hashes, and vLLM's render and tokenize endpoints over the same ids —
so an EPP that tokenizes through them, or in-process from the same tokenizer.json, gets the
ids the engine caches."""

from __future__ import annotations

from typing import Any

from sluicegate.sim.block_hash import block_hashes, external
from sluicegate.sim.config import SimConfig
from sluicegate.sim.kvcache import BlockSource
from sluicegate.sim.openai_api import CHAT, ApiError
from sluicegate.sim.tokenizer import SimTokenizer


class PromptTokens:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.tokenizer = SimTokenizer(config.tokenizer)

    def token_ids(self, kind: str, body: dict[str, Any]) -> list[int]:
        """The prompt's ids; ApiError (400) for a body vLLM would refuse."""
        try:
            if kind == CHAT:
                messages = body.get("messages")
                if not isinstance(messages, list) or not messages:
                    raise ApiError(400, "messages must be a non-empty list", "messages")
                return self.tokenizer.encode_chat(messages, bool(body.get("add_generation_prompt", True)),
                                                  body.get("tools"))
            prompt = body.get("prompt")
            if isinstance(prompt, list) and len(prompt) == 1:
                prompt = prompt[0]
            if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
                return list(prompt)
            if isinstance(prompt, str) and prompt:
                return self.tokenizer.encode_prompt(prompt)
            raise ApiError(400, "prompt must be a non-empty string or list of token ids", "prompt")
        except ApiError:
            raise
        except Exception as exc:  # a template's raise_exception, a malformed message
            raise ApiError(400, f"cannot tokenize the request: {exc}") from None

    def source(self, ids: list[int], model: str, body: dict[str, Any]) -> tuple[list[int], BlockSource]:
        """vLLM's external block hashes for `ids` and what their events carry."""
        lora = model if model != self.config.model else None
        salt = body.get("cache_salt") if isinstance(body.get("cache_salt"), str) else None
        hashes = [external(h) for h in block_hashes(ids, self.config.block_size, self.config.hash_seed,
                                                    lora, salt)]
        return hashes, BlockSource(ids, lora, salt)

    def render(self, kind: str, body: dict[str, Any]) -> Any:
        """vLLM's /v1/completions/render (a list, one entry per prompt) and
        /v1/chat/completions/render (one object) answers."""
        ids = self.token_ids(kind, body)
        rendered = {"model": body.get("model", self.config.model), "token_ids": ids}
        return rendered if kind == CHAT else [rendered]

    def tokenize(self, body: dict[str, Any]) -> dict[str, Any]:
        """vLLM's /tokenize: a `prompt` or `messages` body, answered with the ids and count."""
        ids = self.token_ids(CHAT if "messages" in body else "completion", body)
        return {"count": len(ids), "max_model_len": self.config.max_model_len, "tokens": ids,
                "token_strs": None}
