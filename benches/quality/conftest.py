"""Quality-bench fixtures: its size (SLUICEGATE_BENCH_QUICK), the rows every workload adds, and
the report written to benches/quality/out/ and printed at the end of the session."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from benches.quality.report import format_targets, noise, plot, table, targets

OUT = Path(__file__).parent / "out"
_ROWS = pytest.StashKey[dict[str, list[dict]]]()


@dataclass(frozen=True)
class QualitySize:
    calibrate_s: float
    run_s: float


@pytest.fixture(scope="session")
def quality_size() -> QualitySize:
    quick = os.environ.get("SLUICEGATE_BENCH_QUICK", "") not in ("", "0", "false")
    return QualitySize(calibrate_s=3.0, run_s=4.0) if quick else QualitySize(calibrate_s=9.0, run_s=30.0)


@pytest.fixture(scope="session")
def quality_rows(pytestconfig: pytest.Config) -> dict[str, list[dict]]:
    return pytestconfig.stash.setdefault(_ROWS, {})


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    rows = config.stash.get(_ROWS, {})
    if not rows:
        return
    text = "\n\n".join(table(r, name) for name, r in rows.items()) + "\n\n" + format_targets(targets(rows))
    text += "\n" + noise(rows)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "report.txt").write_text(text + "\n")
    (OUT / "results.json").write_text(json.dumps(rows, indent=2))
    png = plot(rows, OUT / "quality.png")
    terminalreporter.section("routing quality (benches/quality)")
    terminalreporter.write_line(text)
    terminalreporter.write_line(f"written: {OUT / 'report.txt'}, {OUT / 'results.json'}, {png}")
