"""Logging set-up: one JSON object per line (what log pipelines parse), or console text for a
terminal. `sluicegate run` takes upstream's controls (klog `-v=N`, controller-runtime's `--zap-*`
flags) as `LogOptions`; other commands keep the short `-v`/`-vv` counts. Per-request lines are
debug only and carry `request_id` (Envoy's x-request-id)."""

from __future__ import annotations

import json
import logging
import time
import traceback
from dataclasses import dataclass

# Upstream's V(5)+ lines; Python has no level below DEBUG.
TRACE = 5
logging.addLevelName(TRACE, "TRACE")

# LogRecord attributes that are not user-supplied `extra` fields.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

ENCODERS = ("json", "console")
# zap's names where Python's differ
_ZAP_LEVEL_NAMES = {logging.WARNING: "warn", logging.CRITICAL: "panic"}
# --zap-log-level names (controller-runtime accepts these and integers > 0).
_LEVEL_NAMES = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR,
                "dpanic": logging.CRITICAL, "panic": logging.CRITICAL, "fatal": logging.CRITICAL}
_STACKTRACE_LEVELS = {"info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR,
                      "panic": logging.CRITICAL}
TIME_ENCODINGS = ("epoch", "millis", "nano", "iso8601", "rfc3339", "rfc3339nano")


@dataclass(frozen=True)
class LogOptions:
    """What `sluicegate run`'s logging flags ask for; None = not given on the command line."""

    verbosity: int = 2  # klog -v; upstream's default is 2
    encoder: str | None = None  # --zap-encoder; default json (--log-format text = console)
    level: str | None = None  # --zap-log-level: a name above or an integer verbosity > 0
    devel: bool | None = None  # --zap-devel: console, debug, stack traces from warn
    stacktrace_level: str | None = None  # --zap-stacktrace-level
    time_encoding: str | None = None  # --zap-time-encoding

    def resolve(self) -> tuple[str, int, int, str | None]:
        """(encoder, threshold, stacktrace threshold, time encoding), checked; errors name the flag."""
        if self.encoder is not None and self.encoder not in ENCODERS:
            raise ValueError(f"--zap-encoder: {self.encoder!r} is not one of {', '.join(ENCODERS)}")
        if self.time_encoding is not None and self.time_encoding not in TIME_ENCODINGS:
            raise ValueError(f"--zap-time-encoding: {self.time_encoding!r} is not one of {', '.join(TIME_ENCODINGS)}")
        if self.stacktrace_level is not None and self.stacktrace_level not in _STACKTRACE_LEVELS:
            raise ValueError(f"--zap-stacktrace-level: {self.stacktrace_level!r} is not one of "
                             f"{', '.join(_STACKTRACE_LEVELS)}")
        devel = bool(self.devel)
        encoder = self.encoder or ("console" if devel else "json")
        if self.level is not None:
            threshold = _zap_level(self.level)
        elif devel and self.verbosity == 2:  # --zap-devel alone: debug, as controller-runtime does
            threshold = logging.DEBUG
        else:
            threshold = level_for_v(self.verbosity)
        stack = _STACKTRACE_LEVELS[self.stacktrace_level] if self.stacktrace_level else (
            logging.WARNING if devel else logging.ERROR)
        return encoder, threshold, stack, self.time_encoding


def _zap_level(text: str) -> int:
    name = text.strip().lower()
    if name in _LEVEL_NAMES:
        return _LEVEL_NAMES[name]
    try:
        v = int(name)
    except ValueError:
        v = 0
    if v <= 0:
        raise ValueError(f"--zap-log-level: {text!r} is not one of debug, info, error, panic or an integer > 0")
    return level_for_v(v)


def level_for_v(v: int) -> int:
    """klog verbosity → Python level, as upstream's encoder names them: V(0..3) info, V(4) debug,
    V(5+) trace. A negative -v is upstream's default, 2."""
    return logging.INFO if v <= 3 else logging.DEBUG if v == 4 else TRACE


def level_for(verbosity: int) -> int:
    """The short counts of the other commands: none = warnings, -v = info, -vv = debug."""
    return logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG


def _timestamp(created: float, encoding: str | None) -> str | float | int:
    if encoding == "epoch":
        return created
    if encoding == "millis":
        return created * 1000.0
    if encoding == "nano":
        return int(created) * 10**9 + round(created % 1 * 1e9)
    if encoding == "rfc3339":
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))
    if encoding == "rfc3339nano":
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1e9):09d}Z"
    # None and iso8601: milliseconds, UTC
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    def __init__(self, time_encoding: str | None = None, stacktrace_level: int = logging.CRITICAL + 1) -> None:
        super().__init__()
        self._time = time_encoding
        self._stack = stacktrace_level

    @property
    def time_encoding(self) -> str | None:
        """--zap-time-encoding (None = iso8601), read by the Rust server to write alike."""
        return self._time

    def fields(self, record: logging.LogRecord) -> dict:
        out = {
            "ts": _timestamp(record.created, self._time),
            "level": _ZAP_LEVEL_NAMES.get(record.levelno, record.levelname.lower()),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        if record.levelno >= self._stack:
            out["stacktrace"] = _call_stack()
        return out

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(self.fields(record), ensure_ascii=False)


def _call_stack() -> str:
    """The logging call site's stack, without the frames of the logging machinery."""
    frames = [f for f in traceback.extract_stack() if f.filename not in (logging.__file__, __file__)]
    return "".join(traceback.format_list(frames))


class ConsoleFormatter(JsonFormatter):
    """zap's console layout: time, level, logger, message, then the other fields as JSON."""

    def format(self, record: logging.LogRecord) -> str:
        out = self.fields(record)
        head = [str(out.pop("ts")), out.pop("level").upper(), out.pop("logger"), out.pop("msg")]
        stack = out.pop("stacktrace", None)
        error = out.pop("error", None)
        line = "\t".join(head) + (("\t" + json.dumps(out, ensure_ascii=False)) if out else "")
        return "\n".join(x for x in (line, error, stack) if x)


def configure(opts: LogOptions) -> None:
    """Configure the root logger from `sluicegate run`'s flags."""
    encoder, threshold, stack, time_encoding = opts.resolve()
    cls = JsonFormatter if encoder == "json" else ConsoleFormatter
    _install(cls(time_encoding, stack), threshold)


def setup_logging(verbosity: int, fmt: str = "text") -> None:
    """Configure the root logger for the other commands; `fmt` is "json" or "text"."""
    if fmt not in ("json", "text"):
        raise ValueError(f"--log-format: {fmt!r} is not one of json, text")
    if fmt == "json":
        _install(JsonFormatter(), level_for(verbosity))
    else:
        _install(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"), level_for(verbosity))


def _install(formatter: logging.Formatter, level: int) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
