"""Kubernetes-mode flags: bad values are refused with an error naming the flag (no cluster needed)."""

from __future__ import annotations

import pytest

from sluicegate.errors import ConfigError
from sluicegate.kube.pool import parse_ports, parse_selector, pool_spec
from sluicegate.kube.watcher import KubeOptions


@pytest.mark.parametrize("text, message", [
    ("8000,x", "--endpoint-target-ports: 'x' is not a port number"),
    ("8000,8000", "--endpoint-target-ports: port 8000 is listed twice"),
    (",".join(str(8000 + i) for i in range(9)), "expected 1 to 8 ports, got 9"),
    ("70000", "'70000' is not a port number"),
])
def test_bad_target_ports_name_the_flag(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_ports(text)


def test_selector_is_equality_only_and_names_the_flag():
    assert parse_selector("app=vllm, tier==gold") == {"app": "vllm", "tier": "gold"}
    with pytest.raises(ConfigError, match="--endpoint-selector: 'app' is not key=value"):
        parse_selector("app")


@pytest.mark.parametrize("opts, message", [
    (KubeOptions(), "exactly one of --pool-name and --endpoint-selector"),
    (KubeOptions(pool_name="p", endpoint_selector="a=b"), "exactly one of"),
    (KubeOptions(endpoint_selector="a=b"), "--endpoint-selector needs --endpoint-target-ports"),
    (KubeOptions(pool_name="p", pool_group="example.com"), "--pool-group: 'example.com'"),
])
def test_inconsistent_options_are_refused(opts, message):
    with pytest.raises(ConfigError, match=message):
        opts.check()


def test_namespace_defaults_from_the_environment_then_default(monkeypatch):
    monkeypatch.delenv("NAMESPACE", raising=False)
    assert KubeOptions(pool_name="p").namespace == "default"
    monkeypatch.setenv("NAMESPACE", "llm")
    assert KubeOptions(pool_name="p").namespace == "llm"
    assert KubeOptions(pool_name="p", pool_namespace="given").namespace == "given"


def test_pool_without_ports_is_refused_naming_the_pool():
    with pytest.raises(ConfigError, match="InferencePool p: spec.targetPorts is empty"):
        pool_spec({"metadata": {"name": "p"}, "spec": {"selector": {"matchLabels": {"a": "b"}}, "targetPorts": []}})


def test_run_with_unreadable_kubeconfig_fails_naming_the_flag(tmp_path, capsys):
    from sluicegate.cli import main

    code = main(["run", "--pool-name", "p", "--kubeconfig", str(tmp_path / "missing"), "--grpc-port", "0",
                 "--grpc-health-port", "0", "--metrics-port", "0", "--secure-serving=false"])
    assert code == 1 and "--kubeconfig" in capsys.readouterr().err


def test_objectives_bound_through_pool_refs_count_for_each_named_pool():
    from sluicegate.kube.policies import objective_priorities

    objs = [{"metadata": {"name": "shared"}, "spec": {"priority": 4, "poolRefs": [{"name": "a"}, {"name": "b"}]}},
            {"metadata": {"name": "other"}, "spec": {"priority": 9, "poolRefs": [{"name": "c"}]}}]
    assert objective_priorities(objs, "b") == {"shared": 4}
