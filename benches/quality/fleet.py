"""Eight simulated vLLM servers in a child process (`python -m sluicegate.sim`), so the model
servers' event loop does not share a core with the load generator and the routing policy.
Fresh per run: every policy starts from cold caches and empty adapter slots."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from sluicegate.standalone.children import kill, spawn, wait_for_line
from tests.inference_sim import InferenceSim, start_fleet as start_inference_sims

COUNTERS = {  # what the bench reports -> the sims' /metrics counter (vLLM names where vLLM has one)
    "prefix_queries": "vllm:prefix_cache_queries",
    "prefix_hits": "vllm:prefix_cache_hits",
    "preemptions": "vllm:num_preemptions",
    "adapter_loads": "sim:lora_adapter_loads",
}
# FleetShape.server: llm-d's own simulator (Go, `make inference-sim-bin`) instead of ours.
INFERENCE_SIM = "llm-d-inference-sim"
# Its latency as llm-d's profile for routing experiments sets it (8B-class model on H100,
# per-token calculator: its manifests/latency-profiles/8b-h100-balanced-per-token.yaml), in
# real time: TTFT 30 ms + 250 µs per uncached prompt token, 12 ms a generated token, both
# growing to 2x as the batch fills.
INFERENCE_SIM_LATENCY = ("--latency-calculator", "per-token", "--inter-token-latency", "12ms",
                         "--inter-token-latency-std-dev", "2ms", "--prefill-overhead", "30ms",
                         "--prefill-time-per-token", "250us", "--prefill-time-std-dev", "5ms",
                         "--time-factor-under-load", "2.0")


@dataclass(frozen=True)
class FleetShape:
    count: int = 8
    speedup: float = 1.0
    max_num_seqs: int = 8
    kv_blocks: int = 1536
    max_model_len: int = 8192  # at most kv_blocks × 16 (the simulator's block size)
    max_loras: int = 2
    loras: tuple[str, ...] = tuple(f"lora-{i}" for i in range(32))
    # vLLM-style servers: tokenize with this tokenizer, publish vLLM's hashes (seeded) with token
    # ids in this encoding, dialling `kv_events_endpoint` (the EPP binds it). Default: the
    # byte scheme, each server binding its own publisher.
    tokenizer: str = ""
    hash_seed: str = ""
    kv_events_endpoint: str = "tcp://127.0.0.1:*"
    kv_events_encoding: str = "array"
    # "" (ours, `python -m sluicegate.sim`) or INFERENCE_SIM: `count` llm-d-inference-sim
    # processes (their own tokenizer, render API and events keyed as llm-d's indexer keys them,
    # dialling `kv_events_endpoint`; `speedup`, adapters and `tokenizer` do not apply).
    server: str = ""

    @property
    def token_level(self) -> bool:
        """Servers that tokenize and publish token ids, dialling the EPP's bound endpoint."""
        return bool(self.tokenizer) or self.server == INFERENCE_SIM

    def argv(self) -> list[str]:
        argv = ["--count", str(self.count), "--speedup", str(self.speedup),
                "--max-num-seqs", str(self.max_num_seqs), "--kv-blocks", str(self.kv_blocks),
                "--max-model-len", str(self.max_model_len),
                "--max-loras", str(self.max_loras), "--loras", ",".join(self.loras),
                "--kv-events-endpoint", self.kv_events_endpoint,
                "--kv-events-encoding", self.kv_events_encoding]
        if self.tokenizer:
            argv += ["--tokenizer", self.tokenizer, "--hash-seed", self.hash_seed]
        return argv


class SimFleetProcess:
    def __init__(self, shape: FleetShape, seed: int) -> None:
        self.shape = shape
        self.seed = seed
        self.addresses: list[str] = []
        self.kv_events: dict[str, str] = {}  # address -> ZMQ publisher
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SimFleetProcess:
        argv = [sys.executable, "-m", "sluicegate.sim", *self.shape.argv(), "--seed", str(self.seed)]
        self._proc = spawn(argv, stdout=subprocess.PIPE)
        line = rb"\S+ kv=\S+\n"
        m = wait_for_line(self._proc, re.compile(rb"(?:%s){%d}" % (line, self.shape.count)), 30.0)
        if m is None:
            self.stop()
            raise RuntimeError("the simulators did not print their addresses within 30 s")
        for row in m.group(0).decode().split("\n")[:self.shape.count]:
            address, kv = row.split(" kv=")
            self.addresses.append(address)
            self.kv_events[address] = kv
        return self

    def stop(self) -> None:
        if self._proc is not None:
            kill(self._proc)
            self._proc = None

    async def counters(self, session: aiohttp.ClientSession) -> dict[str, float]:
        """The reported counters summed over the fleet, read from each server's /metrics."""
        totals = dict.fromkeys(COUNTERS, 0.0)
        by_metric = {metric: key for key, metric in COUNTERS.items()}
        for address in self.addresses:
            async with session.get(f"http://{address}/metrics") as resp:
                text = await resp.text()
            for family in text_string_to_metric_families(text):
                key = by_metric.get(family.name)
                if key is not None:
                    totals[key] += sum(s.value for s in family.samples if s.name.endswith("_total"))
        return totals


class InferenceSimFleet(SimFleetProcess):
    """`shape.count` llm-d-inference-sim processes, one per server, with the fleet's interface."""

    def start(self) -> InferenceSimFleet:
        shape = self.shape
        extra = (*INFERENCE_SIM_LATENCY, "--max-num-seqs", str(shape.max_num_seqs),
                 "--kv-cache-size", str(shape.kv_blocks))
        self._sims: list[InferenceSim] = start_inference_sims(
            shape.count, shape.kv_events_endpoint, seed=self.seed, hash_seed=shape.hash_seed,
            map_format=shape.kv_events_encoding == "map", extra=extra, max_model_len=shape.max_model_len)
        self.addresses = [s.address for s in self._sims]
        return self

    def stop(self) -> None:
        for s in getattr(self, "_sims", []):
            s.stop()


def start_fleet(shape: FleetShape, seed: int) -> SimFleetProcess:
    return (InferenceSimFleet if shape.server == INFERENCE_SIM else SimFleetProcess)(shape, seed).start()
