"""Value syntax of the upstream EPP's Go flags (pflag), so its chart's argument lists parse here
unchanged: durations (`50ms`, `1m30s`), sizes (`4194304`, `10MiB`, `25MB`), booleans (`=false`),
and the klog-style verbosity `-v=N` / `--v=N` / `-v N`, which argparse cannot spell on its own."""

from __future__ import annotations

import argparse
import re

_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def duration(value: str) -> float:
    """Seconds from a Go duration (`50ms`, `1m30s`, `-1.5h`, `0`). A bare number is seconds, the
    form sluicegate's own flags always took."""
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    sign, body = (-1.0, text[1:]) if text.startswith("-") else (1.0, text.lstrip("+"))
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(body):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if not body or pos != len(body):
        raise argparse.ArgumentTypeError(f"{value!r} is not a duration (Go syntax: 300ms, 30s, 1m30s, 2h)")
    return sign * total


_QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)|[eE]([+-]?[0-9]+))?")
_QUANTITY_SCALE = {None: 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
                   "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
                   "P": 10**15, "E": 10**18}


def size_bytes(value: str) -> int:
    """Bytes from a Kubernetes quantity with an optional trailing `B`, as upstream's message-size
    flags take them: `4194304`, `10MiB`, `25MB`, `1Gi`, `4e6`. Fractions round up."""
    text = value.strip()
    if len(text) > 1 and text[-1] in "Bb":
        text = text[:-1]
    m = _QUANTITY.fullmatch(text)
    if m is None:
        raise argparse.ArgumentTypeError(f"{value!r} is not a size (e.g. 4194304, 10MiB, 25MB, 1Gi)")
    number, suffix, exponent = m.groups()
    scaled = float(number) * (10 ** int(exponent) if exponent else _QUANTITY_SCALE[suffix])
    n = int(scaled) if scaled == int(scaled) else int(scaled) + 1
    if n > 2**63 - 1:
        raise argparse.ArgumentTypeError(f"{value!r} overflows a 64-bit size")
    return n


def boolean(value: str) -> bool:
    """Go's strconv.ParseBool, plus yes/no/on/off: `--secure-serving=false`."""
    v = value.strip().lower()
    if v in ("1", "t", "true", "yes", "on"):
        return True
    if v in ("0", "f", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def add_bool(parser: argparse.ArgumentParser, name: str, default: bool, help: str | None = None) -> None:
    """`--name` (true), `--name=false`, `--name true`: every way pflag and our chart spell a bool."""
    parser.add_argument(name, type=boolean, nargs="?", const=True, default=default, metavar="BOOL", help=help)


_V_SHORT = re.compile(r"-(v+)")


def normalize_verbosity(argv: list[str]) -> list[str]:
    """Rewrite the klog verbosity spellings into `--v=N`: `-v=N`, `-v N` (pflag's shorthand with
    a value), and sluicegate's older `-v` / `-vv` / `--verbose` counts (3 = verbose info, 4 = debug)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-v=") or arg.startswith("-v") and arg[2:].isdigit():
            out.append("--v=" + arg[3:] if arg.startswith("-v=") else "--v=" + arg[2:])
        elif arg == "-v" and i + 1 < len(argv) and argv[i + 1].lstrip("-").isdigit():
            out.append("--v=" + argv[i + 1])
            i += 1
        elif (m := _V_SHORT.fullmatch(arg)) or arg == "--verbose":
            out.append(f"--v={2 + (len(m.group(1)) if m else 1)}")
        elif arg == "--":
            out.extend(argv[i:])
            break
        else:
            out.append(arg)
        i += 1
    return out
