"""Where two rows of one quality run lose prefix-cache hits, request by request:
`python -m benches.quality.compare_traces out/trace-<key>-<a>.json out/trace-<key>-<b>.json`
(the traces SLUICEGATE_QUALITY_TRACE=1 writes; one seed sends the same requests in the same
order to every row). Per row: uncached prompt tokens by placement kind; then, for the requests
the two rows placed as different kinds or on which their hits differ, the sum of the
difference by (kind in a, kind in b)."""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from pathlib import Path


def _load(path: str) -> dict:
    return json.loads(Path(path).read_text())


def _row(name: str, data: dict) -> list[str]:
    reqs = [r for r in data["requests"] if r.get("ok")]
    prompt = sum(r["prompt_tokens"] for r in reqs)
    cached = sum(r["cached_tokens"] for r in reqs)
    lines = [f"{name}: {len(reqs)} requests, {prompt} prompt tokens, {cached} cached "
             f"({cached / prompt:.2%} of first admissions), summary hit rate "
             f"{data['summary']['prefix_hit_rate']:.2%}, moves {data['summary']['moves']}, "
             f"spreads {data['summary']['spreads']}"]
    by_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for r in reqs:
        k = by_kind[r["kind"]]
        k[0] += 1
        k[1] += r["prompt_tokens"]
        k[2] += r["prompt_tokens"] - r["cached_tokens"]
    for kind, (n, p, missed) in sorted(by_kind.items()):
        lines.append(f"  {kind:7} {n:5} requests {p:8} prompt tokens, {missed:7} uncached")
    if data.get("index"):
        i = data["index"]
        lines.append("  index: " + ", ".join(f"{k} {i[k]}" for k in (
            "lookups", "lookup_blocks", "lookup_hits", "unknown_parents", "seq_gaps", "tokenize_failures",
            "engine_hash_mismatches") if k in i))
    return lines


def compare(a_path: str, b_path: str) -> str:
    a, b = _load(a_path), _load(b_path)
    an, bn = a["summary"]["policy"], b["summary"]["policy"]
    lines = _row(an, a) + _row(bn, b)
    diff: Counter[tuple[str, str]] = Counter()
    count: Counter[tuple[str, str]] = Counter()
    same_server = 0
    for ra, rb in zip(a["requests"], b["requests"]):
        if not (ra.get("ok") and rb.get("ok")):
            continue
        same_server += ra["address"] == rb["address"]
        d = rb["cached_tokens"] - ra["cached_tokens"]
        if d or ra["kind"] != rb["kind"]:
            diff[(ra["kind"], rb["kind"])] += d
            count[(ra["kind"], rb["kind"])] += 1
    lines.append(f"cached tokens {bn} minus {an}, by (kind in {an}, kind in {bn}):")
    for key, d in sorted(diff.items(), key=lambda kv: kv[1]):
        lines.append(f"  {key[0]:7} {key[1]:7} {count[key]:5} requests {d:+8}")
    lines.append(f"  total {sum(diff.values()):+}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(compare(sys.argv[1], sys.argv[2]))
