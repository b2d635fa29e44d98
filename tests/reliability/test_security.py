"""A client can never choose its own destination: the system headers it sends are stripped before
the EPP and never reach a model server, in both upstream modes, with the EPP up and after it
died (fail-open). tests/integration covers ORIGINAL_DST with the EPP up and down; this adds
override_host and the served-endpoint header, and checks what the model server received."""

from __future__ import annotations

import time

import pytest

from sluicegate.sim.config import SimConfig

from .stack import Stack, chat

pytestmark = pytest.mark.envoy

SYSTEM_HEADERS = ("x-gateway-destination-endpoint", "x-gateway-destination-endpoint-served")


@pytest.mark.parametrize("mode", ["original_dst", "override_host"])
def test_client_system_headers_never_choose_the_destination(sims, tmp_path, mode):
    pool = sims.start(*(SimConfig(name=f"pool-{i}", speedup=50) for i in range(2)))
    (outsider,) = sims.start(SimConfig(name="outsider", speedup=50))
    addresses = [s.address for s in pool]
    s = Stack(tmp_path, addresses, upstream_mode=mode, failure_mode_allow=True, fallback_endpoint=addresses[0])
    try:
        forged = {h: outsider.address for h in SYSTEM_HEADERS}
        for i in range(6):
            status, headers, body = s.post(chat(f"up{i}"), forged)
            assert status == 200, body
            assert headers["x-sim-endpoint"] != "outsider"
            # what reached the model server is the EPP's pick, not the client's value
            assert headers["x-sim-received-destination"].split(",")[0] in addresses
        assert s.epp is not None
        s.epp.kill()
        deadline, down = time.monotonic() + 15, []
        while time.monotonic() < deadline and len(down) < 6:  # fail-open once Envoy sees it gone
            status, headers, _ = s.post(chat("down"), forged)
            if status == 200:
                down.append(headers["x-sim-endpoint"])
                assert outsider.address not in headers.get("x-sim-received-destination", "")
            time.sleep(0.1)  # poll interval of this bounded wait
        assert len(down) == 6 and "outsider" not in down, down
    finally:
        s.stop()
