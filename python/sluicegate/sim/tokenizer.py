"""The simulator's tokenizer, as vLLM's: a HuggingFace `tokenizer.json` from a local file or
model directory, and the chat template of `tokenizer_config.json` rendered with Jinja the way
`transformers.apply_chat_template` does (trim_blocks, lstrip_blocks, special tokens in context).
Completions are encoded with special tokens, a rendered chat without adding them again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2.sandbox
from tokenizers import Tokenizer

from sluicegate.errors import ConfigError


def _raise(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _special(config: dict[str, Any], name: str) -> str:
    token = config.get(name)
    if isinstance(token, dict):
        token = token.get("content")
    return token if isinstance(token, str) else ""


class SimTokenizer:
    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() else path
        try:
            self._tok = Tokenizer.from_file(str(file))
        except Exception as exc:  # the tokenizers library raises a bare Exception
            raise ConfigError(f"SimConfig.tokenizer={str(path)!r}: {exc}") from None
        config_path = file.parent / "tokenizer_config.json"
        config = json.loads(config_path.read_text()) if config_path.exists() else {}
        self._bos, self._eos = _special(config, "bos_token"), _special(config, "eos_token")
        self._template = None
        if isinstance(config.get("chat_template"), str):
            env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            env.globals["raise_exception"] = _raise
            self._template = env.from_string(config["chat_template"])

    def encode_prompt(self, prompt: str) -> list[int]:
        return self._tok.encode(prompt, add_special_tokens=True).ids

    def render_chat(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                    tools: Any = None) -> str:
        if self._template is None:
            raise ValueError("chat request, but tokenizer_config.json has no chat_template")
        return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                     bos_token=self._bos, eos_token=self._eos, tools=tools)

    def encode_chat(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                    tools: Any = None) -> list[int]:
        text = self.render_chat(messages, add_generation_prompt, tools)
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids)
