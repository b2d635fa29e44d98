"""Specification of the request-parsing bindings: what the router reads from a body, which
bodies are refused (BadRequestError naming the field), and how model names are rewritten."""

import json

import pytest

from sluicegate import _core
from sluicegate.errors import BadRequestError

CHAT = "/v1/chat/completions"


def chat_body(**fields) -> bytes:
    body = {"model": "llama", "messages": [{"role": "user", "content": "hello"}]}
    body.update(fields)
    return json.dumps(body).encode()


def test_chat_request_yields_routing_fields():
    req = _core.parse_request(CHAT, chat_body(stream=True, max_tokens=64, cache_salt="tenant"))
    assert req.kind == "chat_completions"
    assert req.model == "llama"
    assert req.stream is True
    assert req.max_tokens == 64
    assert req.cache_salt == "tenant"
    assert req.prompt_len > len("hello")


def test_optional_fields_default_when_absent():
    req = _core.parse_request(CHAT, chat_body())
    assert (req.stream, req.max_tokens, req.cache_salt) == (False, None, None)


@pytest.mark.parametrize(
    ("path", "body", "kind"),
    [
        ("/v1/completions", {"model": "m", "prompt": "once upon"}, "completions"),
        ("/v1/completions", {"model": "m", "prompt": [1, 2, 3]}, "completions"),
        ("/v1/embeddings", {"model": "m", "input": ["a", "b"]}, "embeddings"),
        ("/v1/responses", {"model": "m", "input": "hi", "instructions": "be brief"}, "responses"),
        ("/v1/messages", {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]},
         "anthropic_messages"),
        ("/v1/chat/completions?api-version=1", {"model": "m", "messages": [{"role": "user", "content": "x"}]},
         "chat_completions"),
    ],
)
def test_each_api_is_chosen_by_path(path, body, kind):
    req = _core.parse_request(path, json.dumps(body).encode())
    assert (req.kind, req.model) == (kind, "m")
    assert req.prompt_len > 0


def test_unknown_path_is_passthrough_and_needs_no_json():
    req = _core.parse_request("/v1/models", b"\xff not json")
    assert (req.kind, req.model, req.prompt_len) == ("passthrough", None, 0)


def test_passthrough_still_reports_a_string_model():
    assert _core.parse_request("/v1/audio/speech", b'{"model":"tts"}').model == "tts"


@pytest.mark.parametrize("body", [b"", b"   \n"])
def test_empty_body_is_refused(body):
    with pytest.raises(BadRequestError, match="body is empty"):
        _core.parse_request(CHAT, body)


def test_bad_request_error_is_a_400_value_error():
    with pytest.raises(ValueError) as info:
        _core.parse_request(CHAT, b"")
    assert info.value.status == 400


def test_invalid_utf8_is_refused_with_its_offset():
    with pytest.raises(BadRequestError, match="invalid UTF-8 at byte offset 10"):
        _core.parse_request(CHAT, b'{"model":"\xff"}')


def test_broken_json_is_refused():
    with pytest.raises(BadRequestError, match="not valid JSON"):
        _core.parse_request(CHAT, b'{"model":')


def test_json_array_is_refused():
    with pytest.raises(BadRequestError, match="must be a JSON object"):
        _core.parse_request(CHAT, b'[{"model":"m"}]')


def test_model_as_number_is_refused_naming_the_field():
    with pytest.raises(BadRequestError, match="field 'model' must be a string"):
        _core.parse_request(CHAT, chat_body(model=7))


def test_missing_model_is_refused():
    with pytest.raises(BadRequestError, match="field 'model' is required"):
        _core.parse_request(CHAT, b'{"messages":[{"role":"user","content":"x"}]}')


def test_missing_messages_is_refused():
    with pytest.raises(BadRequestError, match="field 'messages' is required"):
        _core.parse_request(CHAT, b'{"model":"m"}')


def test_empty_messages_is_refused():
    with pytest.raises(BadRequestError, match="field 'messages' must be a non-empty array"):
        _core.parse_request(CHAT, chat_body(messages=[]))


def test_non_boolean_stream_is_refused():
    with pytest.raises(BadRequestError, match="field 'stream' must be a boolean"):
        _core.parse_request(CHAT, chat_body(stream="true"))


@pytest.mark.parametrize("value", [-1, 1.5, 10**30])
def test_bad_max_tokens_is_refused(value):
    with pytest.raises(BadRequestError, match="field 'max_tokens' must be a non-negative integer"):
        _core.parse_request(CHAT, chat_body(max_tokens=value))


def test_duplicate_model_is_refused():
    body = b'{"model":"a","messages":[{"role":"user","content":"x"}],"model":"b"}'
    with pytest.raises(BadRequestError, match="duplicate field 'model'"):
        _core.parse_request(CHAT, body)


def test_deeply_nested_body_is_refused_without_crashing():
    with pytest.raises(BadRequestError):
        _core.parse_request(CHAT, b"[" * 1_000_000)


def test_ten_megabyte_body_is_parsed():
    big = "x" * (10 * 1024 * 1024)
    req = _core.parse_request(CHAT, chat_body(messages=[{"role": "user", "content": big}]))
    assert req.model == "llama"
    assert req.prompt_len >= len(big)


def test_non_bytes_body_is_a_type_error():
    with pytest.raises(TypeError):
        _core.parse_request(CHAT, "{}")  # type: ignore[arg-type]


def test_rewrite_model_keeps_every_other_byte():
    body = b'{ "temperature": 1.0e0,  "model" : "client-name", "messages": [{"role":"user","content":"x"}] }'
    out = _core.rewrite_model(body, "meta/Llama \"8B\"")
    assert out == body.replace(b'"client-name"', b'"meta/Llama \\"8B\\""')
    assert json.loads(out)["model"] == 'meta/Llama "8B"'


def test_rewrite_model_without_model_is_refused():
    with pytest.raises(BadRequestError, match="field 'model' is required"):
        _core.rewrite_model(b'{"prompt":"x"}', "m")


def test_replace_model_in_sse_chunk():
    chunk = (
        b'data: {"id":"1","model":"served","choices":[]}\n\n'
        b'data: {"id":"2","model" : "served","choices":[]}\n\ndata: [DONE]\n\n'
    )
    out = _core.replace_model_in_chunk(chunk, "served", "client")
    assert out == chunk.replace(b'"served"', b'"client"')


def test_replace_model_in_chunk_returns_the_same_object_when_absent():
    chunk = b'data: {"id":"1","model":"other"}\n\n'
    assert _core.replace_model_in_chunk(chunk, "served", "client") is chunk


def test_prefix_block_hashes_chain_full_blocks():
    prompt = b"a" * 512 + b"b" * 256 + b"tail"
    hashes = _core.prefix_block_hashes("m", None, prompt, 256)
    assert len(hashes) == 3
    assert all(isinstance(h, int) and 0 <= h < 2**64 for h in hashes)
    other = _core.prefix_block_hashes("m", None, b"a" * 512 + b"c" * 256, 256)
    assert other[:2] == hashes[:2] and other[2] != hashes[2]


def test_prefix_block_hashes_depend_on_salt():
    prompt = b"a" * 256
    assert _core.prefix_block_hashes("m", "s", prompt, 256) != _core.prefix_block_hashes("m", None, prompt, 256)


def test_prefix_block_hashes_refuse_zero_block_size():
    with pytest.raises(ValueError, match="block_bytes must be positive"):
        _core.prefix_block_hashes("m", None, b"abc", 0)
