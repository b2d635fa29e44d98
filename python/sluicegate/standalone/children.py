"""Child processes (Envoy, the EPP) that die with their parent and are reaped on every path.

No `preexec_fn`: Python code between fork and exec aborts a child when gRPC threads run in the
parent (seen as SIGABRT from gRPC's epoll poller). `setpriv --pdeathsig KILL` sets the same
parent-death signal from the exec side, and lets subprocess use posix_spawn.
"""

from __future__ import annotations

import shutil
import subprocess
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
