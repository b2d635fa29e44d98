"""Workloads: endless, seed-determined streams of OpenAI request bodies whose shape exercises
one routing concern each — shared prefixes (prefix-cache affinity), varied lengths (load
balance), many LoRA adapters (adapter affinity) — and `mixed`, a blend of the three."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sluicegate.sim.config import DEFAULT_LORAS, DEFAULT_MODEL

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
_WORDS = ("alpha", "river", "stone", "cloud", "amber", "vector", "garden", "signal", "harbor",
          "meadow", "circuit", "lantern", "quartz", "summit", "willow", "ember", "orbit", "delta")


@dataclass(frozen=True)
class WorkloadRequest:
    path: str
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


Workload = Callable[[int, str], Iterator[WorkloadRequest]]


def _text(rng: random.Random, tokens: int) -> str:
    """About `tokens` tokens of words (~4 characters per token, as the simulator counts)."""
    words, length = [], 0
    while length < tokens * 4:
        word = rng.choice(_WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)


def _chat(model: str, messages: list[dict[str, str]], max_tokens: int) -> WorkloadRequest:
    return WorkloadRequest(CHAT_PATH, {
        "model": model, "messages": messages, "max_tokens": max_tokens, "stream": True,
        "stream_options": {"include_usage": True}})


def shared_prefix(seed: int, model: str = DEFAULT_MODEL, system_prompts: int = 4,
                  conversations: int = 32, max_turns: int = 6) -> Iterator[WorkloadRequest]:
    """A few long system prompts, each opening many multi-turn conversations; every request
    is one conversation's next user turn with the whole history before it."""
    rng = random.Random(f"shared_prefix|{seed}")
    systems = [f"[system prompt {i}] " + _text(rng, rng.randint(800, 1600)) for i in range(system_prompts)]
    histories: list[list[dict[str, str]]] = [[] for _ in range(conversations)]
    while True:
        c = rng.randrange(conversations)
        history = histories[c]
        if len(history) >= 2 * max_turns:
            history.clear()  # the conversation ends; a new one starts on the same system prompt
        history.append({"role": "user", "content": _text(rng, rng.randint(10, 60))})
        max_tokens = rng.randint(32, 128)
        yield _chat(model, [{"role": "system", "content": systems[c % system_prompts]}, *history],
                    max_tokens)
        # Open loop: the reply is not awaited, so the history gets a stand-in of the same length.
        history.append({"role": "assistant", "content": _text(rng, max_tokens)})


def varied(seed: int, model: str = DEFAULT_MODEL) -> Iterator[WorkloadRequest]:
    """Independent prompts with log-uniform prompt (16..2048) and output (16..256) lengths,
    alternating chat and text completions."""
    rng = random.Random(f"varied|{seed}")
    n = 0
    while True:
        prompt = f"[request {seed}-{n}] " + _text(rng, int(16 * 128 ** rng.random()))
        max_tokens = int(16 * 16 ** rng.random())
        if n % 2:
            yield WorkloadRequest(COMPLETIONS_PATH, {
                "model": model, "prompt": prompt, "max_tokens": max_tokens, "stream": True,
                "stream_options": {"include_usage": True}})
        else:
            yield _chat(model, [{"role": "user", "content": prompt}], max_tokens)
        n += 1


def lora(seed: int, model: str = DEFAULT_MODEL,
         adapters: tuple[str, ...] = DEFAULT_LORAS) -> Iterator[WorkloadRequest]:
    """Requests spread over many LoRA adapters with Zipf-like popularity (adapter i has weight
    1/(i+1)), so some adapters are hot and others come and go. `model` is unused: the adapter
    name is the model."""
    rng = random.Random(f"lora|{seed}")
    weights = [1.0 / (i + 1) for i in range(len(adapters))]
    n = 0
    while True:
        adapter = rng.choices(adapters, weights)[0]
        prompt = f"[{adapter} task {seed}-{n}] " + _text(rng, rng.randint(100, 400))
        yield _chat(adapter, [{"role": "user", "content": prompt}], rng.randint(32, 128))
        n += 1


def mixed(seed: int, model: str = DEFAULT_MODEL) -> Iterator[WorkloadRequest]:
    """Half shared-prefix conversations, 30% varied prompts, 20% LoRA requests."""
    rng = random.Random(f"mixed|{seed}")
    sources = [shared_prefix(seed, model), varied(seed, model), lora(seed, model)]
    while True:
        yield next(rng.choices(sources, (0.5, 0.3, 0.2))[0])


def sharegpt_like(seed: int, model: str = DEFAULT_MODEL, *, stream_ratio: float = 0.5,
                  shared_prefix_ratio: float = 0.3, output_tokens: int | None = None,
                  objectives: tuple[str, ...] = (), fairness_ids: tuple[str, ...] = ()) -> Iterator[WorkloadRequest]:
    """Chat requests with ShareGPT-like lengths (log-normal prompts, median ~180 tokens, and
    outputs, median ~120, both clipped), a `shared_prefix_ratio` share opening with one of a few
    long system prompts, streamed with probability `stream_ratio`, spread uniformly over the
    given objectives and fairness ids (sent as the upstream headers)."""
    for name, ratio in (("stream_ratio", stream_ratio), ("shared_prefix_ratio", shared_prefix_ratio)):
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"{name}: {ratio!r} is not within [0, 1]")
    rng = random.Random(f"sharegpt|{seed}")
    systems = [f"[shared system prompt {i}] " + _text(rng, 600) for i in range(4)]
    n = 0
    while True:
        prompt_tokens = min(4096, max(4, int(rng.lognormvariate(5.2, 1.0))))
        out = output_tokens or min(1024, max(1, int(rng.lognormvariate(4.8, 0.9))))
        messages = [{"role": "user", "content": f"[request {seed}-{n}] " + _text(rng, prompt_tokens)}]
        if rng.random() < shared_prefix_ratio:
            messages.insert(0, {"role": "system", "content": rng.choice(systems)})
        body: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": out}
        if rng.random() < stream_ratio:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        headers = {}
        if objectives:
            headers["x-llm-d-inference-objective"] = rng.choice(objectives)
        if fairness_ids:
            headers["x-llm-d-inference-fairness-id"] = rng.choice(fairness_ids)
        yield WorkloadRequest(CHAT_PATH, body, headers)
        n += 1


WORKLOADS: dict[str, Workload] = {
    "shared_prefix": shared_prefix, "varied": varied, "lora": lora, "mixed": mixed, "sharegpt": sharegpt_like}
