"""--metrics-endpoint-auth against a real API server: a service account's token may scrape when
RBAC grants it `get` on /metrics, and not otherwise; an unknown token never."""

from __future__ import annotations

import asyncio

import pytest
from kubernetes import client

from sluicegate.metrics.kube_auth import KubeMetricsAuth

pytestmark = pytest.mark.kube


def _token(kube, name: str) -> str:
    kube.core.create_namespaced_service_account(kube.ns, {"metadata": {"name": name}})
    req = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600))
    return kube.core.create_namespaced_service_account_token(name, kube.ns, req).status.token


def test_a_token_may_scrape_only_when_rbac_allows_get_on_metrics(kube):
    reader, other = _token(kube, "prometheus"), _token(kube, "stranger")
    rbac = client.RbacAuthorizationV1Api(kube.api)
    role = f"{kube.ns}-metrics-reader"
    rbac.create_cluster_role({"metadata": {"name": role},
                              "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]})
    rbac.create_cluster_role_binding({
        "metadata": {"name": role}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                                "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": "prometheus", "namespace": kube.ns}]})
    try:
        auth = KubeMetricsAuth(kube.api)
        assert asyncio.run(auth(reader)) is True
        assert asyncio.run(auth(other)) is False
        assert asyncio.run(auth("not-a-token")) is False
    finally:
        rbac.delete_cluster_role_binding(role)
        rbac.delete_cluster_role(role)
