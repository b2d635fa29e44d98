"""dataLayer: sources and extractors wired by reference, defaults injected as upstream does,
and what they configure reaching the Router (scraping on/off, interval, engine labels)."""

from __future__ import annotations

import json
import re

import pytest

from sluicegate.errors import ConfigError
from sluicegate.scheduling import Endpoint, Scheduler
from sluicegate.scheduling.config import load_config
from sluicegate.sim.config import SimConfig
from tests.unit.scheduling.test_router import wait_for
from tests.tls_servers import Pki

METRICS = "- {type: metrics-data-source, parameters: {interval: 250ms}}\n- {type: core-metrics-extractor}\n"


DCGM = "- {type: dcgm-extractor}\n- {type: dcgm-data-source, parameters: %s}\n"
MODELS = "- {type: models-data-extractor}\n- {type: models-data-source, parameters: %s}\n"
MODELS_WIRED = ("dataLayer: {sources: [{pluginRef: models-data-source, extractors: "
                "[{pluginRef: models-data-extractor}]}]}\n")
DCGM_WIRED = ("dataLayer: {sources: [{pluginRef: dcgm-data-source, extractors: [{pluginRef: dcgm-extractor}]}]}\n")


def router(text: str) -> dict:
    return json.loads(load_config(text=text).router_json())


def test_defaults_scrape_metrics_with_the_core_extractor():
    cfg = load_config(text="plugins: [{type: queue-scorer}]")
    assert json.loads(cfg.router_json())["scrapeMetrics"] is True
    assert cfg.data_layer.sources == (("metrics-data-source", "metrics-data-source", ("core-metrics-extractor",)),)


def test_a_listed_metrics_source_named_like_the_default_is_the_one_injected():
    # The charts' default: listed with parameters, never wired by hand.
    assert router("plugins:\n" + METRICS)["metricsIntervalMs"] == 250


def test_explicit_sources_are_used_as_wired():
    r = router("plugins:\n- {name: m, type: metrics-data-source, parameters: {interval: 2s}}\n"
               "- {name: x, type: core-metrics-extractor, parameters: {defaultEngine: sglang, "
               "engineLabelKey: example.com/engine}}\n"
               "dataLayer: {sources: [{pluginRef: m, extractors: [{pluginRef: x}]}]}")
    assert (r["metricsIntervalMs"], r["defaultEngine"], r["engineLabelKey"]) == (2000, "sglang", "example.com/engine")


def test_opting_out_of_defaults_without_a_source_turns_scraping_off():
    assert router("dataLayer: {injectDefaults: false}")["scrapeMetrics"] is False
    # A metrics source nothing extracts from does not scrape either.
    assert router("plugins: [{type: metrics-data-source}]\n"
                  "dataLayer: {injectDefaults: false, sources: [{pluginRef: metrics-data-source}]}"
                  )["scrapeMetrics"] is False


def test_the_default_engine_reaches_endpoints_without_the_engine_label():
    s = Scheduler(load_config(text="plugins: [{type: core-metrics-extractor, parameters: {defaultEngine: sglang}}]"))
    s.set_endpoints([Endpoint("pod-0", "10.0.0.1:8000")])
    s.update_metrics("10.0.0.1:8000", "sglang:num_queue_reqs 3\n", engine="sglang")
    assert s.router.status()[0].waiting == 3


def test_a_dcgm_source_feeding_its_extractor_tells_the_router_where_to_poll():
    r = router("plugins:\n" + DCGM % "{port: 9500, path: /gpu, interval: 2s}" + DCGM_WIRED)
    assert r["gpuTelemetry"] == {"port": 9500, "path": "/gpu", "intervalMs": 2000, "useNodeAddress": False}
    assert r["scrapeMetrics"] is True  # the default metrics source is still injected
    assert router("plugins:\n" + DCGM % "{}" + DCGM_WIRED)["gpuTelemetry"] == \
        {"port": 9400, "path": "/metrics", "useNodeAddress": False}
    assert "gpuTelemetry" not in router("dataLayer: {injectDefaults: true}")


