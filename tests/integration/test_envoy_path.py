"""End to end through the real Envoy: client → Envoy → ext_proc (the EPP process) → simulator."""

from __future__ import annotations

import json
import re
import time

import pytest

from sluicegate.sim.config import SimConfig
from sluicegate.standalone import EnvoyOptions, EnvoyProcess, admin_get
from sluicegate.standalone.epp_process import EppProcess
from tests.harness import http_request, wait_until, write_endpoints

pytestmark = pytest.mark.envoy

CHAT = "/v1/chat/completions"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def chat(content: str = "hello", **extra) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 8, **extra}


class Stack:
    """Simulators + EPP + Envoy on free ports; `stop` tears down in reverse order."""

    def __init__(self, sims, tmp_path, n_sims: int = 3, epp_args: tuple[str, ...] = (), **envoy_opts) -> None:
        self.sims = sims.start(*(SimConfig(name=f"sim-{i}", speedup=50) for i in range(n_sims)))
        self.addresses = [s.address for s in self.sims]
        self.endpoints_file = write_endpoints(tmp_path / "endpoints.json", self.addresses)
        self.epp = EppProcess(self.endpoints_file, *epp_args).start()
        if envoy_opts.get("fallback_endpoint") == "first-sim":
            envoy_opts["fallback_endpoint"] = self.addresses[0]
        if envoy_opts.get("upstream_mode") == "override_host":
            envoy_opts.setdefault("endpoints", tuple(self.addresses))
        opts = EnvoyOptions(listen_port=0, admin_port=0, listen_address="127.0.0.1", epp_port=self.epp.port,
                            epp_health_port=self.epp.health_port, epp_tls=False, concurrency=1, **envoy_opts)
        self.envoy = EnvoyProcess(opts, wait_epp_healthy=True).start_blocking()

    def post(self, body, headers=None, path=CHAT):
        return http_request(self.envoy.url, path, body, headers)

    def stop(self) -> None:
        self.envoy.stop_blocking()
        self.epp.stop()


def ready_endpoints(stack: Stack) -> float:
    """The EPP's count of endpoints with fresh metrics (its pool gauge)."""
    text = http_request(f"http://127.0.0.1:{stack.epp.metrics_port}", "/metrics")[2].decode()
    return float(re.search(r"^llm_d_epp_ready_endpoints\{[^}]*\} (\S+)$", text, re.M).group(1))


def envoy_counter(stack: Stack, suffix: str) -> int:
    """Envoy's admin counter ending in `suffix` (0 while it has never been counted)."""
    _, text = admin_get(stack.envoy.options.admin_port, f"/stats?filter={re.escape(suffix)}$")
    return sum(int(line.rsplit(": ", 1)[1]) for line in text.splitlines() if line.strip())


