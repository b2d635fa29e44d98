"""The precise profile README's "Choosing a profile" shows: it passes `sluicegate check-config`
and routes a chat request, with its tokenizer path pointed at one made here and its KV-event
endpoint at a free port."""

from __future__ import annotations

import socket
from pathlib import Path

from sluicegate.cli import main
from sluicegate.scheduling import Endpoint, Request, Scheduler
from sluicegate.scheduling.config import load_config
from sluicegate.sim.toy_tokenizers import byte_level_chatml

README = Path(__file__).parents[3] / "README.md"


def readme_profile() -> str:
    text = README.read_text()
    section = text[text.index("### Choosing a profile"):text.index("## Observability")]
    return section.split("```yaml\n", 1)[1].split("```", 1)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_readme_precise_profile_checks_and_routes(tmp_path, capsys):
    config = readme_profile()
    assert "/models/Qwen3-8B" in config and "tcp://*:5557" in config
    config = (config.replace("/models/Qwen3-8B", str(byte_level_chatml(tmp_path / "tok")))
              .replace("tcp://*:5557", f"tcp://127.0.0.1:{free_port()}"))
    path = tmp_path / "epp.yaml"
    path.write_text(config)
    assert main(["check-config", str(path)]) == 0, capsys.readouterr().err
    assert "no-hit-lru-scorer×2" in capsys.readouterr().out
    s = Scheduler(load_config(path=str(path)))
    pool = [Endpoint(f"vllm-{i}", f"127.0.0.1:{8000 + i}") for i in range(2)]
    s.set_endpoints(pool)
    for e in pool:
        s.update_metrics(e.address, "vllm:num_requests_waiting 0\nvllm:kv_cache_usage_perc 0.1\n")
    chat = {"model": "Qwen/Qwen3-8B", "messages": [{"role": "user", "content": "hello " * 50}]}
    assert s.schedule(Request(chat)).primary in {e.address for e in pool}