def test_a_dcgm_daemonset_is_polled_on_the_node_over_https_unverified_by_default():
    text = "plugins:\n" + DCGM % "{useNodeAddress: true, scheme: https}" + DCGM_WIRED
    assert router(text)["gpuTelemetry"] == {"port": 9400, "path": "/metrics", "useNodeAddress": True,
                                            "tls": {"insecureSkipVerify": True}}
    # Node addresses come from Pods: the app refuses it without Kubernetes mode, naming this field.
    assert load_config(text=text).data_layer.node_addresses == \
        "--config-text: plugins[1] (dcgm-data-source).parameters.useNodeAddress"
    assert load_config(text="plugins:\n" + DCGM % "{}" + DCGM_WIRED).data_layer.node_addresses is None


def test_a_dcgm_daemonset_is_refused_under_file_discovery_naming_the_field(tmp_path):
    from sluicegate.app import Epp, EppOptions

    eps = tmp_path / "endpoints.yaml"
    eps.write_text("endpoints: [{name: a, address: 127.0.0.1, port: 8000}]\n")
    text = "plugins:\n" + DCGM % "{useNodeAddress: true}" + DCGM_WIRED
    refused = "plugins[1] (dcgm-data-source).parameters.useNodeAddress: node addresses come from each Pod's"
    with pytest.raises(ConfigError, match=re.escape(refused)):  # file discovery in the config
        load_config(text=text.replace("dataLayer: {", "- {type: file-discovery, name: file, parameters: "
                                      f"{{path: {eps}}}}}\ndataLayer: {{discovery: {{pluginRef: file}}, "))
    with pytest.raises(ConfigError, match=re.escape(refused)):  # --endpoints-file at start-up
        Epp(EppOptions(grpc_host="127.0.0.1", grpc_port=0, grpc_health_port=0, metrics_port=None,
                       config_text=text, endpoints_file=str(eps)))


def test_a_models_source_feeding_its_extractor_tells_the_router_where_to_poll():
    r = router("plugins:\n" + MODELS % "{path: /models, interval: 5s}" + MODELS_WIRED)
    assert r["modelsSource"] == {"path": "/models", "intervalMs": 5000}
    assert router("plugins:\n" + MODELS % "{}" + MODELS_WIRED)["modelsSource"] == {"path": "/v1/models"}
    assert "modelsSource" not in router("dataLayer: {injectDefaults: true}")
    # Over https upstream does not verify the server unless told to (insecureSkipVerify: false).
    assert router("plugins:\n" + MODELS % "{scheme: https}" + MODELS_WIRED)["modelsSource"] == \
        {"path": "/v1/models", "tls": {"insecureSkipVerify": True}}


def test_a_metrics_source_over_https_carries_upstreams_tls_options(tmp_path):
    ca = Pki(tmp_path, "servers").ca_path  # the Router reads the bundle when the config is loaded
    r = router("plugins: [{type: metrics-data-source, parameters: {scheme: https, insecureSkipVerify: false, "
               f"caCertPath: {ca}}}}}]")
    assert r["metricsTls"] == {"insecureSkipVerify": False, "caCertPath": ca}
    assert router("plugins: [{type: metrics-data-source, parameters: {scheme: https}}]")["metricsTls"] == \
        {"insecureSkipVerify": True}
    assert "metricsTls" not in router("plugins: [{type: metrics-data-source, parameters: {scheme: http}}]")


def test_a_ca_bundle_that_skip_verify_leaves_unread_is_named_in_a_warning(tmp_path, caplog):
    ca = Pki(tmp_path, "servers").ca_path
    with caplog.at_level("WARNING", logger="sluicegate.scheduling.data_layer"):
        r = router(f"plugins: [{{type: metrics-data-source, parameters: {{scheme: https, caCertPath: {ca}}}}}]")
    assert r["metricsTls"]["insecureSkipVerify"] is True  # accepted as upstream accepts it...
    assert [m for m in caplog.messages if "parameters.caCertPath: not read while insecureSkipVerify is true" in m]


def test_each_endpoint_reports_the_models_and_adapters_its_v1_models_lists(sims):
    (sim,) = sims.start(SimConfig(model="base", loras=("sql-lora", "chat-lora")))
    wired = MODELS_WIRED.replace("dataLayer: {", "dataLayer: {injectDefaults: false, ")
    cfg = load_config(text="plugins:\n" + MODELS % "{interval: 20ms}" + wired)
    s = Scheduler(cfg)
    s.set_endpoints([Endpoint("sim-0", sim.address)])
    assert s.router.status()[0].models is None  # not polled yet
    s.router.start_scraper()
    try:
        assert wait_for(lambda: s.router.status()[0].models is not None)
    finally:
        s.router.stop_scraper()
    assert s.router.status()[0].models == ["base", "sql-lora", "chat-lora"]


