"""The documented embedding: sluicegate.flowcontrol in front of a plain aiohttp reverse proxy,
serving a real simulator; one place, so waiting requests go by their x-priority."""

from __future__ import annotations

import threading

from aiohttp import web

from sluicegate.flowcontrol import FlowController
from sluicegate.flowcontrol.example_proxy import build_app
from sluicegate.sim.config import SimConfig
from tests.harness import http_request, wait_until

CHAT = "/v1/chat/completions"


def chat(max_tokens: int) -> dict:
    return {"model": "meta-llama/Llama-3.1-8B-Instruct", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": max_tokens}


def test_the_example_proxy_admits_one_at_a_time_by_priority(loop_thread, sims):
    (server,) = sims.start(SimConfig(name="sim-0", speedup=1, alpha_ms=8.0))
    controller = FlowController(max_concurrency=1)

    async def start() -> web.AppRunner:
        runner = web.AppRunner(build_app(f"http://{server.address}", controller))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner

    runner = loop_thread.run(start())
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    done: list[tuple[str, int]] = []
    lock = threading.Lock()

    def send(name: str, priority: int, max_tokens: int) -> None:
        status, _, _ = http_request(url, CHAT, chat(max_tokens), {"x-priority": str(priority), "x-tenant": name})
        with lock:
            done.append((name, status))

    try:
        threads = [threading.Thread(target=send, args=a) for a in
                   [("holder", 0, 60), ("low-0", -1, 10), ("low-1", -1, 10), ("high-0", 5, 10), ("high-1", 5, 10)]]
        for i, t in enumerate(threads):  # arrival order is the input: each is in the controller before the next
            t.start()
            wait_until(lambda: loop_thread.run(_stats(controller))["submitted"] == i + 1,
                       what=f"request {i} submitted")
        for t in threads:
            t.join(30)
        assert done == [("holder", 200), ("high-0", 200), ("high-1", 200), ("low-0", 200), ("low-1", 200)]
        s = loop_thread.run(_stats(controller))
        assert (s["dispatched"], s["in_flight"], s["queued_requests"]) == (5, 0, 0)
    finally:
        loop_thread.run(runner.cleanup())


async def _stats(controller: FlowController) -> dict:
    return controller.stats()
