"""dcgm-data-source with `useNodeAddress: true` (the exporter as a DaemonSet, upstream's chart
default with the GPU Operator): in the EPP as `sluicegate run --pool-name` builds it, each
endpoint's GPU utilization is read from the exporter at its Pod's status.hostIP, from the samples
labelled with its Pod's name (the endpoint's name adds the rank), and the endpoint-attribute
filter routes on it. The exporter is a real https server on 127.0.0.1, the node address the test
gives its Pods."""

from __future__ import annotations

import json

import pytest

from sluicegate.errors import NoEndpointsError
from tests.harness import free_port
from tests.kube.epp import start_in_process
from tests.kube.objects import wait_until
from tests.tls_servers import Pki, TlsServer

pytestmark = pytest.mark.kube

APP = {"app": "gpus"}
BODY = json.dumps({"model": "m", "prompt": "hi"}).encode()
CONFIG = """
plugins:
- {type: dcgm-data-source, name: dcgm, parameters: {port: %d, useNodeAddress: true, scheme: https, interval: 20ms}}
- {type: dcgm-extractor}
- type: endpoint-attribute-filter
  name: cool
  parameters:
    attribute: GPUUtilization
    producer: dcgm-extractor
    onMissing: Fail
    algorithm: {type: threshold, threshold: {operator: LessThanOrEqual, value: 0.9}}
- {type: max-score-picker}
dataLayer:
  injectDefaults: false
  sources: [{pluginRef: dcgm, extractors: [{pluginRef: dcgm-extractor}]}]
schedulingProfiles:
- {name: default, plugins: [{pluginRef: cool}, {pluginRef: max-score-picker}]}
"""


def samples(util: dict[str, int]) -> bytes:
    """A node's exporter page: GPU utilization (percent) per pod, with DCGM's labels."""
    lines = ["# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).", "# TYPE DCGM_FI_DEV_GPU_UTIL gauge"]
    lines += [f'DCGM_FI_DEV_GPU_UTIL{{gpu="{i}",Hostname="node-1",container="vllm",namespace="llm",pod="{pod}"}} {v}'
              for i, (pod, v) in enumerate(util.items())]
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def exporter(tmp_path):
    """The node's exporter over https (its certificate not verified: upstream's default)."""
    e = TlsServer(Pki(tmp_path, "nodes"), "node-1", {"/metrics": samples({})})
    yield e
    e.stop()


def picks(epp) -> set[str]:
    try:
        return {epp.router.explain("/v1/completions", BODY)[0].primary for _ in range(10)}
    except NoEndpointsError:
        return set()


def test_each_endpoint_reads_its_pods_gpus_from_the_exporter_on_its_node(kube, control_plane, loop_thread,
                                                                          exporter):
    exporter.bodies["/metrics"] = samples({"gpu-a": 95, "gpu-b": 20})
    ports = {"gpu-a": free_port(), "gpu-b": free_port()}
    kube.create_pool("pool", APP, list(ports.values()))
    epp = start_in_process(loop_thread, control_plane, kube.ns, CONFIG % exporter.port)
    try:
        for name, port in ports.items():
            kube.ready_pod(name, APP, "127.0.0.1", annotations={"llm-d.ai/active-ports": str(port)},
                           host_ip="127.0.0.1")
        at = {n: f"127.0.0.1:{p}" for n, p in ports.items()}
        # gpu-a runs hot: only gpu-b passes the filter.
        assert wait_until(lambda: picks(epp) == {at["gpu-b"]}, timeout=20, what="gpu-b alone picked")
        assert {s.name for s in epp.router.status()} == {"gpu-a-rank-0", "gpu-b-rank-1"}  # rank: the port's index
        exporter.bodies["/metrics"] = samples({"gpu-a": 10, "gpu-b": 97})  # and the other way round
        assert wait_until(lambda: picks(epp) == {at["gpu-a"]}, timeout=20, what="gpu-a alone picked")
        assert all(not s.source_errors for s in epp.router.status())
    finally:
        loop_thread.run(epp.stop(0))
