"""Configuration of one simulated model server: identity, served models, engine capacity,
the time model (ms, divided by `speedup`) and fault knobs. Validated once at construction."""

from __future__ import annotations

from dataclasses import dataclass

from sluicegate.errors import ConfigError

DEFAULT_MODEL = "meta-llama/Llama-3.1-8B-Instruct"
# Adapter names served by default, so the load generator's `lora` and `mixed` workloads run
# against a default simulator without extra flags.
DEFAULT_LORAS: tuple[str, ...] = tuple(f"lora-{i}" for i in range(8))


@dataclass(frozen=True)
class SimConfig:
    name: str = ""  # value of x-sim-endpoint; empty means the bound "host:port"
    model: str = DEFAULT_MODEL
    loras: tuple[str, ...] = DEFAULT_LORAS
    max_loras: int = 4
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192  # prefill token budget of one engine step
    kv_blocks: int = 4096
    block_size: int = 16
    max_model_len: int = 8192
    alpha_ms: float = 8.0  # decode step: alpha + beta * batch_size
    beta_ms: float = 0.1
    gamma_ms: float = 5.0  # prefill of a step: gamma + delta * its uncached prompt tokens
    delta_ms: float = 0.05
    lora_load_ms: float = 40.0
    speedup: float = 1.0
    seed: int = 0
    default_output_tokens: int = 64
    max_output_tokens: int = 2048
    fail_rate: float = 0.0  # fraction of completions answered with HTTP 500
    hang_rate: float = 0.0  # fraction of completions never answered (see sim/faults.py)
    metrics_fault: str = ""  # /metrics: "" serves, "garbage" serves junk, "hang" never answers
    # ZMQ endpoint the KV-event publisher binds, as vLLM's --kv-events-config endpoint
    # (e.g. "tcp://127.0.0.1:*" for a free port); "" publishes nothing.
    # An endpoint without a wildcard is dialled (vLLM's rule), as llm-d's EPP binds one SUB
    # socket for every server; then the topic defaults to llm-d's "kv@<host:port>@<model>".
    kv_events_endpoint: str = ""
    kv_events_topic: str = ""
    kv_events_encoding: str = "array"  # "array" (msgspec array_like) or "map" (named fields)
    # vLLM's replay_endpoint: a ZMQ ROUTER socket bound here serves the last batches again to a
    # subscriber that asks (e.g. "tcp://127.0.0.1:*"); "" keeps none.
    kv_events_replay_endpoint: str = ""
    # A fault: this fraction of event batches is not sent live (still kept for replay).
    kv_events_loss: float = 0.0
    # A hybrid model's KV events (vLLM's hybrid allocator): > 0 adds a sliding-window group of
    # this many tokens beside the full-attention group. Every event names its group; the window
    # group announces each stored block too, and removes a released request's blocks behind its
    # window at once (they are the first vLLM evicts). Caching itself is the full group's.
    kv_sliding_window: int = 0
    # A local tokenizer.json or model directory: prompts are tokenized as vLLM does, blocks carry
    # vLLM's sha256_cbor hashes seeded by `hash_seed` (PYTHONHASHSEED), events carry token ids,
    # and the render/tokenize endpoints answer. "" keeps the ~4 characters per token model.
    tokenizer: str = ""
    hash_seed: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "loras", tuple(self.loras))
        _require(bool(self.model), "model", self.model, "must be non-empty")
        _require(self.model not in self.loras, "loras", self.loras, "must not contain the base model")
        _require(len(set(self.loras)) == len(self.loras), "loras", self.loras, "has duplicates")
        for name in ("max_loras", "max_num_seqs", "max_num_batched_tokens", "kv_blocks",
                     "block_size", "max_model_len", "default_output_tokens", "max_output_tokens"):
            value = getattr(self, name)
            _require(isinstance(value, int) and value >= 1, name, value, "must be an integer >= 1")
        for name in ("alpha_ms", "beta_ms", "gamma_ms", "delta_ms", "lora_load_ms"):
            value = getattr(self, name)
            _require(value >= 0, name, value, "must be >= 0")
        _require(self.speedup > 0, "speedup", self.speedup, "must be > 0")
        _require(0.0 <= self.fail_rate <= 1.0, "fail_rate", self.fail_rate, "must be in [0, 1]")
        _require(0.0 <= self.hang_rate <= 1.0, "hang_rate", self.hang_rate, "must be in [0, 1]")
        _require(self.metrics_fault in ("", "garbage", "hang"), "metrics_fault", self.metrics_fault,
                 "must be one of '', 'garbage', 'hang'")
        _require(0.0 <= self.kv_events_loss <= 1.0, "kv_events_loss", self.kv_events_loss, "must be in [0, 1]")
        _require(isinstance(self.kv_sliding_window, int) and self.kv_sliding_window >= 0, "kv_sliding_window",
                 self.kv_sliding_window, "must be an integer >= 0")
        _require(not self.kv_events_replay_endpoint or bool(self.kv_events_endpoint), "kv_events_replay_endpoint",
                 self.kv_events_replay_endpoint, "needs kv_events_endpoint")
        _require(self.kv_events_encoding in ("array", "map"), "kv_events_encoding",
                 self.kv_events_encoding, "must be 'array' or 'map'")
        # A request that fits max_model_len must fit the KV cache alone, or it would wait forever.
        _require(self.max_model_len <= self.kv_blocks * self.block_size, "max_model_len",
                 self.max_model_len, f"exceeds kv_blocks*block_size={self.kv_blocks * self.block_size}")

    @property
    def served_models(self) -> tuple[str, ...]:
        return (self.model, *self.loras)


def _require(ok: bool, field_name: str, value: object, why: str) -> None:
    if not ok:
        raise ConfigError(f"SimConfig.{field_name}={value!r}: {why}")
