"""`--ext-proc-impl` picks the ext_proc server; the Rust one is refused, naming the flag, where
it lacks a feature the configuration asks for."""

from __future__ import annotations

import asyncio

import pytest

from sluicegate.app import Epp, EppOptions
from sluicegate.cli import build_parser
from sluicegate.errors import ConfigError
from sluicegate.extproc.native_server import NativeEppServer
from sluicegate.extproc.server import EppServer
from sluicegate.kube.watcher import KubeOptions
from tests.harness import write_endpoints


def options(tmp_path, impl: str, **kw) -> EppOptions:
    return EppOptions(grpc_host="127.0.0.1", grpc_port=0, grpc_health_port=0, metrics_port=None,
                      secure_serving=False, endpoints_file=str(write_endpoints(tmp_path / "e.json", ["10.0.0.1:80"])),
                      ext_proc_impl=impl, **kw)


@pytest.mark.parametrize("impl, server_class", [("python", EppServer), ("rust", NativeEppServer)])
def test_the_flag_picks_the_server(tmp_path, impl, server_class):
    async def build_and_stop():  # grpc.aio servers are made and stopped on a running loop
        epp = Epp(options(tmp_path, impl))
        await epp.server.stop(0)
        return epp.server

    assert type(asyncio.run(build_and_stop())) is server_class


def test_rust_with_flow_control_is_refused_naming_the_flag(tmp_path):
    with pytest.raises(ConfigError, match="--ext-proc-impl rust: flow control"):
        Epp(options(tmp_path, "rust", config_text="featureGates: [flowControl]\n"))


def test_rust_in_kubernetes_mode_is_refused_naming_the_flag(tmp_path):
    with pytest.raises(ConfigError, match="--ext-proc-impl rust: Kubernetes mode"):
        Epp(options(tmp_path, "rust", kube=KubeOptions(pool_name="pool")))


def test_an_unknown_impl_is_refused(tmp_path, capsys):
    with pytest.raises(ConfigError, match="--ext-proc-impl: 'go'"):
        Epp(options(tmp_path, "go"))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--ext-proc-impl", "go"])
    assert "--ext-proc-impl" in capsys.readouterr().err
