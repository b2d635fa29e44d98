"""Sustained load through the real Envoy and the EPP process (flow control on): memory and file
descriptors stay flat, nothing stays running or queued, no gRPC stream stays open on the proxy,
and every request admitted to flow control has exactly one outcome that matches what the client
saw. Short form here (60 s at 200 req/s: 12k requests, so a leak of 150 B per request would
grow the RSS by 1.8 MB, which the RSS slope bound sees); `SLUICEGATE_SOAK=1` (`make soak`) runs
30 minutes and holds 10k concurrent streams. `SLUICEGATE_SOAK_RATE` sets the rate (req/s), `SLUICEGATE_SOAK_DURATION_S` the
length of the steady phase (s)."""

from __future__ import annotations

import os
import threading
import time

import numpy as np

import pytest

from benches.load.driver import held_streams
from benches.stack import BackendProcess
from sluicegate.standalone import admin_get

from tests.harness import total, wait_until

from .stack import ROOT, SOAK, Driver, Stack, process_usage

pytestmark = pytest.mark.envoy

DURATION_S = float(os.environ.get("SLUICEGATE_SOAK_DURATION_S", "1800" if SOAK else "60"))
WARMUP_S = 60.0 if SOAK else 10.0
RATE = float(os.environ.get("SLUICEGATE_SOAK_RATE", "200"))
# The RSS growth per request the steady phase may show, in bytes: half the leak it must catch.
LEAK_BOUND_B = 75.0
HELD_STREAMS = 10_000 if SOAK else 500
# Small limits so the burst phase queues, expires and rejects: every outcome gets exercised.
FLOW_CONFIG = """
featureGates: [flowControl]
plugins:
- type: concurrency-detector
  parameters: {maxConcurrency: 8}
- type: queue-scorer
- type: prefix-cache-scorer  # a small LRU: a bounded cache filling must not look like a leak
  parameters: {lruCapacityPerServer: 64, autoTune: false}
schedulingProfiles:
- name: default
  plugins: [{pluginRef: queue-scorer}, {pluginRef: prefix-cache-scorer}]
flowControl:
  defaultRequestTTL: 1s
  maxRequests: 40
  saturationDetector: {pluginRef: concurrency-detector}
"""


@pytest.fixture(scope="module")
def backend():
    b = BackendProcess().start()
    yield b
    b.stop()


@pytest.fixture
def plain_stack(backend, tmp_path):
    """No flow control: every held stream goes straight to the backend. Envoy speaks h2c to it:
    over HTTP/1.1 each held stream takes a socket on both sides of Envoy, and 10k streams need
    more than this container's 20,000 descriptors (measured 2026-12-06: 7.2-8.4k of 10k opened,
    the rest Envoy 503 "local connection failure"); one HTTP/2 connection carries them all."""
    s = Stack(tmp_path, [backend.address], max_concurrent_requests=20_000, upstream_http2=True)
    yield s
    s.stop()


class Sampler:
    """RSS and descriptor count of the EPP, every `interval` s on a thread, while load runs."""

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        self.samples: list[tuple[int, int]] = []
        self.times: list[float] = []
        self._pid, self._interval = pid, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.samples.append(process_usage(self._pid))
            except FileNotFoundError:
                return  # the EPP is gone (a failed run stops the stack): nothing more to sample
            self.times.append(time.monotonic())

    def stop(self) -> list[tuple[int, int]]:
        self._stop.set()
        self._thread.join(5)
        return self.samples


def _idle(s: Stack, timeout: float = 30) -> dict[str, float]:
    """Wait until nothing runs or waits in the EPP and the proxy has no ext_proc stream open."""
    def quiet():
        m = s.metrics()
        busy = total(m, "llm_d_epp_request_running") + total(m, "llm_d_epp_flow_control_queue_size")
        return m if busy == 0 and _proxy_streams(s) == 0 else None

    return wait_until(quiet, timeout, what="EPP idle and no ext_proc stream open")


def _proxy_streams(s: Stack) -> int:
    assert s.envoy is not None
    status, text = admin_get(s.envoy.options.admin_port, "/stats?filter=^cluster\\.epp\\.upstream_rq_active$")
    assert status == 200, text
    return int(text.split(":")[1])


def _flow_outcomes(m: dict[str, float]) -> dict[str, float]:
    out = {o: total(m, "sluicegate_flow_control_requests_total", outcome=o)
           for o in ("dispatched", "rejected_capacity", "expired_ttl", "expired_no_endpoints", "cancelled", "evicted")}
    out["enqueued"] = total(m, "sluicegate_flow_control_enqueued_total")
    out["queued"] = total(m, "llm_d_epp_flow_control_queue_size")
    return out


# A leak grows the RSS with every request, so in every part of the run; the allocator taking
# one more heap segment is a single step (measured: flat for 38 s, +800 KiB within one second,
# flat again: 98 B/request as one straight line over the run, 0 in 5 of 6 windows).
LEAK_WINDOWS = 6