def test_gpu_attribute_plugins_need_a_dcgm_source():
    text = ("plugins:\n- {type: endpoint-attribute-scorer, name: gpu, parameters: {attributeKey: GPUUtilization, "
            "producer: dcgm-extractor, algorithm: {type: linear_lower_is_better}}}\n")
    with pytest.raises(ConfigError, match=re.escape("'gpu' (endpoint-attribute-scorer) reads GPUUtilization")):
        load_config(text=text)
    assert load_config(text=text + DCGM % "{}" + DCGM_WIRED).profiles


@pytest.mark.parametrize("text, names", [
    ("dataLayer: {sources: [{pluginRef: nope}]}", "dataLayer.sources[0].pluginRef: 'nope'"),
    ("plugins: [{type: metrics-data-source}]\n"
     "dataLayer: {sources: [{pluginRef: metrics-data-source, extractors: [{pluginRef: nope}]}]}",
     "dataLayer.sources[0].extractors[0].pluginRef: 'nope'"),
    ("dataLayer: {sorces: []}", "unknown field 'sorces'"),
    ("dataLayer: {injectDefaults: maybe}", "injectDefaults: 'maybe'"),
    ("plugins: [{type: metrics-data-source, parameters: {scheme: ftp}}]", "scheme: 'ftp'"),
    ("plugins: [{type: metrics-data-source, parameters: {caCertPath: /ca.pem}}]", "caCertPath: TLS"),
    ("plugins: [{type: metrics-data-source, parameters: {path: /stats}}]", "path: '/stats'"),
    ("plugins: [{type: metrics-data-source, parameters: {intervl: 1s}}]", "unknown field 'intervl'"),
    ("plugins: [{type: metrics-data-source, parameters: {interval: soon}}]", "interval: 'soon'"),
    ("plugins: [{type: core-metrics-extractor, parameters: {defaultEngine: triton}}]", "defaultEngine: 'triton'"),
    ("plugins: [{type: core-metrics-extractor, parameters: {engineConfigs: [{name: x}]}}]", "engineConfigs"),
    ("plugins: [{name: extra, type: metrics-data-source}]", "'extra' is listed but not wired"),
    ("plugins: [{type: dcgm-data-source, parameters: {port: 9400}}]", "'dcgm-data-source' is listed but not wired"),
    ("plugins:\n" + DCGM % "{useNodeAddress: maybe}" + DCGM_WIRED, "parameters.useNodeAddress: 'maybe'"),
    ("plugins:\n" + DCGM % "{scheme: ftp}" + DCGM_WIRED, "parameters.scheme: 'ftp'"),
    ("plugins:\n" + DCGM % "{scheme: https, insecureSkipVerify: 1}" + DCGM_WIRED,
     "parameters.insecureSkipVerify: 1"),
    ("plugins:\n" + DCGM % "{port: 0}" + DCGM_WIRED, "parameters.port: 0"),
    ("plugins:\n" + DCGM % "{prot: 9400}" + DCGM_WIRED, "unknown field 'prot'"),
    ("plugins: [{type: dcgm-extractor, parameters: {metric: x}}]", "unknown field 'metric'"),
    ("plugins:\n" + DCGM % "{}" + "- {type: core-metrics-extractor}\ndataLayer: {sources: [{pluginRef: "
     "dcgm-data-source, extractors: [{pluginRef: core-metrics-extractor}]}]}", "cannot read dcgm-data-source"),
    ("plugins: [{type: models-data-source}]", "'models-data-source' is listed but not wired"),
    ("plugins:\n" + MODELS % "{scheme: ftp}" + MODELS_WIRED, "parameters.scheme: 'ftp'"),
    ("plugins:\n" + MODELS % "{scheme: https, clientKeyPath: /k.pem}" + MODELS_WIRED, "clientCertPath: required"),
    ("plugins:\n" + MODELS % "{caCertPath: /ca.pem}" + MODELS_WIRED, "parameters.caCertPath: TLS"),
    ("plugins:\n" + MODELS % "{path: v1/models}" + MODELS_WIRED, "parameters.path: 'v1/models'"),
    ("plugins:\n" + MODELS % "{interval: 0s}" + MODELS_WIRED, "parameters.interval: '0s'"),
    ("plugins: [{type: models-data-extractor, parameters: {x: 1}}]", "unknown field 'x'"),
    ("plugins: [{type: models-data-source}]\ndataLayer: {sources: [{pluginRef: models-data-source}]}",
     "feeds no models-data-extractor"),
    ("dataLayer: {peerDiscovery: {pluginRef: x}}", "dataLayer.peerDiscovery: not supported"),
])
def test_data_layer_errors_name_the_file_field_and_value(text, names):
    with pytest.raises(ConfigError, match=re.escape(names)) as e:
        load_config(text=text)
    assert str(e.value).startswith("--config-text: ")



