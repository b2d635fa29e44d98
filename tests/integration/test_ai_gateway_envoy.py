"""The Envoy AI Gateway shape through the real Envoy: requests are routed by the model header to
the pool serving that model, each pool asked through its own EPP; each EPP's model allow-list
answers 404 JSON naming the model and the pool for a model its pool does not serve."""

from __future__ import annotations

import json

import pytest

from sluicegate.sim.config import SimConfig
from sluicegate.standalone import EnvoyOptions, EnvoyProcess, envoy_bootstrap
from sluicegate.standalone.ai_gateway import PoolRoute, parse_pool
from sluicegate.standalone.epp_process import EppProcess
from sluicegate.errors import ConfigError
from tests.harness import http_request, write_endpoints

pytestmark = pytest.mark.envoy

CHAT = "/v1/chat/completions"
HEADER = "x-ai-eg-model"


def chat(model: str, i: int = 0) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": f"q{i}"}], "max_tokens": 4}


@pytest.fixture
def gateway(sims, tmp_path):
    """pool-a (2 sims) serves model-a, pool-b (1 sim) serves model-b and model-b2."""
    pools = {"pool-a": (2, ("model-a",)), "pool-b": (1, ("model-b", "model-b2"))}
    epps, routes = [], []
    try:
        for name, (n, models) in pools.items():
            servers = sims.start(*(SimConfig(name=f"{name}-sim-{i}", speedup=50, model=models[0], loras=models[1:])
                                   for i in range(n)))
            endpoints = write_endpoints(tmp_path / f"{name}.json", [s.address for s in servers])
            epp = EppProcess(endpoints, "--ext-proc-impl", "rust", "--static-pool-name", name,
                             "--model-allow-list", ",".join(models)).start()
            epps.append(epp)
            routes.append(PoolRoute(name, "127.0.0.1", epp.port, epp.health_port, models))
        opts = EnvoyOptions(listen_port=0, admin_port=0, listen_address="127.0.0.1", epp_tls=False,
                            concurrency=1, pools=tuple(routes))
        envoy = EnvoyProcess(opts, wait_epp_healthy=True).start_blocking()
    except BaseException:
        for epp in epps:
            epp.stop()
        raise
    yield envoy, epps
    envoy.stop_blocking()
    for epp in epps:
        epp.stop()


def post(envoy, header_model: str | None, body_model: str, i: int = 0):
    headers = {HEADER: header_model} if header_model else {}
    return http_request(envoy.url, CHAT, chat(body_model, i), headers)


def test_each_model_reaches_only_its_pools_servers(gateway):
    envoy, _ = gateway
    served: dict[str, set[str]] = {"model-a": set(), "model-b": set(), "model-b2": set()}
    for i in range(24):
        for model in served:
            status, headers, body = post(envoy, model, model, i)
            assert status == 200, body
            served[model].add(headers["x-sim-endpoint"])
    assert served["model-a"] == {"pool-a-sim-0", "pool-a-sim-1"}
    assert served["model-b"] == served["model-b2"] == {"pool-b-sim-0"}


def test_a_model_no_route_names_is_a_404_json_from_envoy(gateway):
    envoy, _ = gateway
    for header in ("model-z", None):
        status, headers, body = post(envoy, header, "model-z")
        assert status == 404 and headers["content-type"] == "application/json"
        assert json.loads(body)["error"]["code"] == 404


def test_the_pools_allow_list_refuses_another_model_with_404_naming_model_and_pool(gateway):
    envoy, epps = gateway
    # The header picks pool-a's route; the body asks pool-a's EPP for a model it does not serve.
    status, headers, body = post(envoy, "model-a", "model-b")
    assert status == 404, body
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert "'model-b'" in error["message"] and "'pool-a'" in error["message"], error
    assert error["code"] == 404
    assert post(envoy, "model-a", "model-a")[0] == 200
    text = http_request(f"http://127.0.0.1:{epps[0].metrics_port}", "/metrics")[2].decode()
    counted = [line for line in text.splitlines()
               if line.startswith("llm_d_epp_request_error_total{") and 'error_code="NotFound"' in line]
    assert counted and float(counted[0].split()[-1]) == 1, counted


def test_pool_flag_syntax_and_conflicts_name_the_problem():
    pool = parse_pool("name=a;epp=127.0.0.1:9002;health-port=9003;models=m1, m2")
    assert pool == PoolRoute("a", "127.0.0.1", 9002, 9003, ("m1", "m2"))
    for bad, match in [("name=a;epp=127.0.0.1:9002", "models"), ("name=a;epp=host:1;models=m", "IP"),
                       ("name=a;epp=127.0.0.1:1;models=m;x=1", "x=1")]:
        with pytest.raises(ConfigError, match=match):
            parse_pool(bad)
    with pytest.raises(ConfigError, match="served by both"):
        EnvoyOptions(pools=(parse_pool("name=a;epp=127.0.0.1:1;models=m"), parse_pool("name=b;epp=127.0.0.1:2;models=m")))
    with pytest.raises(ConfigError, match="original_dst"):
        EnvoyOptions(upstream_mode="override_host", endpoints=("127.0.0.1:1",),
                     pools=(parse_pool("name=a;epp=127.0.0.1:1;models=m"),))
    clusters = {c["name"] for c in envoy_bootstrap(EnvoyOptions(pools=(pool,)))["static_resources"]["clusters"]}
    assert clusters == {"epp-a", "pool-a"}
