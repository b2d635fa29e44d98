"""`sluicegate demo` as a newcomer runs it: a child process that starts simulators, the EPP and
Envoy, compares the EPP with round-robin, prints one JSON object and leaves nothing running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.envoy

DEMO = [sys.executable, "-m", "sluicegate", "demo"]
ENDPOINTS = {"fast-0", "fast-1", "slow-0", "slow-1"}
POLICY_FIELDS = {"requests", "errors", "ttft_p50_ms", "ttft_p99_ms", "e2e_p50_ms",
                 "output_tokens_per_s", "per_endpoint"}


@pytest.fixture(scope="module")
def short_demo() -> dict:
    """One 4-second demo shared by the result tests (two runs of ~6-9 s each plus start-up)."""
    done = subprocess.run([*DEMO, "--duration", "4", "--json"], capture_output=True, text=True,
                          timeout=90, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_json_has_both_policies_with_the_reported_fields(short_demo: dict) -> None:
    assert set(short_demo) == {"sluicegate", "round_robin"}
    for result in short_demo.values():
        assert POLICY_FIELDS <= set(result)
        assert result["requests"] > 0


def test_no_request_fails_under_either_policy(short_demo: dict) -> None:
    assert [short_demo[p]["errors"] for p in ("sluicegate", "round_robin")] == [0, 0]


def test_the_same_seeded_load_reaches_both_policies(short_demo: dict) -> None:
    assert short_demo["sluicegate"]["requests"] == short_demo["round_robin"]["requests"]


def test_every_endpoint_serves_requests_under_the_epp(short_demo: dict) -> None:
    served = short_demo["sluicegate"]["per_endpoint"]
    assert set(served) == ENDPOINTS and min(served.values()) > 0


def test_the_epp_sends_more_than_round_robins_half_to_the_fast_servers(short_demo: dict) -> None:
    # Round-robin gives each server a quarter; the EPP gave the fast pair ~68% in every run
    # measured, so 55% leaves room for noise yet fails a picker that ignores load.
    served = short_demo["sluicegate"]["per_endpoint"]
    fast_share = (served["fast-0"] + served["fast-1"]) / sum(served.values())
    assert fast_share > 0.55


def test_the_epp_has_a_lower_ttft_tail_than_round_robin(short_demo: dict) -> None:
    # At 4 s the p50s are within noise of each other (0.94-1.07x measured): half the requests
    # land on idle fast servers either way. The tail is where round-robin's overloaded slow
    # servers show: p99 was 2.3-2.4x lower with the EPP in every 4 s run measured.
    assert short_demo["sluicegate"]["ttft_p99_ms"] < short_demo["round_robin"]["ttft_p99_ms"]


def _children(pid: int) -> dict[int, str]:
    """PID -> command line of the live children of `pid`."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found[int(entry.name)] = cmdline
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_for_epp_and_envoy(demo: subprocess.Popen, timeout_s: float = 30.0) -> dict[int, str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and demo.poll() is None:
        children = _children(demo.pid)
        commands = " ".join(children.values())
        if "sluicegate run" in commands and "envoy" in commands:
            return children
        time.sleep(0.1)
    raise AssertionError(f"the demo never had both an EPP and an Envoy child: {_children(demo.pid)}")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_the_demo_leaves_no_epp_or_envoy_process(signum: int) -> None:
    demo = subprocess.Popen([*DEMO, "--duration", "30", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        children = _wait_for_epp_and_envoy(demo)
        time.sleep(1.0)  # let the load start, so requests are in flight when the signal lands
        demo.send_signal(signum)
        out, _ = demo.communicate(timeout=30)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(10)
    assert demo.returncode == 128 + signum
    assert out == b""  # interrupted: no half-made result on stdout
    assert [pid for pid in children if _alive(pid)] == []
