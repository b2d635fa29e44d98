"""After traffic through the real Envoy, /metrics of the EPP process carries every pinned family
with samples where the traffic went, and health answers on the metrics port; with flow control
on, every family upstream serves is there with upstream's type, labels and buckets, and its values
follow what was sent; a refused request keeps its model, a client's hang-up is one outcome."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sluicegate.sim.config import SimConfig
from sluicegate.standalone import EnvoyOptions, EnvoyProcess
from sluicegate.standalone.epp_process import EppProcess
from tests.harness import HoldingProxy, http_request, write_endpoints
from tests.integration.extproc_client import exchange, request_body, request_headers
from tests.unit.metrics.test_metrics import PINNED, exposed_families
from tests.unit.metrics.test_metrics_upstream import BUCKETS, GLOBAL_CAPACITY, NO_SAMPLES, SERVED, bucket_bounds

pytestmark = pytest.mark.envoy

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
N = 12


def mixed_traffic(sims, tmp_path, *epp_args: str, front=None) -> EppProcess:
    """An EPP over two simulated servers after N requests through the real Envoy (every other one
    streamed, with usage), three fairness ids, and one bad body (400). The caller stops the EPP.
    `front` (server address → the address the EPP is given) puts something in front of each."""
    fleet = sims.start(*(SimConfig(name=f"sim-{i}", speedup=50) for i in range(2)))
    addresses = [front(s.address) if front else s.address for s in fleet]
    endpoints = write_endpoints(tmp_path / "endpoints.json", addresses)
    epp = EppProcess(endpoints, "--refresh-metrics-interval", "0.02", *epp_args).start()
    envoy = None
    try:
        opts = EnvoyOptions(listen_port=0, admin_port=0, listen_address="127.0.0.1", epp_port=epp.port,
                            epp_health_port=epp.health_port, epp_tls=False, concurrency=1)
        envoy = EnvoyProcess(opts, wait_epp_healthy=True).start_blocking()
        for i in range(N):
            body = {"model": MODEL, "messages": [{"role": "user", "content": f"question {i} " * 40}],
                    "max_tokens": 8, "stream": i % 2 == 0, "stream_options": {"include_usage": True}}
            if i % 2:
                body.pop("stream_options")
            status, _, text = http_request(envoy.url, "/v1/chat/completions", body,
                                           {"x-llm-d-inference-fairness-id": f"tenant-{i % 3}"})
            assert status == 200, text
        status, _, _ = http_request(envoy.url, "/v1/chat/completions", b"{not json")
        assert status == 400
    except BaseException:
        epp.stop()
        raise
    finally:
        if envoy is not None:
            envoy.stop_blocking()
    return epp


@pytest.fixture
def loaded_epp(sims, tmp_path):
    epp = mixed_traffic(sims, tmp_path)
    try:
        yield epp
    finally:
        epp.stop()


def scrape(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return {f.name: f for f in text_string_to_metric_families(r.read().decode())}


def value(families: dict, family: str, sample: str, **labels) -> float:
    return sum(s.value for s in families[family].samples
               if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))


def test_every_pinned_family_is_exposed_after_traffic(loaded_epp):
    families = scrape(loaded_epp.metrics_port)
    assert exposed_families(families) == PINNED


def test_request_families_count_the_traffic(loaded_epp):
    f = scrape(loaded_epp.metrics_port)
    assert value(f, "llm_d_epp_request", "llm_d_epp_request_total", model_name=MODEL) == N
    assert value(f, "inference_objective_request", "inference_objective_request_total", model_name=MODEL) == N
    assert value(f, "llm_d_epp_request", "llm_d_epp_request_total", fairness_id="tenant-1") == N // 3
    assert value(f, "llm_d_epp_request_error", "llm_d_epp_request_error_total", error_code="BadRequest") == 1
    assert value(f, "llm_d_epp_request_running", "llm_d_epp_request_running") == 0
    assert value(f, "llm_d_epp_request_duration_seconds", "llm_d_epp_request_duration_seconds_count") == N
    # vLLM reports usage on every non-streamed response and on streams that ask for it: all of them here
    assert value(f, "llm_d_epp_request_input_tokens", "llm_d_epp_request_input_tokens_count") == N
    assert value(f, "llm_d_epp_request_output_tokens", "llm_d_epp_request_output_tokens_sum") == 8 * N
    assert value(f, "llm_d_epp_request_ttft_seconds", "llm_d_epp_request_ttft_seconds_count", streaming="true") == N // 2
    assert value(f, "llm_d_epp_scheduler_e2e_duration_seconds",
                 "llm_d_epp_scheduler_e2e_duration_seconds_count") == N
    attempts = value(f, "llm_d_epp_scheduler_attempts", "llm_d_epp_scheduler_attempts_total", status="success")
    assert attempts == N  # the bad body never reached the scheduler
    assert value(f, "llm_d_epp_ready_endpoints", "llm_d_epp_ready_endpoints") == 2
    assert value(f, "inference_pool_ready_pods", "inference_pool_ready_pods") == 2


def test_health_answers_on_the_metrics_port(loaded_epp):
    for path in ("/healthz", "/readyz"):
        with urllib.request.urlopen(f"http://127.0.0.1:{loaded_epp.metrics_port}{path}", timeout=5) as r:
            assert r.status == 200


# Flow control on, one place per endpoint: a burst queues behind two long requests.
FLOW_CONTROL = json.dumps({"apiVersion": "llm-d.ai/v1alpha1", "kind": "EndpointPickerConfig",
                           "featureGates": ["flowControl"],
                           "plugins": [{"type": "concurrency-detector", "parameters": {"maxConcurrency": 1}}],
                           "flowControl": {"saturationDetector": {"pluginRef": "concurrency-detector"}}})
BURST = 5  # two go at once (one place on each of the two servers), three queue
# Model-rewrite rules come from InferenceModelRewrite objects (Kubernetes mode); the unit test
# (tests/unit/metrics/test_metrics_upstream.py) checks that family's samples.
KUBE_ONLY = {"inference_extension_model_rewrite_decisions_total", "llm_d_epp_model_rewrite_decisions_total"}


def counter_families(port: int) -> dict:
    return {n + ("_total" if fam.type == "counter" else ""): fam for n, fam in scrape(port).items()}


def wait_for(what: str, probe, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = probe()
        if got:
            return got
        time.sleep(0.02)  # poll interval of a bounded wait
    raise AssertionError(f"timed out waiting for {what}")


def burst(url: str, port: int, proxies: list[HoldingProxy]) -> dict:
    """BURST requests of flow "burst" at once once nothing runs: the scrape taken while three of
    them wait in their flow's queue and the two dispatched ones are held by `proxies` (one in
    front of each server) until then."""
    wait_for("no request running", lambda: value(scrape(port), "llm_d_epp_request_running",
                                                   "llm_d_epp_request_running") == 0 or None)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "long"}], "max_tokens": 2000}
    statuses: list[int] = []
    headers = {"x-llm-d-inference-fairness-id": "burst", HoldingProxy.HEADER: "1"}
    threads = [threading.Thread(target=lambda: statuses.append(http_request(
        url, "/v1/chat/completions", body, headers, timeout=60)[0]))
        for _ in range(BURST)]
    for t in threads:
        t.start()

    def three_queued():
        f = counter_families(port)
        held = value(f, "llm_d_epp_flow_control_queue_size", "llm_d_epp_flow_control_queue_size",
                     fairness_id="burst", model_name=MODEL, target_model_name=MODEL)
        return f if held == BURST - 2 else None

    held = wait_for("three burst requests queued", three_queued)
    for p in proxies:
        p.release()
    for t in threads:
        t.join(60)
    assert statuses == [200] * BURST
    return held


def test_every_upstream_family_after_mixed_traffic_with_flow_control(sims, tmp_path, holding_proxy):
    """Streamed and unary requests, a bad body, a burst that queues, flow control on, the stream
    metrics on: every family upstream serves is scraped with upstream's type and label names,
    and its values match what was sent."""
    proxies: list[HoldingProxy] = []
    epp = mixed_traffic(sims, tmp_path, "--config-text", FLOW_CONTROL, "--enable-grpc-stream-metrics",
                        front=lambda address: (proxies.append(holding_proxy(address)), proxies[-1].address)[1])
    envoy = None
    try:
        opts = EnvoyOptions(listen_port=0, admin_port=0, listen_address="127.0.0.1", epp_port=epp.port,
                            epp_health_port=epp.health_port, epp_tls=False, concurrency=1)
        envoy = EnvoyProcess(opts, wait_epp_healthy=True).start_blocking()
        held = burst(envoy.url, epp.metrics_port, proxies)
        envoy.stop_blocking()
        envoy = None
        f = wait_for("every stream closed", lambda: (lambda f: f if value(
            f, "llm_d_epp_extproc_streams_inflight", "llm_d_epp_extproc_streams_inflight") == 0 else None)(
            counter_families(epp.metrics_port)))
    finally:
        if envoy is not None:
            envoy.stop_blocking()
        epp.stop()
    for name, (kind, labels) in SERVED.items():
        assert name in f and f[name].type == kind, name
        if name not in NO_SAMPLES | GLOBAL_CAPACITY | KUBE_ONLY:
            assert f[name].samples, name
            assert all(set(s.labels) - {"le"} == labels for s in f[name].samples), name
            if kind == "histogram":
                assert bucket_bounds(f[name]) == BUCKETS[name], name

    def total(family: str, sample: str, **labels) -> float:
        return value(f, family, sample, **labels)

    sent = N + BURST
    assert total("llm_d_epp_request_total", "llm_d_epp_request_total", model_name=MODEL) == sent
    assert total("inference_objective_request_total", "inference_objective_request_total", model_name=MODEL) == sent
    assert total("inference_objective_running_requests", "inference_objective_running_requests") == 0
    assert total("llm_d_epp_request_error_total", "llm_d_epp_request_error_total", error_code="BadRequest") == 1
    # every streamed response had 8 tokens and a first chunk before its end
    assert total("llm_d_epp_request_streaming_tpot_seconds", "llm_d_epp_request_streaming_tpot_seconds_count") \
        == N // 2
    # gaps between the chunks of the streamed responses only: how many chunks Envoy made of each
    # is its business (the Rust stream tests count gaps per chunk exactly); they fit in the time
    # the streamed requests took
    assert total("llm_d_epp_request_streaming_itl_seconds", "llm_d_epp_request_streaming_itl_seconds_count") >= 1
    assert total("llm_d_epp_request_streaming_itl_seconds", "llm_d_epp_request_streaming_itl_seconds_sum") \
        < total("llm_d_epp_request_duration_seconds", "llm_d_epp_request_duration_seconds_sum")
    assert total("llm_d_epp_request_streaming_itl_seconds", "llm_d_epp_request_streaming_itl_seconds_count",
                 fairness_id="burst") == 0
    # every request's request phase (the bad body's too); a response phase for each routed one
    assert total("llm_d_epp_request_processing_duration_seconds",
                 "llm_d_epp_request_processing_duration_seconds_count") == sent + 1
    assert total("llm_d_epp_response_processing_duration_seconds",
                 "llm_d_epp_response_processing_duration_seconds_count") == sent
    # the picker ran once per routed request, the parser once per body (the bad one too)
    for prefix in ("llm_d_epp", "inference_extension"):
        assert total(f"{prefix}_plugin_duration_seconds", f"{prefix}_plugin_duration_seconds_count",
                     extension_point="Picker") == sent
        assert total(f"{prefix}_plugin_duration_seconds", f"{prefix}_plugin_duration_seconds_count",
                     extension_point="RequestParsing", plugin_type="openai-parser") == sent + 1
    # sluicegate's own ledger counts every admission, the bad body too (the Router parses it at
    # dispatch); upstream's families count only parsed requests, as upstream parses first
    assert total("sluicegate_flow_control_requests_total", "sluicegate_flow_control_requests_total",
                 outcome="dispatched") == sent + 1
    for prefix in ("llm_d_epp", "inference_extension"):
        assert total(f"{prefix}_flow_control_request_queue_duration_seconds",
                     f"{prefix}_flow_control_request_queue_duration_seconds_count", outcome="Dispatched") == sent
        # the three that queued went through an enqueue; the rest were dispatched at once
        assert total(f"{prefix}_flow_control_request_enqueue_duration_seconds",
                     f"{prefix}_flow_control_request_enqueue_duration_seconds_count",
                     fairness_id="burst", outcome="NotYetFinalized") == BURST - 2
        assert total(f"{prefix}_flow_control_request_enqueue_duration_seconds",
                     f"{prefix}_flow_control_request_enqueue_duration_seconds_count") == BURST - 2
        assert total(f"{prefix}_flow_control_dispatch_cycle_duration_seconds",
                     f"{prefix}_flow_control_dispatch_cycle_duration_seconds_count") >= 1
        # per flow and model while they waited; the flow stays, at 0, once they left
        assert value(held, f"{prefix}_flow_control_queue_bytes", f"{prefix}_flow_control_queue_bytes",
                     fairness_id="burst", model_name=MODEL) > 0
        assert total(f"{prefix}_flow_control_queue_size", f"{prefix}_flow_control_queue_size",
                     fairness_id="burst", model_name=MODEL) == 0
    assert total("llm_d_epp_flow_control_requests_total", "llm_d_epp_flow_control_requests_total",
                 outcome="Dispatched") == sent
    # three of a band's default 5000 requests were queued at once
    assert value(held, "llm_d_epp_flow_control_capacity_utilization_requests",
                 "llm_d_epp_flow_control_capacity_utilization_requests", priority="0") == pytest.approx(3 / 5000)
    assert total("llm_d_epp_flow_control_capacity_utilization_requests",
                 "llm_d_epp_flow_control_capacity_utilization_requests") == 0
    # the stream families: one ext_proc stream per request (how each ends, OK or Envoy's reset
    # once the response is through, is Envoy's timing)
    assert total("llm_d_epp_extproc_streams_total", "llm_d_epp_extproc_streams_total") == sent + 1
    assert total("llm_d_epp_extproc_stream_duration_seconds", "llm_d_epp_extproc_stream_duration_seconds_count") \
        == sent + 1


def test_a_503_for_a_subset_naming_no_member_is_counted_with_the_requests_model(sims, tmp_path):
    """Envoy's subset hint names no pool member: the 503 is counted with the model the body named
    (upstream labels it so), not with an empty model."""
    sim = sims.start(SimConfig(name="sim-0", speedup=50))[0]
    epp = EppProcess(write_endpoints(tmp_path / "endpoints.json", [sim.address])).start()
    try:
        body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}).encode()
        out = exchange(epp.port, [request_headers("/v1/chat/completions", subset=["10.9.9.9:8000"]),
                                  request_body(body, True)])
        assert out[0].immediate_response.status.code == 503
        f = scrape(epp.metrics_port)
    finally:
        epp.stop()
    for family, code in (("llm_d_epp_request_error", "ServiceUnavailable"),
                         ("inference_objective_request_error", "ServiceUnavailable")):
        assert value(f, family, f"{family}_total", model_name=MODEL, error_code=code) == 1
        assert value(f, family, f"{family}_total", model_name="") == 0


def test_a_client_hang_up_while_queued_is_one_outcome_in_every_family(sims, tmp_path, holding_proxy):
    """Flow control on, one place: a request held at the server keeps it, a second waits in its
    queue and its client hangs up. The outcome counter, both queue-duration histograms and
    sluicegate's ledger count the same two outcomes: one dispatched, one cancelled."""
    sim = sims.start(SimConfig(name="sim-0", speedup=50))[0]
    proxy = holding_proxy(sim.address)
    epp = EppProcess(write_endpoints(tmp_path / "endpoints.json", [proxy.address]),
                     "--refresh-metrics-interval", "0.02", "--config-text", FLOW_CONTROL).start()
    envoy = None
    try:
        opts = EnvoyOptions(listen_port=0, admin_port=0, listen_address="127.0.0.1", epp_port=epp.port,
                            epp_health_port=epp.health_port, epp_tls=False, concurrency=1)
        envoy = EnvoyProcess(opts, wait_epp_healthy=True).start_blocking()
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        statuses: list[int] = []
        held = threading.Thread(target=lambda: statuses.append(http_request(
            envoy.url, "/v1/chat/completions", body, {HoldingProxy.HEADER: "1"}, timeout=60)[0]))
        held.start()
        wait_for("the first request at the server", lambda: proxy.held == 1)
        host, port = envoy.url.removeprefix("http://").rsplit(":", 1)
        leaving = http.client.HTTPConnection(host, int(port), timeout=10)
        leaving.request("POST", "/v1/chat/completions", json.dumps(body), {"content-type": "application/json"})
        wait_for("the second request queued", lambda: value(
            scrape(epp.metrics_port), "llm_d_epp_flow_control_queue_size", "llm_d_epp_flow_control_queue_size",
            model_name=MODEL) == 1)
        leaving.close()  # the client hangs up while its request waits
        wait_for("the queue emptied", lambda: value(
            scrape(epp.metrics_port), "llm_d_epp_flow_control_queue_size", "llm_d_epp_flow_control_queue_size") == 0)
        proxy.release()
        held.join(60)
        assert statuses == [200]
        f = wait_for("both outcomes counted", lambda: (lambda f: f if value(
            f, "llm_d_epp_flow_control_requests_total", "llm_d_epp_flow_control_requests_total") == 2 else None)(
            counter_families(epp.metrics_port)))
    finally:
        if envoy is not None:
            envoy.stop_blocking()
        epp.stop()
    want = {"Dispatched": 1, "EvictedContextCancelled": 1}
    requests = "llm_d_epp_flow_control_requests_total"
    assert {o: value(f, requests, requests, outcome=o) for o in want} == want
    for prefix in ("llm_d_epp", "inference_extension"):
        name = f"{prefix}_flow_control_request_queue_duration_seconds"
        assert {o: value(f, name, f"{name}_count", outcome=o) for o in want} == want, prefix
    ledger = {o: value(f, "sluicegate_flow_control_requests_total", "sluicegate_flow_control_requests_total",
                       outcome=o) for o in ("dispatched", "cancelled")}
    assert ledger == {"dispatched": 1, "cancelled": 1}
