"""Small tokenizers trained on the spot with the `tokenizers` library (nothing is downloaded),
for tests, benches and demos of token-level prefix routing. Each is written as a model directory
with tokenizer.json and a tokenizer_config.json carrying its chat template: a byte-level BPE
with a ChatML template, and a whitespace BPE whose post-processor adds a BOS token, with a
Llama-2-style template that uses bos_token and raise_exception."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

CORPUS = [
    "You are a helpful assistant. Answer the question about the weather in the city.",
    "The quick brown fox jumps over the lazy dog while the sky turns red at sunset.",
    "Shared system prompts make prefix caching pay off: many requests start the same way.",
    "user assistant system tool call result message content role",
] * 20

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
          " + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|im_start|>assistant\n' }}{% endif %}")

LLAMA2 = ("{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
          "{% set rest = messages[1:] %}{% else %}{% set system = '' %}{% set rest = messages %}{% endif %}"
          "{% for message in rest %}"
          "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
          "{{ raise_exception('roles must alternate user/assistant') }}{% endif %}"
          "{% if message['role'] == 'user' %}"
          "{{ bos_token + '[INST] ' }}{% if loop.first and system %}{{ '<<SYS>>\n' + system + '\n<</SYS>>\n\n' }}{% endif %}"
          "{{ message['content'] + ' [/INST]' }}"
          "{% else %}{{ ' ' + message['content'] + ' ' + eos_token }}{% endif %}"
          "{% endfor %}")


def _write(tok: Tokenizer, directory: Path, config: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return directory


def byte_level_chatml(directory: Path, vocab_size: int = 400, corpus: Iterable[str] = CORPUS) -> Path:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|im_start|>", "<|im_end|>", "<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    return _write(tok, directory, {"chat_template": CHATML, "eos_token": "<|im_end|>",
                                   "bos_token": None})


def whitespace_llama2(directory: Path) -> Path:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>", "[INST]", "[/INST]"])
    tok.train_from_iterator(CORPUS, trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos)])
    return _write(tok, directory, {"chat_template": LLAMA2, "bos_token": {"content": "<s>"},
                                   "eos_token": "</s>"})
