"""Child processes (Envoy, the EPP) that die with their parent and are reaped on every path.

No `preexec_fn`: Python code between fork and exec aborts a child when gRPC threads run in the
parent (seen as SIGABRT from gRPC's epoll poller). `setpriv --pdeathsig KILL` sets the same
parent-death signal from the exec side, and lets subprocess use posix_spawn.
"""

from __future__ import annotations

import os
import re
import selectors
import shutil
import subprocess
import time
from typing import Any

_SETPRIV = shutil.which("setpriv")


def spawn(argv: list[str], **popen_kwargs: Any) -> subprocess.Popen[bytes]:
    """Popen `argv`; a crashed or SIGKILLed parent must not leave the child holding its ports."""
    prefix = [_SETPRIV, "--pdeathsig", "KILL"] if _SETPRIV else []
    return subprocess.Popen(prefix + argv, **popen_kwargs)


def kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


def wait_for_line(proc: subprocess.Popen[bytes], pattern: re.Pattern[bytes], timeout_s: float) -> re.Match[bytes] | None:
    """Read the child's stdout until `pattern` matches, the child exits, or `timeout_s` passes."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(timeout=0.1):
                if proc.poll() is not None:
                    return None
                continue
            data = os.read(proc.stdout.fileno(), 4096)
            if not data:
                return None
            buf += data
            m = pattern.search(buf)
            if m:
                return m
    return None