def _slope_kib_s(times: list[float], samples: list[tuple[int, int]]) -> float:
    return float(np.polyfit(times, [r for r, _ in samples], 1)[0])


def _leak_b_per_request(times: list[float], samples: list[tuple[int, int]], rate: float) -> float:
    """RSS growth per request: the median of the slopes of LEAK_WINDOWS consecutive windows, so
    a leak (every window) counts in full and one step of the allocator (one window) not at all."""
    n = len(samples) // LEAK_WINDOWS
    slopes = [_slope_kib_s(times[i * n:(i + 1) * n], samples[i * n:(i + 1) * n]) for i in range(LEAK_WINDOWS)]
    return float(np.median(slopes)) * 1024 / rate


@pytest.fixture(scope="module")
def soak(backend, tmp_path_factory) -> dict:
    """Warm-up, the steady phase sampled every second, an over-capacity burst, then idle: what
    the soak tests judge (one run shared by them)."""
    tmp = tmp_path_factory.mktemp("soak")
    config = tmp / "epp.yaml"
    config.write_text(FLOW_CONFIG)
    stack = Stack(tmp, [backend.address], ("--config-file", str(config)), max_concurrent_requests=20_000)
    try:
        assert stack.epp is not None and stack.epp.pid is not None
        pid = stack.epp.pid
        warm = Driver(stack.url, rate=RATE, duration_s=WARMUP_S, stream_ratio=0.3, output_tokens=8).result()
        assert warm["errors"] == 0, warm["statuses"]
        _idle(stack)
        rss0, fds0 = process_usage(pid)
        sampler = Sampler(pid)
        steady = Driver(stack.url, rate=RATE, duration_s=DURATION_S, stream_ratio=0.3, output_tokens=8).result()
        samples = sampler.stop()
        # RSS against time while the load ran, as bytes per request sent (the driver's real rate).
        rate = steady["sent"] / DURATION_S
        whole_b = _slope_kib_s(sampler.times, samples) * 1024 / rate
        per_request_b = _leak_b_per_request(sampler.times, samples, rate)
        # Over capacity for a moment: streams held 0.5 s at 200/s against maxConcurrency 8.
        burst = Driver(stack.url, rate=200, duration_s=2, stream_ratio=1.0, output_tokens=10,
                       token_interval_ms=50).result()
        m = _idle(stack)
        rss1, fds1 = process_usage(pid)
    finally:
        stack.stop()
    peak_rss = max(r for r, _ in samples) if samples else rss1
    flow = _flow_outcomes(m)
    print(f"\nsoak {DURATION_S:.0f} s at {RATE:.0f} req/s: sent {steady['sent']}, statuses {steady['statuses']}, "
          f"errors {steady['errors']}; burst statuses {burst['statuses']}\n"
          f"EPP RSS after warm-up {rss0 / 1024:.1f} MiB, peak {peak_rss / 1024:.1f} MiB, end {rss1 / 1024:.1f} MiB "
          f"({100 * (rss1 - rss0) / rss0:+.1f}%), slope {per_request_b:+.1f} B/request (median of "
          f"{LEAK_WINDOWS} windows; whole run {whole_b:+.1f}) over {len(samples)} samples; "
          f"fds {fds0} -> {fds1}\nflow control: {flow}")
    return {"warm": warm, "steady": steady, "burst": burst, "flow": flow, "rss": (rss0, rss1),
            "fds": (fds0, fds1), "samples": samples, "per_request_b": per_request_b}


SOAK_TIMEOUT_S = WARMUP_S + DURATION_S + 120  # plus start-up, burst and drain on a busy machine


@pytest.mark.timeout(SOAK_TIMEOUT_S)
def test_soak_descriptors_stay_flat_and_nothing_is_lost(soak):
    warm, steady, burst, flow = soak["warm"], soak["steady"], soak["burst"], soak["flow"]
    (rss0, rss1), (fds0, fds1) = soak["rss"], soak["fds"]
    # Below capacity: (almost) everything dispatched; a stall of the shared machine may expire a few.
    assert steady["errors"] == 0 and steady["statuses"].get(200, 0) >= 0.99 * steady["sent"], steady["statuses"]
    assert burst["errors"] == 0
    assert rss1 < rss0 * 1.05, f"RSS grew {rss0} -> {rss1} KiB"
    assert fds1 <= fds0 + 2, f"descriptors grew {fds0} -> {fds1}"
    # Nothing lost: every admitted request has exactly one outcome...
    assert flow["enqueued"] == (flow["dispatched"] + flow["evicted"] + flow["expired_ttl"]
                                + flow["expired_no_endpoints"] + flow["cancelled"] + flow["queued"]), flow
    # ...and it is the one its client saw (the backend answers every dispatched request 200).
    sent = warm["sent"] + steady["sent"] + burst["sent"]
    answered = [warm, steady, burst]
    ok = sum(r["statuses"].get(200, 0) for r in answered)
    refused = sum(n for r in answered for st, n in r["statuses"].items() if st in (429, 503))
    assert ok + refused == sent
    assert ok == flow["dispatched"], (ok, flow)
    assert refused == flow["rejected_capacity"] + flow["expired_ttl"] + flow["expired_no_endpoints"] + flow["evicted"]
    assert refused > 0, "the burst should have gone over capacity"


