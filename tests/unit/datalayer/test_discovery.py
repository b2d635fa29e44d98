"""Static endpoint discovery from a file in the upstream file-discovery shape."""

import asyncio
import json

import pytest

from sluicegate.datalayer.discovery import FileDiscovery, load_endpoints_file
from sluicegate.errors import ConfigError


def test_yaml_and_json_files_give_the_same_endpoints(tmp_path):
    y = tmp_path / "e.yaml"
    y.write_text("endpoints:\n- {name: a, address: 10.0.0.1, port: 8000, labels: {llm-d.ai/role: decode}}\n")
    j = tmp_path / "e.json"
    j.write_text(json.dumps({"endpoints": [{"name": "a", "address": "10.0.0.1", "port": 8000,
                                            "labels": {"llm-d.ai/role": "decode"}}]}))
    assert load_endpoints_file(y) == load_endpoints_file(j)
    assert load_endpoints_file(y)[0].hostport == "10.0.0.1:8000"


@pytest.mark.parametrize(
    "body, field",
    [
        ("endpoints: [{address: not_a_host!, port: 1}]", "address"),
        ("endpoints: [{address: 10.0.0.1, port: '80a'}]", "port"),
        ("endpoints: [{address: 10.0.0.1, port: 70000}]", "port"),
        ("endpoints: [{address: 10.0.0.1, port: 1, extra: 2}]", "extra"),
        ("endpoints: [{address: 10.0.0.1, port: 1}, {address: 10.0.0.1, port: 1}]", "duplicate"),
        ("[]", "endpoints"),
    ],
)
def test_bad_endpoint_files_name_the_field(tmp_path, body, field):
    f = tmp_path / "e.yaml"
    f.write_text(body)
    with pytest.raises(ConfigError, match=field):
        load_endpoints_file(f)


def test_watched_file_is_reread_and_bad_edits_keep_the_last_good_set(tmp_path):
    f = tmp_path / "e.yaml"
    f.write_text("endpoints: [{address: 10.0.0.1, port: 1}]")
    seen = []

    async def scenario():
        d = FileDiscovery(f, lambda eps: seen.append([e.hostport for e in eps]), interval=0.02)
        d.start()
        f.write_text("endpoints: [{address: 10.0.0.1, port: 1}, {address: 10.0.0.2, port: 2}]")
        for _ in range(200):
            if len(seen) >= 2:
                break
            await asyncio.sleep(0.01)  # poll interval of this bounded wait
        f.write_text("endpoints: [{address: bad!, port: 2}]")
        await asyncio.sleep(0.1)  # observation window (5 polls), not synchronisation: the bad file must change nothing
        await d.stop()

    asyncio.run(scenario())
    assert seen[:2] == [["10.0.0.1:1"], ["10.0.0.1:1", "10.0.0.2:2"]]
    assert len(seen) == 2


def test_upstream_string_ports_and_integer_ports_are_the_same_endpoint(tmp_path):
    f = tmp_path / "e.yaml"
    f.write_text('endpoints:\n- {name: a, address: "10.0.0.1", port: "8000"}\n- {name: b, address: 10.0.0.2, port: 8001}\n')
    assert [(e.address, e.port) for e in load_endpoints_file(f)] == [("10.0.0.1", 8000), ("10.0.0.2", 8001)]


def test_ipv6_endpoints_are_bracketed_on_the_wire(tmp_path):
    f = tmp_path / "e.yaml"
    f.write_text('endpoints:\n- {name: a, address: "::1", port: "8000"}\n- {name: b, address: "[fd00::2]", port: 9}\n')
    assert [e.hostport for e in load_endpoints_file(f)] == ["[::1]:8000", "[fd00::2]:9"]


def test_hostnames_are_accepted_lower_cased_and_marked_for_resolution(tmp_path):
    f = tmp_path / "e.yaml"
    f.write_text("endpoints:\n- {name: gw, address: Model-A.Example.internal., port: '443'}\n")
    (ep,) = load_endpoints_file(f)
    assert (ep.address, ep.port, ep.is_hostname, ep.hostport) == ("model-a.example.internal", 443, True,
                                                                   "model-a.example.internal:443")


@pytest.mark.parametrize("plugin_type", ["file-discovery", "multicluster-file-discovery"])
def test_upstream_discovery_plugins_name_the_endpoints_file(tmp_path, plugin_type):
    from sluicegate.scheduling.config import load_config

    f = tmp_path / "e.yaml"
    f.write_text('endpoints:\n- {name: peer, address: gw.cluster-b.example, port: "443"}\n')
    cfg = load_config(text=f"plugins:\n- {{type: {plugin_type}, name: d, parameters: {{path: {f}, watchFile: false}}}}\n"
                           "dataLayer: {discovery: {pluginRef: d}}\n")
    assert (cfg.endpoints_file, cfg.watch_file) == (str(f), False)
    assert load_endpoints_file(cfg.endpoints_file)[0].is_hostname
