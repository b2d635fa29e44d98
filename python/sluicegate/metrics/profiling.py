"""--enable-pprof for this runtime: upstream mounts Go's pprof under /debug/pprof/ on the metrics
port; here the same paths give what a Python-over-Rust process can show — every thread's stack
(`goroutine`, `threads`), a sampled CPU profile of the Python threads in collapsed-stack form
(`profile?seconds=N`, ready for flamegraph.pl or speedscope), and process memory (`heap`).
The Rust request path runs outside the interpreter: profile it with perf or py-spy --native."""

from __future__ import annotations

import asyncio
import collections
import resource
import sys
import threading
import time
import traceback

from aiohttp import web

_INDEX = """/debug/pprof/ (sluicegate: Python threads; the Rust request path needs perf or py-spy --native)
  goroutine, threads   every thread's current stack
  profile?seconds=N    CPU samples of the Python threads for N s (default 10, at most 60), collapsed stacks
  heap                 resident memory and Python object counts
"""
SAMPLE_INTERVAL_S = 0.01
MAX_SECONDS = 60.0


def add_routes(app: web.Application) -> None:
    app.router.add_get("/debug/pprof/", _index)
    app.router.add_get("/debug/pprof/goroutine", _threads)
    app.router.add_get("/debug/pprof/threads", _threads)
    app.router.add_get("/debug/pprof/profile", _profile)
    app.router.add_get("/debug/pprof/heap", _heap)


async def _index(request: web.Request) -> web.Response:
    return web.Response(text=_INDEX)


def thread_stacks() -> str:
    names = {t.ident: t.name for t in threading.enumerate()}
    out = []
    for ident, frame in sys._current_frames().items():
        out.append(f"thread {names.get(ident, '?')} ({ident}):\n{''.join(traceback.format_stack(frame))}")
    return "\n".join(out)


async def _threads(request: web.Request) -> web.Response:
    return web.Response(text=thread_stacks())


def collapsed_samples(seconds: float, interval: float = SAMPLE_INTERVAL_S) -> dict[str, int]:
    """Sample every other thread's stack each `interval` for `seconds`: "a;b;c" -> count."""
    counts: collections.Counter[str] = collections.Counter()
    me = threading.get_ident()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for ident, frame in sys._current_frames().items():
            if ident == me:
                continue
            stack = traceback.extract_stack(frame)
            counts[";".join(f"{f.name} ({f.filename.rsplit('/', 1)[-1]}:{f.lineno})" for f in stack)] += 1
        time.sleep(interval)
    return dict(counts)


async def _profile(request: web.Request) -> web.Response:
    try:
        seconds = float(request.query.get("seconds", "10"))
    except ValueError:
        return web.Response(status=400, text=f"seconds: {request.query['seconds']!r} is not a number")
    if not 0 < seconds <= MAX_SECONDS:
        return web.Response(status=400, text=f"seconds: {seconds:g} is not in (0, {MAX_SECONDS:g}]")
    # The sampler runs in a worker thread, so the event loop it samples keeps running.
    counts = await asyncio.to_thread(collapsed_samples, seconds)
    return web.Response(text="".join(f"{stack} {n}\n" for stack, n in sorted(counts.items())))


async def _heap(request: web.Request) -> web.Response:
    import gc

    usage = resource.getrusage(resource.RUSAGE_SELF)
    by_type = collections.Counter(type(o).__name__ for o in gc.get_objects())
    lines = [f"max_rss_kib {usage.ru_maxrss}", f"gc_objects {sum(by_type.values())}"]
    lines += [f"objects {name} {n}" for name, n in by_type.most_common(30)]
    return web.Response(text="\n".join(lines) + "\n")
