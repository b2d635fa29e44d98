"""The activator in static mode, end to end through real Envoy: the config's scale-up command
starts a real `sluicegate sim` process and lists it in the endpoints file; the scale-down command
stops it and empties the file. Every command run is logged so the test can count them."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sluicegate.standalone import EnvoyOptions, EnvoyProcess
from sluicegate.standalone.epp_process import EppProcess
from sluicegate.standalone.ports import find_free_port

from tests.harness import http_request, scrape, total, wait_until, write_endpoints

pytestmark = pytest.mark.envoy

CHAT = "/v1/chat/completions"
BODY = {"model": "meta-llama/Llama-3.1-8B-Instruct", "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4}

# Plays a model server's lifecycle: `up` starts the simulator and lists it once it answers;
# `down` stops it and lists nothing. `never` starts nothing (a model that never gets ready);
# `fail` exits non-zero (a model that cannot be started at all).
SCALER = r'''
import json, os, signal, socket, subprocess, sys, time
action, workdir, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
pidfile, endpoints = os.path.join(workdir, "sim.pid"), os.path.join(workdir, "endpoints.json")
with open(os.path.join(workdir, "calls.log"), "a") as f:
    f.write(f"{action} {os.environ['SLUICEGATE_REPLICAS']}\n")
if action == "up":
    log = open(os.path.join(workdir, "sim.log"), "ab")
    p = subprocess.Popen([sys.executable, "-m", "sluicegate", "sim", "--port", str(port), "--name", "model",
                          "--speedup", "50"], stdout=log, stderr=log, start_new_session=True)
    open(pidfile, "w").write(str(p.pid))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)  # poll interval of this bounded wait
    else:
        sys.exit("simulator did not open its port")
    eps = [{"name": "model-0", "address": "127.0.0.1", "port": port}]
elif action == "down":
    os.kill(int(open(pidfile).read()), signal.SIGTERM)
    os.remove(pidfile)
    eps = []
elif action == "fail":
    sys.exit("model server image not found")
else:
    sys.exit(0)
tmp = endpoints + ".tmp"
open(tmp, "w").write(json.dumps({"endpoints": eps}))
os.replace(tmp, endpoints)
'''


def epp_behind_envoy(epp: EppProcess) -> EnvoyProcess:
    """Start `epp` and a real Envoy in front of it; the EPP is stopped again if either fails."""
    try:
        epp.start()
        opts = EnvoyOptions(listen_port=0, admin_port=0, listen_address="127.0.0.1", epp_port=epp.port,
                            epp_health_port=epp.health_port, epp_tls=False, concurrency=1)
        return EnvoyProcess(opts, wait_epp_healthy=True).start_blocking()
    except BaseException:
        epp.stop()
        raise


class StaticStack:
    def __init__(self, workdir: Path, *, grace: str, delay: str = "120s", up: str = "up") -> None:
        self.workdir = workdir
        port = find_free_port()
        script = workdir / "scaler.py"
        script.write_text(SCALER)
        config = {"featureGates": ["flowControl"],
                  "flowControl": {"defaultRequestTTL": "60s", "noEndpointRequestTTL": "60s"},
                  "activator": {"scale-up-command": [sys.executable, str(script), up, str(workdir), str(port)],
                                "scale-down-command": [sys.executable, str(script), "down", str(workdir), str(port)],
                                "scale-from-zero-grace-period": grace, "scale-down-delay": delay}}
        endpoints = write_endpoints(workdir / "endpoints.json", [])
        self.epp = EppProcess(endpoints, "--config-text", json.dumps(config), "-v")
        self.envoy = epp_behind_envoy(self.epp)

    def calls(self) -> list[str]:
        log = self.workdir / "calls.log"
        return log.read_text().splitlines() if log.exists() else []

    def expired_from_zero(self) -> float:
        """The EPP's count of requests failed with 503 at the end of the grace period."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.epp.metrics_port}/metrics", timeout=5) as r:
            return sum(sample.value for fam in text_string_to_metric_families(r.read().decode())
                       for sample in fam.samples if sample.name == "sluicegate_scale_from_zero_expired_requests_total")

    def waiting_at_zero(self) -> float:
        """The EPP's count of requests held now while the pool is at zero."""
        return total(scrape(self.epp.metrics_port), "sluicegate_scale_from_zero_waiting_requests")

    def post(self) -> tuple[int, float, bytes]:
        t0 = time.monotonic()
        status, _, body = http_request(self.envoy.url, CHAT, BODY, timeout=60)
        return status, time.monotonic() - t0, body

    def stop(self) -> None:
        self.envoy.stop_blocking()
        self.epp.stop()
        pidfile = self.workdir / "sim.pid"
        if pidfile.exists():  # the simulator the scale-up command left running
            try:
                os.kill(int(pidfile.read_text()), signal.SIGTERM)
            except ProcessLookupError:
                pass


@pytest.fixture
def static_stack(tmp_path):
    made: list[StaticStack] = []

    def make(**kw) -> StaticStack:
        s = StaticStack(tmp_path, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def test_twenty_requests_at_zero_run_the_scale_up_command_once_and_all_succeed(static_stack):
    s = static_stack(grace="30s", delay="1.5s")
    with ThreadPoolExecutor(20) as pool:
        out = list(pool.map(lambda _: s.post(), range(20)))
    assert [status for status, _, _ in out] == [200] * 20, [b for _, _, b in out if b][:1]
    assert s.calls() == ["up 1"]
    print(f"static scale from zero (sim process start): slowest of 20 answered after {max(t for _, t, _ in out):.2f} s")
    deadline = time.monotonic() + 10
    while s.calls() == ["up 1"] and time.monotonic() < deadline:  # idle now: one scale-down after 1.5 s
        time.sleep(0.05)  # poll interval of this bounded wait
    time.sleep(3.0)  # two more delays idle: nothing more
    assert s.calls() == ["up 1", "down 0"]


def assert_all_503_at_the_grace_period(s: StaticStack, n: int, grace_s: float) -> None:
    with ThreadPoolExecutor(n) as pool:
        answers = pool.map(lambda _: s.post(), range(n))
        # One episode at zero: all n wait together before the first one's grace period ends (a
        # request arriving after that starts a second episode, and a second scale-up).
        wait_until(lambda: s.waiting_at_zero() == n, grace_s,
                   what=f"all {n} requests waiting at zero within one grace period")
        out = list(answers)
    assert [status for status, _, _ in out] == [503] * n
    # Each waited the grace period (no upper wall-clock bound: a busy machine answers later);
    # the EPP's own count says the 503s came from the grace period, not the 60 s request TTL.
    assert all(0.9 * grace_s <= took for _, took, _ in out), sorted(t for _, t, _ in out)
    assert s.expired_from_zero() == n


def test_a_model_that_never_comes_up_fails_every_request_with_503_at_the_grace_period(static_stack):
    # 20 client threads through Envoy reach the EPP within a few seconds on a busy machine.
    s = static_stack(grace="6s", up="never")
    assert_all_503_at_the_grace_period(s, 20, 6.0)
    assert s.calls() == ["never 1"]


def test_a_failing_scale_up_command_is_retried_while_requests_wait_then_503(static_stack):
    s = static_stack(grace="3s", up="fail")
    assert_all_503_at_the_grace_period(s, 5, 3.0)
    assert 2 <= len(s.calls()) <= 4 and set(s.calls()) == {"fail 1"}  # about once a second, not per request
    assert "exited 1: model server image not found" in s.epp.log_path.read_text()
