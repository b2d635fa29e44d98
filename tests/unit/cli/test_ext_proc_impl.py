"""`--ext-proc-impl` picks the ext_proc server: `auto` (the default) the Rust one unless the
configuration needs the Python request path; an explicit `rust` is refused there, naming the flag."""

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


def server_class(opts: EppOptions) -> type:
    async def build_and_stop():  # grpc.aio servers are made and stopped on a running loop
        epp = Epp(opts)
        await epp.server.stop(0)
        if epp.flow is not None:
            epp.flow.close()
        return type(epp.server)

    return asyncio.run(build_and_stop())


@pytest.mark.parametrize("impl, expected", [("python", EppServer), ("rust", NativeEppServer),
                                            ("auto", NativeEppServer)])
def test_the_flag_picks_the_server(tmp_path, impl, expected):
    assert server_class(options(tmp_path, impl)) is expected


def test_auto_is_the_default_and_takes_python_for_flow_control(tmp_path):
    assert EppOptions().ext_proc_impl == "auto"
    assert build_parser().parse_args(["run"]).ext_proc_impl == "auto"
    flow = options(tmp_path, "auto", config_text="featureGates: [flowControl]\n")
    assert server_class(flow) is EppServer


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


OBJECTIVES = "objectives:\n- {name: batch, priority: -1}\n"


def test_auto_takes_python_when_objectives_give_priorities(tmp_path):
    assert server_class(options(tmp_path, "auto", config_text=OBJECTIVES)) is EppServer


def test_rust_with_objectives_is_refused_naming_the_flag(tmp_path):
    with pytest.raises(ConfigError, match="--ext-proc-impl rust: objectives"):
        Epp(options(tmp_path, "rust", config_text=OBJECTIVES))
