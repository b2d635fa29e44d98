"""vLLM-compatible model-server simulator: OpenAI API, vLLM's /metrics, and an engine loop with
batching, prefix-cached paged KV, LoRA slots and a seeded time model, for honest routing tests."""

from sluicegate.sim.cli import add_arguments, run_from_args, start_servers, stop_servers
from sluicegate.sim.config import DEFAULT_LORAS, DEFAULT_MODEL, SimConfig
from sluicegate.sim.engine import SimStats
from sluicegate.sim.server import ENDPOINT_HEADER, SimServer

__all__ = ["DEFAULT_LORAS", "DEFAULT_MODEL", "ENDPOINT_HEADER", "SimConfig", "SimServer",
           "SimStats", "add_arguments", "run_from_args", "start_servers", "stop_servers"]
