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
        ("endpoints: [{address: not-an-ip, port: 1}]", "address"),
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
        f.write_text("endpoints: [{address: bad, port: 2}]")
        await asyncio.sleep(0.1)  # observation window (5 polls), not synchronisation: the bad file must change nothing
        await d.stop()

    asyncio.run(scenario())
    assert seen[:2] == [["10.0.0.1:1"], ["10.0.0.1:1", "10.0.0.2:2"]]
    assert len(seen) == 2
