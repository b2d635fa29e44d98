"""The EPP as a user runs it in a cluster (`sluicegate run --pool-name ...`), as a child process,
and a gRPC health probe like the kubelet's."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sluicegate.standalone.epp_process import EppProcess

# Lease timings short enough for a test, in client-go's proportions (duration > deadline > retry).
FAST_LEASE = ("--ha-lease-duration", "3", "--ha-renew-deadline", "2", "--ha-retry-period", "0.5")


class KubeEpp(EppProcess):
    def __init__(self, kubeconfig, namespace: str, *extra: str, pool: str = "pool") -> None:
        super().__init__("-", "--kubeconfig", str(kubeconfig), "--pool-name", pool, "--pool-namespace", namespace,
                         "--metrics-port", "0", "--metrics-endpoint-auth=false", "-v", *extra)
        i = self.args.index("--endpoints-file")
        del self.args[i:i + 2]  # endpoints come from the API server


def health(port: int, service: str = "readiness") -> str:
    """SERVING / NOT_SERVING, or UNAVAILABLE when nothing answers."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        try:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        except grpc.RpcError:
            return "UNAVAILABLE"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


def start_in_process(loop_thread, control_plane, namespace: str, config_text: str, pool: str = "pool"):
    """The EPP as `sluicegate run --pool-name` builds it, in this process on `loop_thread`, so a
    test can read its Router; the caller stops it with `loop_thread.run(epp.stop(0))`."""
    from sluicegate.app import Epp, EppOptions
    from sluicegate.kube.watcher import KubeOptions

    opts = EppOptions(grpc_host="127.0.0.1", grpc_port=0, grpc_health_port=0, secure_serving=False,
                      metrics_port=None, drain_timeout_s=0, config_text=config_text,
                      kube=KubeOptions(pool_name=pool, pool_namespace=namespace,
                                       kubeconfig=str(control_plane.apiserver.kubeconfig)))

    async def start() -> Epp:
        epp = Epp(opts)
        await epp.start()
        return epp

    return loop_thread.run(start())