def test_a_topology_extractor_may_be_wired_to_endpoint_notifications():
    text = ("plugins:\n- {type: endpoint-notification-source}\n- {type: topology-extractor, parameters: {rack: rack}}\n"
            "- {type: topology-affinity-scorer}\n"
            "dataLayer: {sources: [{pluginRef: endpoint-notification-source, extractors: "
            "[{pluginRef: topology-extractor}]}]}\n")
    cfg = load_config(text=text)
    assert [s.type for s in cfg.profiles[0].scorers] == ["topology-affinity-scorer"]
    with pytest.raises(ConfigError, match="parameters.rak: unknown field"):
        load_config(text=text.replace("rack: rack", "rak: rack"))


POD_SOURCE = ("plugins:\n- {type: k8s-notification-source, name: pods, parameters: %s}\n- {type: topology-extractor}\n"
              "- {type: topology-affinity-scorer}\ndataLayer: {sources: [{pluginRef: pods}]}\n")
POD = "{group: '', version: v1, kind: Pod}"


def test_a_pod_notification_source_feeds_the_topology_extractors_hostname_fallback():
    layer = load_config(text=POD_SOURCE % POD).data_layer
    assert layer.pod_hostnames and layer.k8s_sources == (("pods", "--config-text: dataLayer.sources[0].pluginRef"),)
    # Listed as its extractor: the same binding. Without any source the fallback is on too (upstream's default).
    listed = (POD_SOURCE % POD).replace("{pluginRef: pods}", "{pluginRef: pods, extractors: [{pluginRef: topology-extractor}]}")
    assert load_config(text=listed).data_layer.pod_hostnames
    assert load_config(text="plugins: [{type: topology-extractor}, {type: topology-affinity-scorer}]").data_layer.pod_hostnames
    assert not load_config(text="plugins: [{type: queue-scorer}]").data_layer.pod_hostnames


@pytest.mark.parametrize("text, names", [
    (POD_SOURCE % "{version: v1}", "parameters.kind: required"),
    (POD_SOURCE % "{kind: Pod}", "parameters.version: required"),
    (POD_SOURCE % "{version: v1, kind: Pod, namespace: x}", "unknown field 'namespace'"),
    (POD_SOURCE % "{group: apps, version: v1, kind: Deployment}", "parameters.kind: apps/v1 'Deployment': no extractor"),
    (POD_SOURCE.replace("- {type: topology-extractor}\n- {type: topology-affinity-scorer}\n", "") % POD,
     "watches Pods, but their only reader here is a topology-extractor"),
])
def test_k8s_notification_source_errors_name_the_field(text, names):
    with pytest.raises(ConfigError, match=re.escape(names)):
        load_config(text=text)


def test_k8s_notification_source_is_refused_without_kubernetes_mode(tmp_path):
    from sluicegate.app import Epp, EppOptions

    eps = tmp_path / "endpoints.yaml"
    eps.write_text("endpoints: [{name: a, address: 127.0.0.1, port: 8000}]\n")
    refused = "dataLayer.sources[0].pluginRef: k8s-notification-source 'pods' watches the Kubernetes API"
    # File discovery in the config: check-config already knows.
    in_file = ("plugins:\n- {type: k8s-notification-source, name: pods, parameters: %s}\n- {type: topology-extractor}\n"
               "- {type: file-discovery, name: file, parameters: {path: %s}}\n- {type: queue-scorer}\n"
               "dataLayer: {discovery: {pluginRef: file}, sources: [{pluginRef: pods}]}\n" % (POD, eps))
    with pytest.raises(ConfigError, match=re.escape(refused)):
        load_config(text=in_file)
    # --endpoints-file at start-up: the EPP refuses before serving.
    with pytest.raises(ConfigError, match=re.escape(refused)):
        Epp(EppOptions(grpc_host="127.0.0.1", grpc_port=0, grpc_health_port=0, metrics_port=None,
                       config_text=POD_SOURCE % POD, endpoints_file=str(eps)))
