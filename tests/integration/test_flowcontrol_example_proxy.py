"""The documented embedding: sluicegate.flowcontrol in front of a plain aiohttp reverse proxy,
serving a real simulator; one place, so waiting requests go by their x-priority."""

from __future__ import annotations

import threading

from aiohttp import web

from sluicegate.flowcontrol import FlowController
from sluicegate.flowcontrol.example_proxy import build_app
from sluicegate.sim.config import SimConfig
from tests.harness import HoldingProxy, http_request, wait_until

CHAT = "/v1/chat/completions"


def chat(max_tokens: int) -> dict:
    return {"model": "meta-llama/Llama-3.1-8B-Instruct", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": max_tokens}


def test_the_example_proxy_admits_one_at_a_time_by_priority(loop_thread, sims, holding_proxy):
    # The holder's upstream call waits at a holding proxy in front of the simulator until every
    # other request is in the controller, so the place stays taken for as long as that takes.
    (server,) = sims.start(SimConfig(name="sim-0", speedup=10))
    upstream = holding_proxy(server.address)
    controller = FlowController(max_concurrency=1)

    async def start() -> web.AppRunner:
        runner = web.AppRunner(build_app(f"http://{upstream.address}", controller))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner

    runner = loop_thread.run(start())
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    done: list[tuple[str, int]] = []
    lock = threading.Lock()

    def send(name: str, priority: int) -> None:
        headers = {"x-priority": str(priority), "x-tenant": name}
        if name == "holder":
            headers[HoldingProxy.HEADER] = "1"
        status, _, _ = http_request(url, CHAT, chat(8), headers)
        with lock:
            done.append((name, status))

    try:
        threads = [threading.Thread(target=send, args=a) for a in
                   [("holder", 0), ("low-0", -1), ("low-1", -1), ("high-0", 5), ("high-1", 5)]]
        threads[0].start()
        wait_until(lambda: upstream.held == 1, what="the holder at the upstream")
        for i, t in enumerate(threads[1:], 1):  # arrival order is the input: each waits before the next
            t.start()
            wait_until(lambda: loop_thread.run(_stats(controller))["queued_requests"] == i,
                       what=f"request {i} queued")
        upstream.release()
        for t in threads:
            t.join(30)
        assert done == [("holder", 200), ("high-0", 200), ("high-1", 200), ("low-0", 200), ("low-1", 200)]
        s = loop_thread.run(_stats(controller))
        assert (s["dispatched"], s["in_flight"], s["queued_requests"]) == (5, 0, 0)
    finally:
        loop_thread.run(runner.cleanup())


async def _stats(controller: FlowController) -> dict:
    return controller.stats()
