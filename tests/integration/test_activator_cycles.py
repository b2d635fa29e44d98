"""The static-mode activator through many scale-to-zero / scale-from-zero cycles, real Envoy and a
real simulator each time on the same address: the request that arrives after a scale-down (and so
triggers the next scale-up) must be answered by the new server, every cycle. An outside check saw
it fail in about 3 runs of 10 with Envoy's 503 `UC` while the new server logged no hit."""

from __future__ import annotations

import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_activator_static import StaticStack

pytestmark = pytest.mark.envoy

CYCLES = 10
SCALE_DOWN_DELAY_S = 1.0


def wait_for_calls(s: StaticStack, n: int, timeout_s: float) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while len(s.calls()) < n and time.monotonic() < deadline:
        time.sleep(0.05)  # poll interval of this bounded wait
    return s.calls()


def scale_downs(s: StaticStack) -> float:
    """The EPP's count of finished scale-downs (its activator metric)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{s.epp.metrics_port}/metrics", timeout=5) as r:
        for fam in text_string_to_metric_families(r.read().decode()):
            for sample in fam.samples:
                if sample.name == "sluicegate_activator_scale_events_total" and sample.labels["direction"] == "down":
                    return sample.value
    return 0.0


def wait_for_scale_downs(s: StaticStack, n: int, timeout_s: float) -> bool:
    """Until the EPP has seen its `n`th scale-down command finish: the pool is at zero from then."""
    deadline = time.monotonic() + timeout_s
    while scale_downs(s) < n:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)  # poll interval of this bounded wait
    return True


@pytest.mark.timeout(60 + CYCLES * 30)  # a cycle is a simulator start and stop: seconds each
def test_every_request_after_a_scale_down_is_served_by_the_next_server(tmp_path):
    s = StaticStack(tmp_path, grace="30s", delay=f"{SCALE_DOWN_DELAY_S}s")
    try:
        for cycle in range(CYCLES):
            status, took, body = s.post()
            assert status == 200, (f"cycle {cycle}: {status} after {took:.2f} s", body[:200], s.calls())
            # The pool goes back to zero after the delay; the next cycle's request starts from there.
            calls = wait_for_calls(s, 2 * cycle + 2, timeout_s=SCALE_DOWN_DELAY_S + 15)
            assert calls[-1:] == ["down 0"], (cycle, calls)
            assert wait_for_scale_downs(s, cycle + 1, timeout_s=15), (cycle, "no scale-down finished")
        assert s.calls() == ["up 1", "down 0"] * CYCLES
    finally:
        s.stop()
