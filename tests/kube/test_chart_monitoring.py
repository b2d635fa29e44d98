"""The chart's monitoring option renders a ServiceMonitor that selects the EPP Service's metrics
port (with the bearer token when the EPP checks one) and ships the Grafana dashboard unchanged."""

from __future__ import annotations

import json

import pytest

from tests.kube.test_chart import BASE, CHART, helm, render  # noqa: F401 (helm is a fixture)

pytestmark = pytest.mark.kube


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def test_monitoring_off_renders_no_servicemonitor(helm):  # noqa: F811
    assert not by_kind(render(helm, "ns", BASE), "ServiceMonitor")


def test_servicemonitor_scrapes_the_services_metrics_port_with_the_token(helm):  # noqa: F811
    docs = render(helm, "ns", {**BASE, "inferenceExtension.monitoring.prometheus.enable": "true",
                               "inferenceExtension.monitoring.prometheus.interval": "15s",
                               "inferenceExtension.monitoring.prometheus.bearerTokenSecret.name": "tok"})
    (mon,) = by_kind(docs, "ServiceMonitor")
    (svc,) = [s for s in by_kind(docs, "Service") if s["metadata"]["name"] == mon["metadata"]["name"]]
    assert mon["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    (endpoint,) = mon["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]}
    assert endpoint["path"] == "/metrics" and endpoint["interval"] == "15s"
    assert endpoint["authorization"]["credentials"] == {"name": "tok", "key": "token"}
    (dash,) = [c for c in by_kind(docs, "ConfigMap") if c["metadata"]["labels"].get("grafana_dashboard") == "1"]
    shipped = json.loads((CHART / "dashboards" / "sluicegate-epp.json").read_text())
    assert json.loads(dash["data"]["sluicegate-epp.json"]) == shipped
