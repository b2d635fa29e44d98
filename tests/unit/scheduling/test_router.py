"""Router: endpoints + metrics in, routing decisions out; scraping real /metrics servers."""

from __future__ import annotations

import json
import time
from typing import Iterator

import pytest
from aiohttp import web

from sluicegate import _core
from sluicegate.errors import BadRequestError, ConfigError, NoEndpointsError
from tests.harness import LoopThread

PATH = "/v1/chat/completions"
BODY = json.dumps({"model": "llama", "messages": [{"role": "user", "content": "hi"}]}).encode()
A, B, C = "10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"


def vllm_metrics(waiting: int, kv: float = 0.1) -> bytes:
    return (
        f'vllm:num_requests_waiting{{model_name="llama"}} {waiting}.0\n'
        f'vllm:num_requests_running{{model_name="llama"}} 1.0\n'
        f'vllm:kv_cache_usage_perc{{model_name="llama"}} {kv}\n'
    ).encode()


def router_with(loads: dict[str, int], config: str = "{}") -> _core.Router:
    r = _core.Router(config)
    r.set_endpoints([(f"pod-{i}", addr, {}) for i, addr in enumerate(loads)])
    for addr, waiting in loads.items():
        r.ingest_metrics(addr, vllm_metrics(waiting))
    return r


def test_route_picks_the_least_loaded_endpoint():
    d = router_with({A: 9, B: 0, C: 4}).route(PATH, BODY)
    assert (d.primary, d.endpoints, d.model, d.stream, d.kind) == (B, B, "llama", False, "chat_completions")


FALLBACKS_2 = json.dumps({"plugins": [
    {"type": "queue-scorer"}, {"type": "max-score-picker", "parameters": {"maxNumOfEndpoints": 2}}]})


def test_fallbacks_follow_the_primary_when_configured():
    d = router_with({A: 9, B: 0, C: 4}, FALLBACKS_2).route(PATH, BODY)
    assert d.endpoints == f"{B},{C}"
    assert d.headers is None and d.session_token is None


def test_session_token_header_brings_the_request_back_to_its_endpoint():
    config = json.dumps({"plugins": [{"type": "queue-scorer"}, {"type": "session-affinity-scorer"}],
                         "schedulingProfiles": [{"name": "p", "plugins": [
                             {"pluginRef": "queue-scorer"}, {"pluginRef": "session-affinity-scorer", "weight": 5}]}]})
    r = router_with({A: 9, B: 0}, config)
    first = r.route(PATH, BODY)
    assert first.primary == B and first.session_token is not None
    r.ingest_metrics(B, vllm_metrics(20))  # B is now the busier one, but the session sticks
    again = r.route(PATH, BODY, headers={"X-Session-Token": first.session_token})
    assert again.primary == B


def test_disaggregation_names_the_prefill_endpoint_in_a_header():
    config = json.dumps({
        "plugins": [{"type": "decode-filter"}, {"type": "prefill-filter"}, {"type": "queue-scorer"},
                    {"name": "always", "type": "always-disagg-pd-decider"},
                    {"type": "disagg-profile-handler", "parameters": {"prefillDeciderPluginName": "always"}}],
        "schedulingProfiles": [
            {"name": "decode", "plugins": [{"pluginRef": "decode-filter"}, {"pluginRef": "queue-scorer"}]},
            {"name": "prefill", "plugins": [{"pluginRef": "prefill-filter"}, {"pluginRef": "queue-scorer"}]}]})
    r = _core.Router(config)
    r.set_endpoints([("d", A, {"llm-d.ai/role": "decode"}), ("p", B, {"llm-d.ai/role": "prefill"})])
    for addr in (A, B):
        r.ingest_metrics(addr, vllm_metrics(0))
    d = r.route(PATH, BODY)
    assert (d.primary, d.headers) == (A, {"x-prefiller-host-port": B})


def test_describe_shows_the_resolved_default_profile():
    described = json.loads(_core.Router().describe())
    scorers = {s["type"]: s["weight"] for s in described["profiles"][0]["scorers"]}
    assert scorers == {"queue-scorer": 2, "kv-cache-utilization-scorer": 2, "prefix-cache-scorer": 3}


def test_model_rewrite_returns_the_rewritten_body():
    d = router_with({A: 0}).route(PATH, BODY, model_rewrite="llama-v2")
    assert d.target_model == "llama-v2"
    assert json.loads(d.body)["model"] == "llama-v2"


def test_subset_hint_restricts_the_choice():
    d = router_with({A: 9, B: 0}).route(PATH, BODY, subset=["10.0.0.1"])
    assert d.primary == A


@pytest.mark.parametrize("subset", [[], ["10.9.9.9:8000"]])
def test_empty_or_unmatched_subset_raises_no_endpoints(subset):
    with pytest.raises(NoEndpointsError):
        router_with({A: 0}).route(PATH, BODY, subset=subset)


def test_a_pool_without_endpoints_raises_no_endpoints():
    with pytest.raises(NoEndpointsError):
        _core.Router().route(PATH, BODY)


def test_a_bad_body_raises_bad_request():
    with pytest.raises(BadRequestError):
        router_with({A: 0}).route(PATH, b"{not json")


def test_unknown_config_keys_raise_config_error_naming_the_key():
    with pytest.raises(ConfigError, match="maxEndpoints"):
        _core.Router('{"maxEndpoints": 2}')


def test_release_lowers_the_in_flight_count():
    r = router_with({A: 0})
    r.route(PATH, BODY)
    r.route(PATH, BODY)
    assert r.status()[0].in_flight == 2
    r.release(A)
    assert r.status()[0].in_flight == 1


def test_status_reflects_ingested_scrapes_and_never_scraped_endpoints():
    r = _core.Router()
    r.set_endpoints([("a", A, {}), ("b", B, {"llm-d.ai/engine-type": "vllm"})])
    r.ingest_metrics(A, vllm_metrics(5, 0.4))
    a, b = r.status()
    assert (a.name, a.address, a.waiting, a.running, a.kv_usage, a.stale) == ("a", A, 5, 1, 0.4, False)
    assert a.age_ms >= 0
    assert (b.age_ms, b.stale, b.scrape_errors) == (-1, True, 0)


class MetricsApp:
    """A real aiohttp server on a free port serving changeable vLLM /metrics text."""

    def __init__(self, lt: LoopThread) -> None:
        self._lt = lt
        self.text = vllm_metrics(0)
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app)
        self.address = lt.run(self._start())

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.text, content_type="text/plain")

    async def _start(self) -> str:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        return f"{host}:{port}"

    def stop(self) -> None:
        self._lt.run(self._runner.cleanup())


@pytest.fixture
def metrics_app(loop_thread: LoopThread) -> Iterator[MetricsApp]:
    app = MetricsApp(loop_thread)
    yield app
    app.stop()


def wait_for(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)  # poll interval of this bounded wait
    return False


def test_scraper_brings_metrics_from_a_real_server(metrics_app: MetricsApp):
    r = _core.Router('{"scrapeIntervalMs": 10}')
    r.set_endpoints([("sim", metrics_app.address, {})])
    metrics_app.text = vllm_metrics(6, 0.3)
    r.start_scraper()
    try:
        assert wait_for(lambda: r.status()[0].waiting == 6)
        assert r.status()[0].kv_usage == 0.3
        metrics_app.text = vllm_metrics(2)
        assert wait_for(lambda: r.status()[0].waiting == 2)
    finally:
        r.stop_scraper()
    assert r.status()[0].scrape_errors == 0
