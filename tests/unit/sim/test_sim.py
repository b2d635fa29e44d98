"""The simulator as a vLLM stand-in: a real SimServer on a free port, spoken to over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from sluicegate.scheduling import Scheduler
from sluicegate.sim import SimConfig, SimServer

FAST = {"speedup": 50.0}
CHAT = "/v1/chat/completions"


@contextlib.asynccontextmanager
async def sim(**overrides: Any) -> AsyncIterator[tuple[SimServer, aiohttp.ClientSession, str]]:
    server = SimServer(SimConfig(**{**FAST, **overrides}))
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield server, session, f"http://{server.address}"
    finally:
        await server.stop()


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


def chat(content: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 4, **extra}


def precise_scheduler(tokenizer: object, hash_seed: str = "42", block: int = 16) -> Scheduler:
    """A Scheduler scoring by the precise index alone: in-process tokenizer from `tokenizer`,
    vLLM-style keys at `block` tokens under `hash_seed`, one prefix-cache-scorer."""
    return Scheduler(f"""
plugins:
- {{type: token-producer, parameters: {{local: {{path: "{tokenizer}"}}}}}}
- {{type: precise-prefix-cache-producer, parameters: {{tokenProcessorConfig: {{blockSize: {block}, hashSeed: "{hash_seed}"}}}}}}
- {{type: prefix-cache-scorer}}
schedulingProfiles: [{{name: p, plugins: [{{pluginRef: prefix-cache-scorer}}]}}]
""")


async def read_sse(response: aiohttp.ClientResponse) -> list[str]:
    return [line[len("data: "):] for line in (await response.text()).split("\n\n") if line]


async def scrape(session: aiohttp.ClientSession, base: str) -> dict[str, list[Any]]:
    async with session.get(f"{base}/metrics") as response:
        text = await response.text()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


async def eventually(check: Callable[[], Awaitable[bool]], attempts: int = 400) -> None:
    for _ in range(attempts):
        if await check():
            return
        await asyncio.sleep(0.01)  # poll interval of this bounded wait
    raise AssertionError("condition never held")


def test_non_stream_chat_completion_is_well_formed() -> None:
    async def body() -> None:
        async with sim() as (server, session, base):
            async with session.post(base + CHAT, json=chat("hello", model=server.config.model)) as r:
                assert r.status == 200
                answer = await r.json()
        assert answer["object"] == "chat.completion"
        assert answer["choices"][0]["message"]["role"] == "assistant"
        assert answer["choices"][0]["finish_reason"] == "length"
        assert answer["usage"]["completion_tokens"] == 4
        assert answer["usage"]["total_tokens"] == answer["usage"]["prompt_tokens"] + 4
    run(body)


def test_stream_chunks_are_json_and_end_with_done() -> None:
    async def body() -> None:
        async with sim() as (_, session, base):
            request = {"prompt": "once upon a time", "max_tokens": 5, "stream": True}
            async with session.post(base + "/v1/completions", json=request) as r:
                assert r.headers["Content-Type"].startswith("text/event-stream")
                events = await read_sse(r)
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert "".join(c["choices"][0]["text"] for c in chunks).count(" ") == 5
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
        assert all("usage" not in c for c in chunks)
    run(body)


def test_stream_reports_usage_in_final_chunk_when_asked() -> None:
    async def body() -> None:
        async with sim() as (_, session, base):
            request = chat("hi", stream=True, stream_options={"include_usage": True})
            async with session.post(base + CHAT, json=request) as r:
                events = await read_sse(r)
        assert events[-1] == "[DONE]"
        last = json.loads(events[-2])
        assert last["choices"] == []
        assert last["usage"]["completion_tokens"] == 4
        contents = [json.loads(e)["choices"][0]["delta"].get("content") for e in events[:-2]]
        assert len([c for c in contents if c]) == 4
    run(body)


def test_responses_name_the_server_and_echo_what_it_received() -> None:
    async def body() -> None:
        async with sim(name="replica-a") as (_, session, base):
            raw = json.dumps(chat("hi", model="lora-2")).encode()
            async with session.post(base + CHAT, data=raw,
                                    headers={"Content-Type": "application/json"}) as r:
                assert r.headers["x-sim-endpoint"] == "replica-a"
                assert r.headers["x-sim-received-model"] == "lora-2"
                assert r.headers["x-sim-received-content-length"] == str(len(raw))
            async with session.get(base + "/health") as r:
                assert r.status == 200 and r.headers["x-sim-endpoint"] == "replica-a"
    run(body)


def test_server_name_defaults_to_its_address() -> None:
    async def body() -> None:
        async with sim() as (server, session, base):
            async with session.get(base + "/v1/models") as r:
                assert r.headers["x-sim-endpoint"] == server.address
    run(body)


def test_invalid_json_is_a_400_error_body() -> None:
    async def body() -> None:
        async with sim() as (_, session, base):
            async with session.post(base + CHAT, data=b"{not json") as r:
                assert r.status == 400
                assert (await r.json())["error"]["type"] == "BadRequestError"
    run(body)


def test_unknown_model_is_a_404_naming_the_model() -> None:
    async def body() -> None:
        async with sim() as (_, session, base):
            async with session.post(base + CHAT, json=chat("hi", model="nope")) as r:
                assert r.status == 404
                error = (await r.json())["error"]
        assert error["param"] == "model" and "nope" in error["message"]
    run(body)


def test_output_longer_than_context_is_a_400_naming_max_tokens() -> None:
    async def body() -> None:
        async with sim(max_model_len=256, kv_blocks=16) as (_, session, base):
            async with session.post(base + CHAT, json=chat("hi", max_tokens=1000)) as r:
                assert r.status == 400
                assert (await r.json())["error"]["param"] == "max_tokens"
    run(body)


def test_models_lists_the_base_model_and_its_adapters() -> None:
    async def body() -> None:
        async with sim(model="base", loras=("a", "b")) as (_, session, base):
            async with session.get(base + "/v1/models") as r:
                data = (await r.json())["data"]
        assert [(m["id"], m["parent"]) for m in data] == [("base", None), ("a", "base"), ("b", "base")]
    run(body)


def test_metrics_use_vllm_names_and_labels() -> None:
    async def body() -> None:
        async with sim(block_size=32, kv_blocks=300, max_loras=3) as (_, session, base):
            async with session.post(base + CHAT, json=chat("hi")) as r:
                await r.read()
            metrics = await scrape(session, base)
        for name in ("vllm:num_requests_waiting", "vllm:num_requests_running",
                     "vllm:kv_cache_usage_perc", "vllm:prefix_cache_queries",
                     "vllm:prefix_cache_hits", "vllm:num_preemptions", "vllm:request_success",
                     "vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds"):
            assert name in metrics, name
        (cache_info,) = metrics["vllm:cache_config_info"]
        assert cache_info.labels["block_size"] == "32" and cache_info.labels["num_gpu_blocks"] == "300"
        (lora_info,) = metrics["vllm:lora_requests_info"]
        assert lora_info.labels["max_lora"] == "3" and lora_info.value > 0
        ttft_count = [s for s in metrics["vllm:time_to_first_token_seconds"] if s.name.endswith("_count")]
        assert ttft_count[0].value == 1
    run(body)


def test_waiting_and_running_gauges_rise_under_concurrent_load() -> None:
    async def body() -> None:
        async with sim(max_num_seqs=2, speedup=5.0) as (_, session, base):
            async def one() -> None:
                async with session.post(base + CHAT, json=chat("hi", max_tokens=100)) as r:
                    await r.read()

            load = [asyncio.create_task(one()) for _ in range(6)]

            async def saturated() -> bool:
                metrics = await scrape(session, base)
                return (metrics["vllm:num_requests_running"][0].value == 2
                        and metrics["vllm:num_requests_waiting"][0].value >= 1
                        and metrics["vllm:kv_cache_usage_perc"][0].value > 0)

            await eventually(saturated)
            await asyncio.gather(*load)
            metrics = await scrape(session, base)
        assert metrics["vllm:num_requests_running"][0].value == 0
        assert metrics["vllm:num_requests_waiting"][0].value == 0
    run(body)


def test_repeated_long_prompt_hits_prefix_cache_and_has_lower_simulated_ttft() -> None:
    async def body() -> None:
        system = "You are a careful assistant. " * 200  # ~1500 tokens
        async with sim() as (server, session, base):
            ttft, cached = [], []
            for question in ("first question", "second question"):
                request = {"messages": [{"role": "system", "content": system},
                                        {"role": "user", "content": question}], "max_tokens": 2}
                async with session.post(base + CHAT, json=request) as r:
                    ttft.append(float(r.headers["x-sim-ttft-ms"]))
                    cached.append((await r.json())["usage"]["prompt_tokens_details"]["cached_tokens"])
            stats = server.stats()
        assert cached[0] == 0 and cached[1] >= 1400
        assert stats.prefix_hit_tokens == cached[1]
        assert ttft[1] < ttft[0] / 3  # simulated clock: gamma + delta * uncached tokens
    run(body)


def test_lora_slots_bound_the_adapters_running_at_once() -> None:
    async def body() -> None:
        async with sim(max_loras=1, speedup=5.0) as (server, session, base):
            async def one(adapter: str) -> None:
                async with session.post(base + CHAT, json=chat("hi", model=adapter, max_tokens=100)) as r:
                    assert r.status == 200
                    await r.read()

            load = [asyncio.create_task(one(a)) for a in ("lora-0", "lora-1")]

            async def one_runs_one_waits() -> bool:
                (info,) = (await scrape(session, base))["vllm:lora_requests_info"]
                running, waiting = info.labels["running_lora_adapters"], info.labels["waiting_lora_adapters"]
                assert "," not in running
                return {running, waiting} == {"lora-0", "lora-1"}

            await eventually(one_runs_one_waits)
            await asyncio.gather(*load)
        assert server.stats().lora_loads == 2
    run(body)


def test_full_kv_cache_preempts_and_still_finishes_every_request() -> None:
    async def body() -> None:
        # 8 blocks of 16 tokens: four requests growing to ~70 tokens each cannot all fit.
        async with sim(kv_blocks=8, block_size=16, max_model_len=128) as (server, session, base):
            async def one(i: int) -> int:
                async with session.post(base + CHAT, json=chat(f"request {i}", max_tokens=60)) as r:
                    return (await r.json())["usage"]["completion_tokens"]

            produced = await asyncio.gather(*(one(i) for i in range(4)))
        assert produced == [60] * 4
        assert server.stats().preemptions > 0
    run(body)


def test_same_seed_gives_same_text_and_another_seed_differs() -> None:
    async def text(seed: int) -> str:
        async with sim(seed=seed) as (_, session, base):
            async with session.post(base + CHAT, json=chat("tell me", max_tokens=12)) as r:
                return (await r.json())["choices"][0]["message"]["content"]

    async def body() -> None:
        assert await text(7) == await text(7)
        assert await text(7) != await text(8)
    run(body)


def test_fail_rate_answers_500() -> None:
    async def body() -> None:
        async with sim(fail_rate=1.0) as (server, session, base):
            async with session.post(base + CHAT, json=chat("hi")) as r:
                assert r.status == 500
        assert server.stats().requests == 0
    run(body)


def test_client_leaving_a_stream_aborts_its_request() -> None:
    async def body() -> None:
        async with sim(speedup=2.0) as (server, session, base):
            async with session.post(base + CHAT, json=chat("hi", max_tokens=500, stream=True)) as r:
                await r.content.readline()  # the stream has started
            await eventually(lambda: _true_async(server.stats().aborted == 1))
            assert server.stats().running == 0
    run(body)


async def _true_async(value: bool) -> bool:
    return value
