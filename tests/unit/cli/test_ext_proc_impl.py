"""`--ext-proc-impl` is a deprecated no-op: every configuration (flow control, objectives,
Kubernetes mode) is served by the one Rust ext_proc server; a value given logs one line."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sluicegate.app import Epp, EppOptions
from sluicegate.cli import build_parser
from sluicegate.extproc.server import EppServer
from tests.harness import write_endpoints

OBJECTIVES = "objectives:\n- {name: batch, priority: -1}\n"


def options(tmp_path, impl: str | None, **kw) -> EppOptions:
    return EppOptions(grpc_host="127.0.0.1", grpc_port=0, grpc_health_port=0, metrics_port=None,
                      secure_serving=False, endpoints_file=str(write_endpoints(tmp_path / "e.json", ["10.0.0.1:80"])),
                      ext_proc_impl=impl, **kw)


def built(opts: EppOptions) -> Epp:
    async def build_and_stop() -> Epp:
        epp = Epp(opts)
        await epp.server.stop(0)
        return epp

    return asyncio.run(build_and_stop())


@pytest.mark.parametrize("config", ["", "featureGates: [flowControl]\n", OBJECTIVES])
def test_every_configuration_is_served_by_the_rust_server(tmp_path, config):
    epp = built(options(tmp_path, None, config_text=config))
    assert type(epp.server) is EppServer
    assert (epp.flow is not None) == ("flowControl" in config)


@pytest.mark.parametrize("impl", ["python", "rust", "auto"])
def test_the_flag_is_accepted_and_logs_one_deprecation_line(tmp_path, caplog, impl):
    with caplog.at_level(logging.WARNING, logger="sluicegate.app"):
        built(options(tmp_path, impl, config_text="featureGates: [flowControl]\n"))
    lines = [r.getMessage() for r in caplog.records if "--ext-proc-impl" in r.getMessage()]
    assert len(lines) == 1 and "deprecated" in lines[0] and impl in lines[0]
    assert build_parser().parse_args(["run", "--ext-proc-impl", impl]).ext_proc_impl == impl


def test_not_given_it_logs_nothing(tmp_path, caplog):
    assert build_parser().parse_args(["run"]).ext_proc_impl is None
    with caplog.at_level(logging.WARNING, logger="sluicegate.app"):
        built(options(tmp_path, None))
    assert not [r for r in caplog.records if "--ext-proc-impl" in r.getMessage()]
