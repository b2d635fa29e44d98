"""metrics-data-source and models-data-source over https: model servers are TLS servers on
127.0.0.1 (certificates made for the test) serving /metrics and /v1/models. What they serve
reaches the Router's endpoint state and its picks when the certificate checks out (or is not
checked, upstream's default), and nothing is read from a server another CA vouches for: each
failed scrape counts as a scrape error, with its reason kept for the log and counted on /metrics
per source."""

from __future__ import annotations

import json
import logging
import re

import pytest

from sluicegate.datalayer.failures import failures, transitions
from sluicegate.errors import ConfigError
from sluicegate.metrics.pool import PoolCollector
from sluicegate.scheduling import Router
from sluicegate.scheduling.config import load_config
from tests.harness import wait_until
from tests.tls_servers import Pki, TlsServer

CHAT = "/v1/chat/completions"
BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()


def config(metrics: str, models: str) -> str:
    return f"""
plugins:
- {{type: metrics-data-source, name: metrics, parameters: {{scheme: https, interval: 20ms{metrics}}}}}
- {{type: core-metrics-extractor, name: core}}
- {{type: models-data-source, name: models, parameters: {{scheme: https, interval: 20ms{models}}}}}
- {{type: models-data-extractor, name: lists}}
- {{type: queue-scorer}}
- {{type: max-score-picker}}
dataLayer:
  injectDefaults: false
  sources:
  - {{pluginRef: metrics, extractors: [{{pluginRef: core}}]}}
  - {{pluginRef: models, extractors: [{{pluginRef: lists}}]}}
schedulingProfiles:
- {{name: default, plugins: [{{pluginRef: queue-scorer}}, {{pluginRef: max-score-picker}}]}}
"""


def model_server(pki: Pki, name: str, waiting: int, kv: float, client_ca: str | None = None) -> TlsServer:
    metrics = (f'vllm:num_requests_waiting{{model_name="base"}} {waiting}\n'
               f'vllm:num_requests_running{{model_name="base"}} 1\n'
               f'vllm:kv_cache_usage_perc{{model_name="base"}} {kv}\n').encode()
    models = json.dumps({"object": "list", "data": [{"id": "base", "object": "model"},
                                                    {"id": f"{name}-lora", "object": "model", "parent": "base"}]})
    return TlsServer(pki, name, {"/metrics": metrics, "/v1/models": models.encode()}, client_ca)


@pytest.fixture
def pki(tmp_path) -> Pki:
    return Pki(tmp_path, "servers")


@pytest.fixture
def servers(pki):
    made: list[TlsServer] = []

    def make(**kw) -> tuple[TlsServer, TlsServer]:
        pair = (model_server(pki, "busy", 7, 0.8, **kw), model_server(pki, "idle", 1, 0.2, **kw))
        made.extend(pair)
        return pair

    yield make
    for s in made:
        s.stop()


def scraped(text: str, busy: TlsServer, idle: TlsServer) -> tuple[dict, set[str]]:
    """Each endpoint's (waiting, kv usage, models, scrape errors) once both servers answered both
    pollers, and where ten picks go."""
    router = Router(load_config(text=text).router_json())
    router.set_endpoints([("busy", busy.address, {}), ("idle", idle.address, {})])
    router.start_scraper()
    try:
        wait_until(lambda: all(s.models is not None and s.waiting > 0 for s in router.status()), timeout=15,
                   what="both servers scraped and listed over https")
        state = {s.address: (s.waiting, s.kv_usage, s.models, s.scrape_errors) for s in router.status()}
        return state, {router.explain(CHAT, BODY)[0].primary for _ in range(10)}
    finally:
        router.stop_scraper()


def test_verified_against_the_ca_the_served_values_and_lists_reach_the_picks(pki, servers):
    busy, idle = servers()
    verify = f", insecureSkipVerify: false, caCertPath: {pki.ca_path}"
    state, picks = scraped(config(verify, verify), busy, idle)
    assert state == {busy.address: (7, 0.8, ["base", "busy-lora"], 0), idle.address: (1, 0.2, ["base", "idle-lora"], 0)}
    assert picks == {idle.address}


def test_upstreams_default_reads_a_server_without_verifying_it(pki, servers, tmp_path):
    busy, idle = servers()
    other = Pki(tmp_path, "other")  # upstream reads no CA bundle unless insecureSkipVerify is false
    state, picks = scraped(config(f", caCertPath: {other.ca_path}", ""), busy, idle)
    assert state[busy.address][:3] == (7, 0.8, ["base", "busy-lora"])
    assert picks == {idle.address}


