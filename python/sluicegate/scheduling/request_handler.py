"""`requestHandler.parsers` (and the deprecated top-level `parser`): which parser plugins read
requests. Every reference must name a listed parser plugin; the Rust Router resolves a request's
parser by the longest path suffix each claims. No list means upstream's defaults.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError

# Parser types this build runs (every upstream one); none takes parameters. vllmgrpc-parser and
# vertexai-parser read gRPC (protobuf) bodies of HTTP/2 requests.
PARSERS = ("openai-parser", "anthropic-parser", "vllmhttp-parser", "sglanghttp-parser", "vllmgrpc-parser",
           "vertexai-parser", "passthrough-parser")
PARSER_TYPES = frozenset(PARSERS)


def check_parser_plugin(kind: str, params: Any, where: str) -> None:
    if params not in (None, {}):
        raise ConfigError(f"{where}.parameters: {kind} takes no parameters, got {params!r}")


def parser_types(doc: dict[str, Any], parsers: dict[str, str], source: str) -> list[str] | None:
    """The parser types in configured order, or None for upstream's defaults. `parsers` maps each
    listed parser plugin's name to its type."""
    handler, legacy = doc.get("requestHandler"), doc.get("parser")
    if handler is not None and legacy is not None:
        raise ConfigError(f"{source}: give requestHandler.parsers or the deprecated parser, not both")
    if legacy is not None:
        refs, where = [legacy], f"{source}: parser"
    elif handler is not None:
        if not isinstance(handler, dict):
            raise ConfigError(f"{source}: requestHandler: expected a mapping")
        unknown = sorted(set(handler) - {"parsers"})
        if unknown:
            raise ConfigError(f"{source}: requestHandler: unknown field {unknown[0]!r}")
        refs = handler.get("parsers") or []
        if not isinstance(refs, list):
            raise ConfigError(f"{source}: requestHandler.parsers: expected a list of {{pluginRef}}")
        where = f"{source}: requestHandler.parsers"
        if not refs:
            return None
    else:
        return None
    out = []
    for i, ref in enumerate(refs):
        at = where if legacy is not None else f"{where}[{i}]"
        if not isinstance(ref, dict):
            raise ConfigError(f"{at}: expected a mapping with pluginRef")
        unknown = sorted(set(ref) - {"pluginRef"})
        if unknown:
            raise ConfigError(f"{at}: unknown field {unknown[0]!r}")
        name = ref.get("pluginRef")
        if name not in parsers:
            listed = ", ".join(sorted(parsers)) or "none"
            raise ConfigError(f"{at}.pluginRef: {name!r} names no parser plugin (listed parsers: {listed})")
        out.append(parsers[name])
    return out