# The Python request path (removed) grew 187-197 B/request here; the one Rust path measured
# +25 B/request (2 busy vCPU, 2026-12-05).
@pytest.mark.timeout(SOAK_TIMEOUT_S)
def test_soak_rss_grows_less_than_half_of_a_150_b_per_request_leak(soak):
    assert soak["per_request_b"] < LEAK_BOUND_B, f"RSS grew {soak['per_request_b']:.0f} B per request ({soak['samples']})"


# Held streams get their head at once and a token a minute: none ends before the test lets go
# (closing the client connections), so all HELD_STREAMS are open in the EPP at the same time.
HOLD_TOKEN_INTERVAL_MS = 60_000
# The first round spreads the allocator over its arenas; from the second on, a round must not
# add. Measured at 10k streams (2 vCPU, 2026-12-06), RSS after each round: 264, 294, 300, 301 MiB
# with glibc keeping what the streams freed; 92, 95, 94 MiB now that the EPP trims after a burst.
HELD_ROUNDS = 3
# What a later round may leave above the one before it: 1 KiB per held stream plus 2 MiB of
# allocator slack (11.8 MiB at 10k). Below TRIM_AFTER_PEAK nothing is trimmed, and at 500
# streams the RSS after a round wanders by ±1.5 MiB (2026-12-07, four runs: +1.5, +0.1, −1.0,
# −1.3 MiB from round 2 to 3; 1 MiB of slack failed the first). Leaking a stream's state
# (~18 KiB each) is 3.5x over it at 500 streams and 15x at 10k.
ROUND_GROWTH_BOUND_KIB = HELD_STREAMS + 2048
# A burst of at least this many streams hands its memory back when it ends (TRIM_AFTER_PEAK in
# rust/extproc/src/trim.rs): the RSS falls back to within this share of what the streams took.
TRIM_AFTER_PEAK = 1024
GIVEN_BACK_SHARE = 0.9


def test_held_streams_all_open_and_all_are_released(plain_stack):
    stack = plain_stack
    assert stack.epp is not None and stack.epp.pid is not None
    _idle(stack)
    rounds = []
    for i in range(HELD_ROUNDS):
        rss0, fds0 = process_usage(stack.epp.pid)
        with held_streams(stack.url, HELD_STREAMS, ROOT, output_tokens=4,
                          token_interval_ms=HOLD_TOKEN_INTERVAL_MS) as held:
            held_rss, held_fds = process_usage(stack.epp.pid)
            streams = _proxy_streams(stack)
            running = total(stack.metrics(), "llm_d_epp_request_running")
        _idle(stack, timeout=120)
        rss1, fds1 = process_usage(stack.epp.pid)
        rounds.append({"held": held, "streams": streams, "running": running, "rss": (rss0, held_rss, rss1),
                       "fds": (fds0, held_fds, fds1)})
        print(f"\nround {i + 1}: {held.opened}/{HELD_STREAMS} streams held in {held.took_s:.1f} s "
              f"(heads {held.statuses}); ext_proc streams open {streams}, EPP running {running:.0f}; "
              f"EPP RSS {rss0 / 1024:.1f} -> {held_rss / 1024:.1f} (held) -> {rss1 / 1024:.1f} MiB; "
              f"fds {fds0} -> {held_fds} -> {fds1}; load average {os.getloadavg()[0]:.1f}")
    start = rounds[0]["rss"][0]
    for r in rounds:
        # Every stream got its head and was open at the EPP at once...
        assert r["held"].opened == HELD_STREAMS, r["held"].statuses
        assert r["streams"] == HELD_STREAMS and r["running"] == HELD_STREAMS, r
        # ...and every one was released: nothing running, no stream on the proxy (_idle), no socket left.
        assert r["fds"][2] <= rounds[0]["fds"][0] + 2, r["fds"]
        if HELD_STREAMS >= TRIM_AFTER_PEAK:
            rss0, held_rss, rss1 = r["rss"]
            assert rss1 - start <= (1 - GIVEN_BACK_SHARE) * (held_rss - start), f"memory kept after a burst: {r['rss']}"
    # Memory that grows with every round is a leak; what one round keeps, the next reuses.
    for before, after in zip(rounds[1:], rounds[2:]):
        grew = after["rss"][2] - before["rss"][2]
        assert grew <= ROUND_GROWTH_BOUND_KIB, f"RSS after a round {before['rss'][2]} -> {after['rss'][2]} KiB"