def test_a_client_certificate_is_presented_where_the_server_demands_one(pki, servers):
    busy, idle = servers(client_ca=pki.ca_path)
    cert, key = pki.issue("router", server=False)
    mtls = f", insecureSkipVerify: false, caCertPath: {pki.ca_path}, clientCertPath: {cert}, clientKeyPath: {key}"
    state, picks = scraped(config(mtls, mtls), busy, idle)
    assert state[idle.address][:3] == (1, 0.2, ["base", "idle-lora"])
    assert picks == {idle.address}


def test_a_certificate_from_another_ca_is_not_read_and_counts_as_scrape_errors(pki, servers, tmp_path):
    busy, idle = servers()
    other = Pki(tmp_path, "other")
    wrong = f", insecureSkipVerify: false, caCertPath: {other.ca_path}"
    router = Router(load_config(text=config(wrong, wrong)).router_json())
    router.set_endpoints([("busy", busy.address, {}), ("idle", idle.address, {})])
    router.start_scraper()
    try:
        wait_until(lambda: all(s.scrape_errors >= 2 and s.source_errors for s in router.status()), timeout=15,
                   what="failed scrapes and model-list polls counted for both servers")
        assert busy.failed_handshakes >= 2 and idle.failed_handshakes >= 2
        assert busy.gets == idle.gets == 0  # nothing was asked over a connection it could not verify
        assert [(s.waiting, s.models) for s in router.status()] == [(0, None), (0, None)]
        for s in router.status():  # why, for the log: rustls's verdict on the certificate
            assert "certificate" in s.scrape_error and "UnknownIssuer" in s.scrape_error, s.scrape_error
            [(source, extractor, polls, extracts, why)] = s.source_errors
            assert (source, extractor, extracts, why) == ("models-data-source", "models-data-extractor", 0,
                                                          s.scrape_error) and polls >= 2
        lines = transitions({}, failures(router.status()))
        assert [line for _, line in lines] == [f"endpoint {a}: {source} failing: {router.status()[0].scrape_error}"
                                               for a in sorted((busy.address, idle.address))
                                               for source in ("metrics-data-source", "models-data-source")]
    finally:
        router.stop_scraper()


def test_an_answer_the_extractor_refuses_counts_as_an_extract_error_until_one_reads(pki):
    bodies = {"/metrics": b"vllm:num_requests_waiting 2\n", "/v1/models": b'{"object": "list"}'}
    server = TlsServer(pki, "odd", bodies)  # upstream's default: https, not verified
    router = Router(load_config(text=config("", "")).router_json())
    router.set_endpoints([("odd", server.address, {})])
    router.start_scraper()
    try:
        s = wait_until(lambda: next((s for s in router.status() if s.source_errors and s.source_errors[0][3] >= 2),
                                    None), timeout=15, what="two refused model lists")
        [(source, extractor, polls, extracts, why)] = s.source_errors
        assert (source, extractor, polls, s.models) == ("models-data-source", "models-data-extractor", 0, None)
        assert why.startswith("not an OpenAI model list: missing field `data`"), why
        assert (s.scrape_errors, s.scrape_error) == (0, None)  # the metrics scrape reads fine
        served = {m.name: m for m in PoolCollector("pool", router.status).collect()}
        extract = served["llm_d_epp_datalayer_extract_errors"].samples
        assert [(x.labels, x.value >= 2) for x in extract] == [
            ({"source_type": "models-data-source", "extractor_type": "models-data-extractor"}, True)]
        before = failures(router.status())
        assert transitions({}, before) == [
            (logging.WARNING, f"endpoint {server.address}: models-data-source failing: {why}")]
        assert transitions(before, failures(router.status())) == []  # the same reason is not repeated

        bodies["/v1/models"] = json.dumps({"object": "list", "data": [{"id": "base"}]}).encode()
        s = wait_until(lambda: next((s for s in router.status() if s.models == ["base"]), None), timeout=15,
                       what="the model list read once it is one")
        assert s.source_errors[0][4] is None and s.source_errors[0][3] >= 2  # the count stays
        assert transitions(before, failures([s])) == [
            (logging.INFO, f"endpoint {server.address}: models-data-source recovered")]
    finally:
        router.stop_scraper()
        server.stop()


@pytest.mark.parametrize("metrics, models, names", [
    (", insecureSkipVerify: false, caCertPath: /nonexistent/ca.pem", "", "caCertPath: '/nonexistent/ca.pem'"),
    ("", ", insecureSkipVerify: false, caCertPath: /nonexistent/ca.pem", "modelsSource.tls': caCertPath"),
    (", clientCertPath: /x.pem", "", "(metrics).parameters.clientKeyPath: required with clientCertPath"),
    ("", ", insecureSkipVerify: maybe", "(models).parameters.insecureSkipVerify: 'maybe'"),
])
def test_tls_errors_name_the_field(metrics, models, names):
    with pytest.raises(ConfigError, match=re.escape(names)):
        Router(load_config(text=config(metrics, models)).router_json())
