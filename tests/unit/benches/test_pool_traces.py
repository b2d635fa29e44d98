"""benches.quality.pool_traces: quality traces pooled by policy over runs, tails compared with
bootstrap intervals."""

from __future__ import annotations

import json

import pytest

from benches.quality import pool_traces


def trace(policy: str, ttfts: list[float], prompt: int = 100, cached: int = 80) -> dict:
    requests = [{"ok": True, "ttft_ms": t, "prompt_tokens": prompt, "cached_tokens": cached} for t in ttfts]
    requests.append({"ok": False, "ttft_ms": 9999.0, "prompt_tokens": prompt, "cached_tokens": 0})
    summary = {"policy": policy, "ttft_p50_ms": 1.0, "ttft_p90_ms": 2.0, "ttft_p99_ms": 3.0,
               "prefix_hit_rate": cached / prompt, "moves": 4}
    return {"summary": summary, "requests": requests}


def test_pools_each_policys_answered_requests_over_runs():
    pooled = pool_traces.pool([trace("a", [1, 2]), trace("b", [5]), trace("a", [3], cached=20)])
    assert sorted(pooled) == ["a", "b"]
    assert pooled["a"].ttft_ms == [1, 2, 3]  # the failed request is left out
    assert (pooled["a"].prompt_tokens, pooled["a"].cached_tokens) == (300, 180)
    assert pooled["a"].runs == ["1.0 / 2 / 3 ms, 80.00%, 4 moves", "1.0 / 2 / 3 ms, 20.00%, 4 moves"]
    assert "hit rate 60.00%" in pooled["a"].line()
    assert pool_traces.pool([trace("c", [])])["c"].line() == "no answered requests"


def test_the_same_requests_differ_by_nothing_and_a_slower_tail_shows():
    base = [float(i % 50) for i in range(1000)]
    same = pool_traces.differences(base, list(base))
    assert all(d == 0 and lo <= 0 <= hi for d, lo, hi in same)
    slower = [t + 10 if t >= 45 else t for t in base]  # only the slowest tenth is slower
    p50, p90, p99 = pool_traces.differences(base, slower)
    assert p50[0] == 0 and p50[1] <= 0 <= p50[2]
    assert p99[0] == pytest.approx(10.0) and p99[1] > 0  # the whole interval above 0


def test_report_names_a_missing_baseline(tmp_path, capsys):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(trace("a", [1, 2, 3])))
    with pytest.raises(SystemExit, match="--baseline: no trace of policy 'sluicegate'"):
        pool_traces.main([str(path)])
    pool_traces.main(["--baseline", "a", str(path)])
    assert "a: 3 requests, TTFT" in capsys.readouterr().out


def test_hit_rates_are_compared_run_by_run():
    base = pool_traces.pool([trace("a", [1], cached=80), trace("a", [1], cached=90)])["a"]
    other = pool_traces.pool([trace("b", [1], cached=85), trace("b", [1], cached=88)])["b"]
    assert pool_traces.hit_rate_differences(base, other) == pytest.approx([5.0, -2.0])
    one_run = pool_traces.pool([trace("c", [1])])["c"]
    assert pool_traces.hit_rate_differences(base, one_run) is None  # no pairs to make
    text = pool_traces.report([trace("a", [1], cached=80), trace("b", [1], cached=85)], "a")
    assert "hit rate minus a, points, run by run: +5.00 (mean +5.00)" in text


def test_percentiles_are_compared_run_by_run_and_runs_resampled_in_pairs():
    fast, slow = [float(i % 50) for i in range(200)], [float(i % 50) + 20 for i in range(200)]
    base = pool_traces.pool([trace("a", fast), trace("a", slow)])["a"]
    other = pool_traces.pool([trace("b", slow), trace("b", slow)])["b"]
    # Run 1: b is 20 ms slower at every percentile; run 2: the same requests.
    assert pool_traces.run_differences(base, other) == [(20.0, 20.0, 20.0), (0.0, 0.0, 0.0)]
    (d50, lo50, hi50), _, _ = pool_traces.run_bootstrap(base, other)
    # Resampling runs can draw run 2 twice (no difference) or run 1 twice (20 ms): the interval
    # spans both, where resampling 400 requests would call the pooled difference certain.
    assert lo50 == 0.0 and hi50 == 20.0 and lo50 <= d50 <= hi50
    one_run = pool_traces.pool([trace("c", fast)])["c"]
    assert pool_traces.run_differences(base, one_run) is None and pool_traces.run_bootstrap(base, one_run) is None
    text = pool_traces.report([trace("a", fast), trace("b", slow)], "a")
    assert "p99 minus a, ms, run by run: +20.0 (lower in 0 of 1)" in text
    assert "runs resampled, paired (95%): p50 +20.0 [+20.0, +20.0]" in text