@pytest.fixture
def stack_factory(sims, tmp_path):
    made: list[Stack] = []

    def make(epp_args: tuple[str, ...] = (), **kw) -> Stack:
        s = Stack(sims, tmp_path, epp_args=tuple(epp_args), **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


@pytest.mark.parametrize("mode", ["original_dst", "override_host"])
def test_requests_land_on_the_endpoint_the_epp_picked(stack_factory, mode):
    stack = stack_factory(upstream_mode=mode)
    served = set()
    for i in range(12):
        status, headers, body = stack.post(chat(f"q{i}"))
        assert status == 200, body
        assert headers["x-sim-received-destination"].split(",")[0] == headers["x-sim-endpoint-address"]
        served.add(headers["x-sim-endpoint"])
        assert json.loads(body)["choices"]
    assert served <= {"sim-0", "sim-1", "sim-2"}


def test_streamed_chat_completion_passes_through_intact(stack_factory):
    stack = stack_factory()
    status, headers, body = stack.post(chat(stream=True, stream_options={"include_usage": True}))
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = [line[6:] for line in body.decode().split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[-1]["usage"]["completion_tokens"] == 8
    assert all(c["model"] == MODEL for c in chunks)


@pytest.mark.parametrize("mode", ["full_duplex", "buffered"])
def test_model_rewrite_reaches_the_server_and_is_undone_for_the_client(stack_factory, mode):
    stack = stack_factory(processing_mode=mode)
    status, headers, body = stack.post(chat(), {"x-llm-d-model-name-rewrite": "lora-2"})
    assert status == 200, body
    assert headers["x-sim-received-model"] == "lora-2"
    assert json.loads(body)["model"] == MODEL
    if mode == "buffered":
        sent = json.dumps(chat()).replace(MODEL, "lora-2").replace('"model": "lora-2"', '"model": "lora-2"')
        assert headers["x-sim-received-content-length"] == str(len(sent.encode()))


def test_malformed_body_is_a_400_json_error_and_the_epp_keeps_serving(stack_factory):
    stack = stack_factory()
    status, _, body = stack.post(b"{oops")
    assert status == 400
    assert "JSON" in json.loads(body)["error"]["message"]
    assert stack.post(chat())[0] == 200


def test_client_supplied_destination_never_decides_epp_up(stack_factory, sims):
    stack = stack_factory()
    (outsider,) = sims.start(SimConfig(name="outsider", speedup=50))
    for _ in range(6):
        status, headers, _ = stack.post(chat(), {"x-gateway-destination-endpoint": outsider.address})
        assert status == 200 and headers["x-sim-endpoint"] != "outsider"


def test_fail_open_serves_posts_with_their_bodies_when_the_epp_is_gone(stack_factory, sims):
    # The fallback destination is the first simulator; a client header must not override it.
    stack = stack_factory(failure_mode_allow=True, fallback_endpoint="first-sim")
    (outsider,) = sims.start(SimConfig(name="outsider", speedup=50))
    stack.epp.kill()
    deadline = time.monotonic() + 15
    status = 0
    while time.monotonic() < deadline:  # until Envoy's health check marks the EPP down
        status, headers, body = stack.post(chat("after"), {"x-gateway-destination-endpoint": outsider.address})
        if status == 200:
            break
        time.sleep(0.2)  # poll interval of this bounded wait
    assert status == 200, body
    assert headers["x-sim-endpoint"] == "sim-0"
    assert headers["x-sim-received-model"] == MODEL  # the body arrived intact


def test_fail_closed_returns_5xx_fast_when_the_epp_is_gone(stack_factory):
    stack = stack_factory(failure_mode_allow=False)
    stack.epp.kill()
    status, _, _ = stack.post(chat())
    assert 500 <= status < 600
    # Fast means the failed ext_proc stream answered, not its 10 s message timeout (Envoy's own count).
    assert envoy_counter(stack, "ext_proc.streams_failed") >= 1
    assert envoy_counter(stack, "ext_proc.message_timeouts") == 0


def test_fallback_list_is_followed_when_the_first_endpoint_is_dead(stack_factory, sims, tmp_path):
    config = tmp_path / "epp.yaml"
    config.write_text("plugins: [{type: queue-scorer}, {name: p, type: max-score-picker, parameters: {maxNumOfEndpoints: 3}}]\n"
                      "schedulingProfiles: [{name: default, plugins: [{pluginRef: queue-scorer}, {pluginRef: p}]}]\n")
    stack = stack_factory(upstream_mode="override_host", epp_args=("--config-file", str(config),
                                                                    "--metrics-staleness-threshold", "120"))
    dead = stack.sims[0]
    sims.stop(dead)  # the EPP still believes in it: its metrics are not stale yet
    primaries = set()
    for i in range(20):
        status, headers, body = stack.post(chat(f"f{i}"))
        assert status == 200, body
        assert headers["x-sim-endpoint"] != "sim-0"
        primaries.add(headers["x-sim-received-destination"].split(",")[0])
    assert dead.address in primaries  # some requests were first sent to the dead one, then retried


def test_stale_endpoints_are_skipped(stack_factory, sims):
    stack = stack_factory(epp_args=("--metrics-staleness-threshold", "0.3"), upstream_mode="override_host")
    sims.stop(stack.sims[2])
    wait_until(lambda: ready_endpoints(stack) == 2, what="the stopped simulator's metrics stale")
    for i in range(15):
        status, headers, _ = stack.post(chat(f"s{i}"))
        assert status == 200 and headers["x-sim-endpoint"] != "sim-2"
