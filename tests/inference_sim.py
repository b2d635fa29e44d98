"""llm-d-inference-sim, llm-d's own model-server simulator (Go, `make inference-sim-bin`), as a
third-party model server: it tokenizes (its regex tokenizer, ids hashed with FNV-32a), serves
vLLM's render API, and publishes KV events the way llm-d's indexer keys blocks (its block
hashes are llm-d's cbor-fnv keys), dialling the EPP's endpoint with the topic
`kv@<POD_IP>:<port>@<model>`. Started on free 127.0.0.1 ports, stopped by `stop`."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from sluicegate.sim.config import DEFAULT_MODEL
from sluicegate.standalone.children import kill, spawn
from tests.harness import free_port, http_request

_VERSION = Path(__file__).resolve().parent.parent / "benches" / "quality" / "upstream" / "inference-sim-version"


def binary() -> Path:
    commit = next(line.split()[1] for line in _VERSION.read_text().splitlines() if line.startswith("commit "))
    return Path.home() / ".cache" / "sluicegate" / f"llm-d-inference-sim-{commit}" / "llm-d-inference-sim"


def missing_reason() -> str | None:
    """Why llm-d-inference-sim cannot run here, or None when it can."""
    path = binary()
    return None if os.access(path, os.X_OK) else f"no llm-d-inference-sim at {path} (make inference-sim-bin)"


class InferenceSim:
    def __init__(self, zmq_endpoint: str, hash_seed: str = "42", map_format: bool = False,
                 extra: tuple[str, ...] = (), model: str = DEFAULT_MODEL, seed: int = 1,
                 max_model_len: int = 16384) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # --force-dummy-tokenizer: the model name stays real-looking, and nothing asks the
        # Hugging Face hub whether it exists.
        argv = [str(binary()), "--model", model, "--port", str(self.port), "--force-dummy-tokenizer",
                "--enable-kvcache", "--block-size", "16", "--hash-seed", hash_seed,
                "--zmq-endpoint", zmq_endpoint, "--max-model-len", str(max_model_len), "--seed", str(seed), *extra]
        if map_format:
            argv.append("--use-vllm-map-event-format")
        self._log = tempfile.TemporaryFile()  # its log, for the error when it exits early
        self._proc: subprocess.Popen[bytes] | None = spawn(
            argv, env=dict(os.environ, POD_IP="127.0.0.1"), stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 20.0) -> InferenceSim:
        deadline = time.monotonic() + timeout_s
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                self._log.seek(0)
                err = self._log.read().decode(errors="replace")
                raise RuntimeError(f"llm-d-inference-sim exited ({self._proc.returncode}): {err[-2000:]}")
            try:  # (http.client, as every test here: no proxy from the environment)
                if http_request(f"http://{self.address}", "/v1/models", timeout=1)[0] == 200:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llm-d-inference-sim on {self.address} not ready after {timeout_s} s")
            time.sleep(0.05)  # poll interval of this bounded wait

    def stop(self) -> None:
        if self._proc is not None:
            kill(self._proc)
            self._proc = None
        self._log.close()


def start_fleet(count: int, zmq_endpoint: str, seed: int = 1, **kwargs) -> list[InferenceSim]:
    """`count` simulators, the i-th seeded `seed + i`, every one ready."""
    sims = [InferenceSim(zmq_endpoint, seed=seed + i, **kwargs) for i in range(count)]
    try:
        return [s.wait_ready() for s in sims]
    except BaseException:
        for s in sims:
            s.stop()
        raise
