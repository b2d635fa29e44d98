"""FileDiscovery.check: whoever changes the endpoints file (the static activator's scale
commands) has it read at once instead of at the next poll."""

from __future__ import annotations

import asyncio
import sys

from sluicegate.activator.static import CommandActuator, StaticActivatorSettings
from sluicegate.datalayer.discovery import FileDiscovery, write_endpoints_file


def test_check_reads_a_changed_file_at_once_and_an_unchanged_one_not_again(tmp_path):
    f = write_endpoints_file(tmp_path / "endpoints.json", ["10.0.0.1:8000"])
    seen: list[list[str]] = []
    d = FileDiscovery(f, lambda eps: seen.append([e.hostport for e in eps]), watch=False)
    d.load()
    d.check()
    assert seen == [["10.0.0.1:8000"]]
    write_endpoints_file(f, [])
    d.check()
    assert seen == [["10.0.0.1:8000"], []]


def test_a_scale_command_that_empties_the_file_is_followed_by_a_reread(tmp_path):
    f = write_endpoints_file(tmp_path / "endpoints.json", ["10.0.0.1:8000"])
    seen: list[list[str]] = []
    d = FileDiscovery(f, lambda eps: seen.append([e.hostport for e in eps]), watch=False)
    d.load()
    empty = f"import pathlib; pathlib.Path({str(f)!r}).write_text('{{\"endpoints\": []}}')"
    act = CommandActuator("pool", StaticActivatorSettings((sys.executable, "-c", "pass"),
                                                          (sys.executable, "-c", empty)))
    act.after_command = d.check
    assert asyncio.run(act.scale_down()) is True
    assert seen == [["10.0.0.1:8000"], []]
