"""The OpenAI-compatible surface as vLLM serves it: request bodies parsed into a `Generation`
(errors as vLLM's JSON error bodies), and the response, SSE chunk and usage shapes."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from sluicegate.sim.config import SimConfig

CHAT, COMPLETION = "chat", "completion"
# Four-character tokens, so generated text obeys the same ~4 chars/token rule as prompts.
_FILLER = (" the", " sky", " and", " red", " cat", " sat", " map", " one", " two", " low",
           " hot", " new", " old", " sun", " sea", " far", " day", " art", " key", " way")


class ApiError(Exception):
    """An error answered with vLLM's JSON error body."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param

    def body(self) -> dict[str, Any]:
        kind = {400: "BadRequestError", 404: "NotFoundError"}.get(self.status, "InternalServerError")
        return {"error": {"message": self.message, "type": kind, "param": self.param,
                          "code": self.status}}


@dataclass(frozen=True)
class Generation:
    kind: str
    model: str
    prompt: str
    max_tokens: int
    finish_reason: str  # "length" when the client capped the output, else "stop"
    stream: bool
    include_usage: bool
    seed: int | None


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: deep nesting
        raise ApiError(400, f"Invalid JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object")
    return body


def parse_generation(kind: str, body: dict[str, Any], config: SimConfig) -> Generation:
    model = body.get("model", config.model)
    if not isinstance(model, str) or model not in config.served_models:
        raise ApiError(404, f"The model `{model}` does not exist.", "model")
    prompt = _chat_prompt(body) if kind == CHAT else _completion_prompt(body)
    max_tokens, explicit = _max_tokens(body, config)
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise ApiError(400, "stream_options must be an object", "stream_options")
    seed = body.get("seed")
    if seed is not None and not isinstance(seed, int):
        raise ApiError(400, f"seed must be an integer, got {seed!r}", "seed")
    if body.get("n", 1) != 1:
        raise ApiError(400, "the simulator serves n=1 only", "n")
    return Generation(kind=kind, model=model, prompt=prompt, max_tokens=max_tokens,
                      finish_reason="length" if explicit else "stop",
                      stream=bool(body.get("stream", False)),
                      include_usage=bool(options.get("include_usage", False)), seed=seed)


def _chat_prompt(body: dict[str, Any]) -> str:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list", "messages")
    parts = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ApiError(400, f"messages[{i}] must be an object with a string role", "messages")
        parts.append(f"<|{message['role']}|>{_content_text(message.get('content'), i)}\n")
    # A fixed template keeps multi-turn conversations prefix-stable, as real chat templates are.
    return "".join(parts) + "<|assistant|>"


def _content_text(content: Any, index: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    raise ApiError(400, f"messages[{index}].content must be a string or a list of parts", "messages")


def _completion_prompt(body: dict[str, Any]) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, str) and prompt:
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return "".join(f"{t % 65536:04x}" for t in prompt)  # one 4-char "token" per id
    raise ApiError(400, "prompt must be a non-empty string or list of token ids "
                   "(one prompt per request)", "prompt")


def _max_tokens(body: dict[str, Any], config: SimConfig) -> tuple[int, bool]:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ApiError(400, f"{name} must be an integer >= 1, got {value!r}", name)
        return min(value, config.max_output_tokens), True
    return config.default_output_tokens, False


class FillerText:
    """Deterministic output tokens: a function of the server seed, request seed and prompt."""

    def __init__(self, server_seed: int, gen: Generation) -> None:
        self._rng = random.Random(f"{server_seed}|{gen.seed}|{gen.model}|{gen.prompt}")

    def take(self, n: int) -> list[str]:
        return [_FILLER[self._rng.randrange(len(_FILLER))] for _ in range(n)]


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens}}


def full_response(gen: Generation, request_id: str, created: int, text: str,
                  finish_reason: str, usage_body: dict[str, Any]) -> dict[str, Any]:
    if gen.kind == CHAT:
        choice = {"index": 0, "message": {"role": "assistant", "content": text},
                  "logprobs": None, "finish_reason": finish_reason}
        kind = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        kind = "text_completion"
    return {"id": request_id, "object": kind, "created": created, "model": gen.model,
            "choices": [choice], "usage": usage_body}


class StreamFormat:
    """SSE events of one stream; token chunks are spliced into a pre-rendered template, since
    they are the hot path of a server holding hundreds of streams."""

    def __init__(self, gen: Generation, request_id: str, created: int) -> None:
        self.gen = gen
        kind = "chat.completion.chunk" if gen.kind == CHAT else "text_completion"
        self._envelope = {"id": request_id, "object": kind, "created": created, "model": gen.model}
        head = json.dumps(self._envelope)[:-1]
        if gen.kind == CHAT:
            self._head = f'data: {head}, "choices": [{{"index": 0, "delta": {{"content": '
            self._tail = '}, "logprobs": null, "finish_reason": null}]}\n\n'
        else:
            self._head = f'data: {head}, "choices": [{{"index": 0, "text": '
            self._tail = ', "logprobs": null, "finish_reason": null}]}\n\n'

    def opening(self) -> bytes:
        if self.gen.kind != CHAT:
            return b""
        return self._event([{"index": 0, "delta": {"role": "assistant", "content": ""},
                             "logprobs": None, "finish_reason": None}])

    def tokens(self, texts: list[str]) -> bytes:
        return "".join(self._head + json.dumps(t) + self._tail for t in texts).encode()

    def closing(self, finish_reason: str, usage_body: dict[str, Any] | None) -> bytes:
        delta_key = "delta" if self.gen.kind == CHAT else "text"
        out = self._event([{"index": 0, delta_key: {} if self.gen.kind == CHAT else "",
                            "logprobs": None, "finish_reason": finish_reason}])
        if usage_body is not None:
            out += self._event([], usage_body)
        return out + b"data: [DONE]\n\n"

    def error(self, api_error: ApiError) -> bytes:
        return b"data: " + json.dumps(api_error.body()).encode() + b"\n\ndata: [DONE]\n\n"

    def _event(self, choices: list[dict[str, Any]], usage_body: dict[str, Any] | None = None) -> bytes:
        event: dict[str, Any] = {**self._envelope, "choices": choices}
        if usage_body is not None:
            event["usage"] = usage_body
        return b"data: " + json.dumps(event).encode() + b"\n\n"
