"""KV events end to end: a real simulator publishes vLLM-format events over ZMQ, a real SUB
socket reads them, and the precise-prefix-cache-producer index makes prefix-cache-scorer match
exactly the blocks the simulator holds — same hashes on both sides for the same request."""

from __future__ import annotations

import asyncio
import json

import msgpack
import zmq
import zmq.asyncio

from sluicegate.scheduling import Endpoint, Request, Scheduler, request_block_hashes
from sluicegate.scheduling.kv_events import KvEventSubscriber, publisher_url
from tests.unit.sim.test_sim import CHAT, run, sim

PRECISE = """
plugins:
- {type: precise-prefix-cache-producer, parameters: {blockSize: 16}}
- {type: prefix-cache-scorer}
schedulingProfiles: [{name: p, plugins: [{pluginRef: prefix-cache-scorer}]}]
"""
EVENTS = {"kv_events_endpoint": "tcp://127.0.0.1:*"}


def _request(content: str) -> dict:
    return {"model": "meta-llama/Llama-3.1-8B-Instruct", "max_tokens": 2,
            "messages": [{"role": "user", "content": content}]}


async def _until(check, what: str, attempts: int = 500) -> None:
    for _ in range(attempts):
        if check():
            return
        await asyncio.sleep(0.01)  # poll interval of this bounded wait
    raise AssertionError(f"never: {what}")


def _prefix_scores(sched: Scheduler, body: dict) -> dict[str, float]:
    (run_,) = sched.schedule(Request(body), explain=True).profiles
    return dict(run_.scorers[0].scores)


def test_published_batches_have_vllms_frames_and_event_shapes() -> None:
    async def body() -> None:
        async with sim(**EVENTS) as (server, session, base):
            sub = zmq.asyncio.Context.instance().socket(zmq.SUB)
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            sub.setsockopt(zmq.LINGER, 0)
            sub.connect(server.kv_events_address)
            try:
                payload = json.dumps(_request("x" * 4000)).encode()
                frames = None
                for _ in range(50):  # a SUB socket misses what was sent before it joined
                    async with session.post(base + CHAT, data=payload) as r:
                        assert r.status == 200
                    try:
                        frames = await asyncio.wait_for(sub.recv_multipart(), 0.2)
                        break
                    except asyncio.TimeoutError:
                        payload = json.dumps(_request(f"retry {_} " + "y" * 4000)).encode()
                assert frames is not None, "no batch was published"
            finally:
                sub.close()
        topic, seq, raw = frames
        assert topic == b"" and len(seq) == 8
        ts, events, dp_rank = msgpack.unpackb(raw)
        assert dp_rank == 0
        assert isinstance(ts, float)
        # vLLM's array form: every field without a default, extra_keys (None) left out.
        tag, hashes, parent, token_ids, block_size, lora_id, medium, lora_name = events[0]
        assert (tag, parent, token_ids, block_size, lora_id, medium, lora_name) == \
            ("BlockStored", None, [], 16, None, "GPU", None)
        assert hashes == request_block_hashes(CHAT, payload, 16)[:len(hashes)]
        assert len(hashes) >= 4000 // 64 - 1
    run(body)


def test_precise_index_follows_the_simulators_cache_including_evictions() -> None:
    async def body() -> None:
        # 64 blocks of 16 tokens: two ~2000-token prompts cannot both stay cached.
        async with sim(**EVENTS, kv_blocks=160, max_model_len=2560) as (server, session, base):
            sched = Scheduler(PRECISE)
            other = "10.0.0.9:8000"
            sched.set_endpoints([Endpoint("sim", server.address), Endpoint("other", other)])
            subscriber = KvEventSubscriber(sched.router)
            subscriber.set_publishers({server.address: server.kv_events_address})
            try:
                first = _request("first " * 1400)
                # Publish until the subscriber has joined (ZMQ's slow-joiner), then once more.
                for i in range(100):
                    async with session.post(base + CHAT, json=_request(f"warm-up {i} " * 40)) as r:
                        assert r.status == 200
                    if subscriber.batches:
                        break
                    await asyncio.sleep(0.02)  # pacing of the bounded warm-up loop
                async with session.post(base + CHAT, json=first) as r:
                    assert r.status == 200
                await _until(lambda: _prefix_scores(sched, first)[server.address] == 1.0, "first prompt indexed")
                assert _prefix_scores(sched, first)[other] == 0.0
                second = _request("second " * 1200)
                async with session.post(base + CHAT, json=second) as r:
                    assert r.status == 200
                await _until(lambda: _prefix_scores(sched, second)[server.address] == 1.0, "second indexed")
                await _until(lambda: _prefix_scores(sched, first)[server.address] < 0.5, "first evicted")
                stats = sched.router.kv_event_stats()
                assert stats["seq_gaps"] == 0 and stats["block_size_mismatches"] == 0
                assert subscriber.errors == 0
            finally:
                await subscriber.close()
    run(body)


def test_publisher_url_uses_the_endpoint_host_and_an_optional_port_label() -> None:
    assert publisher_url("10.1.2.3:8000", 5557) == "tcp://10.1.2.3:5557"
    assert publisher_url("10.1.2.3:8000", 5557, {"sluicegate.io/kv-events-port": "6000"}) == "tcp://10.1.2.3:6000"
    # The second data-parallel rank of a pod publishes one port up (vLLM binds one per rank).
    assert publisher_url("10.1.2.3:8001", 5557, rank=1) == "tcp://10.1.2.3:5558"


def test_a_bound_subscriber_takes_map_encoded_events_from_simulators_that_dial_it() -> None:
    """Upstream's transport: the EPP binds, each server dials it and names itself in the topic
    `kv@<address>@<model>`; here with vLLM's newer named-field encoding."""
    async def body() -> None:
        sched = Scheduler(PRECISE)
        subscriber = KvEventSubscriber(sched.router, "kv@", zmq_endpoint="tcp://127.0.0.1:*")
        subscriber.start()
        try:
            async with sim(kv_events_endpoint=subscriber.bound_address, kv_events_encoding="map") as (
                    server, session, base):
                sched.set_endpoints([Endpoint("sim", server.address), Endpoint("other", "10.0.0.9:8000")])
                for i in range(100):
                    async with session.post(base + CHAT, json=_request(f"warm-up {i} " * 40)) as r:
                        assert r.status == 200
                    if subscriber.decoded[server.address]:
                        break
                    await asyncio.sleep(0.02)  # pacing: warm-up requests (bounded)
                prompt = _request("bound " * 900)
                async with session.post(base + CHAT, json=prompt) as r:
                    assert r.status == 200
                await _until(lambda: _prefix_scores(sched, prompt)[server.address] == 1.0, "prompt indexed")
                assert _prefix_scores(sched, prompt)["10.0.0.9:8000"] == 0.0
                assert subscriber.failed[server.address] == 0 and subscriber.errors == 0
        finally:
            await subscriber.close()
    run(body)
