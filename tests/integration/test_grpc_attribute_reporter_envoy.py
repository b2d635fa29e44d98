"""request-attribute-reporter for a gRPC response through the real Envoy: a vLLM Generate call's
usage arrives in its last message, and the stream ends with trailers. Envoy's access log prints
the envoy.lb value the EPP reported, so the value must have reached Envoy before the request was
done. In full-duplex mode Envoy sends the response trailers to the EPP (trailer mode SEND), and the
EPP answers them with the value; in buffered mode (trailer mode SKIP) Envoy sends the whole body in
one message without end of stream, as trailers follow, and the EPP answers that message with it."""

from __future__ import annotations

import grpc
import pytest

import sluicegate.standalone.process as envoy_process
from sluicegate.standalone import EnvoyOptions, EnvoyProcess
from sluicegate.standalone.epp_process import EppProcess
from tests.harness import wait_until, write_endpoints
from tests.integration.test_grpc_parsers_envoy import VLLM, VLLM_SERVICES, ModelServer

pytestmark = pytest.mark.envoy

COST = "x-gateway-inference-request-cost"
EPP_CONFIG = f"""\
plugins:
- {{type: vllmgrpc-parser}}
- name: cost
  type: request-attribute-reporter
  parameters:
    attributes:
    - key: {{namespace: envoy.lb, name: {COST}}}
      expression: "usage.prompt_tokens + usage.completion_tokens"
      condition: "has(usage.prompt_tokens) && has(usage.completion_tokens)"
- {{type: queue-scorer}}
requestHandler:
  parsers: [{{pluginRef: vllmgrpc-parser}}]
dataLayer: {{injectDefaults: false}}
schedulingProfiles:
- name: default
  plugins: [{{pluginRef: cost}}, {{pluginRef: queue-scorer}}]
"""


@pytest.fixture(params=["full_duplex", "buffered"])
def stack(request, tmp_path, monkeypatch):
    """A gRPC model server, the EPP and Envoy (HTTP/2 upstream; ext_proc full duplex, or buffered
    as the AI Gateway may pick) whose access log prints each request's :path and reported cost."""
    log = tmp_path / "access.log"
    original = envoy_process.envoy_bootstrap

    def with_access_log(opts):
        bootstrap = original(opts)
        manager = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        manager["access_log"] = [{
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": str(log),
                "log_format": {"text_format_source": {
                    "inline_string": f"%REQ(:PATH)% cost=%DYNAMIC_METADATA(envoy.lb:{COST})%\n"}},
            },
        }]
        return bootstrap

    monkeypatch.setattr(envoy_process, "envoy_bootstrap", with_access_log)
    server = ModelServer("m0")
    epp = envoy = None
    try:
        config = tmp_path / "epp.yaml"
        config.write_text(EPP_CONFIG)
        epp = EppProcess(write_endpoints(tmp_path / "endpoints.json", [server.address]),
                         "--config-file", str(config)).start()
        opts = EnvoyOptions(listen_port=0, admin_port=0, listen_address="127.0.0.1", epp_port=epp.port,
                            epp_health_port=epp.health_port, epp_tls=False, concurrency=1, upstream_http2=True,
                            processing_mode=request.param)
        envoy = EnvoyProcess(opts, wait_epp_healthy=True).start_blocking()
        yield envoy, log
    finally:
        if envoy is not None:
            envoy.stop_blocking()
        if epp is not None:
            epp.stop()
        server.stop()


def test_the_cost_of_a_grpc_generate_call_reaches_envoy_before_the_call_ends(stack):
    envoy, log = stack
    with grpc.insecure_channel(f"127.0.0.1:{envoy.options.listen_port}") as channel:
        call = VLLM_SERVICES.VllmEngineStub(channel).Generate(VLLM.GenerateRequest(text="count me"), timeout=10)
        answers = list(call)
        assert call.code() == grpc.StatusCode.OK
    # The model server's last message: prompt_tokens 11, completion_tokens 3.
    assert answers[-1].complete.prompt_tokens + answers[-1].complete.completion_tokens == 14
    lines = wait_until(lambda: log.exists() and log.read_text().splitlines(), timeout=15,
                       what="Envoy's access log line for the call")
    assert lines == ["/vllm.grpc.engine.VllmEngine/Generate cost=14"], lines
