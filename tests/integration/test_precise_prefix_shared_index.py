"""Two EPP replicas share the precise prefix index through a real redis-server: model servers
publish to one replica only, and the other scores their prompts as well; with Redis stopped
each replica keeps its own index and keeps scoring (no errors); when Redis returns, sharing
resumes."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator

import pytest

from sluicegate.scheduling import Endpoint, Request, Scheduler
from sluicegate.scheduling.kv_events import REPLAY_PORT_LABEL, KvEventSubscriber
from tests.harness import RedisServer, free_port
from tests.unit.sim.test_sim import CHAT, run, sim

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed (make redis-bin)")


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _config(redis_port: int) -> str:
    return f"""
plugins:
- {{type: precise-prefix-cache-producer, parameters: {{
    tokenProcessorConfig: {{blockSize: 16}},
    kvEventsConfig: {{zmqEndpoint: "tcp://127.0.0.1:*"}},
    indexerConfig: {{kvBlockIndexConfig: {{redisConfig: {{address: "127.0.0.1:{redis_port}"}}}}}}}}}}
- {{type: prefix-cache-scorer}}
schedulingProfiles: [{{name: p, plugins: [{{pluginRef: prefix-cache-scorer}}]}}]
"""


OTHER = "10.0.0.9:8000"


def _request(content: str) -> dict:
    return {"model": "meta-llama/Llama-3.1-8B-Instruct", "max_tokens": 2,
            "messages": [{"role": "user", "content": content}]}


def _score(sched: Scheduler, body: dict, address: str) -> float:
    (profile,) = sched.schedule(Request(body), explain=True).profiles
    return dict(profile.scorers[0].scores)[address]


async def _until(check, what: str, attempts: int = 600) -> None:
    for _ in range(attempts):
        if check():
            return
        await asyncio.sleep(0.01)  # poll interval of this bounded wait
    raise AssertionError(f"never: {what}")


def test_replicas_share_the_index_fall_back_without_redis_and_recover(redis_server) -> None:
    async def body() -> None:
        replicas = [Scheduler(_config(redis_server.port)) for _ in range(2)]
        subs = [KvEventSubscriber.from_config(s.router, s.config.precise_prefix) for s in replicas]
        for sub in subs:
            sub.start()
        a, b = subs
        try:
            await _until(lambda: a.shared.up and b.shared.up, "both replicas reach Redis")
            # The simulator publishes to replica A only.
            async with sim(kv_events_endpoint=a.bound_address) as (server, session, base):
                for s in replicas:
                    s.set_endpoints([Endpoint("sim", server.address), Endpoint("other", "10.0.0.9:8000")])

                async def send(content: str) -> dict:
                    req = _request(content)
                    async with session.post(base + CHAT, json=req) as r:
                        assert r.status == 200
                    return req

                for i in range(100):  # until the simulator's connection to A has joined
                    await send(f"warm-up {i} " * 40)
                    if a.decoded[server.address]:
                        break
                    await asyncio.sleep(0.02)  # pacing: warm-up requests (bounded)
                first = await send("shared through redis " * 200)
                await _until(lambda: _score(replicas[1], first, server.address) == 1.0, "B sees A's events")
                assert b.received[server.address] == 0 and b.shared.applied > 0

                redis_server.stop()
                await _until(lambda: not a.shared.up and not b.shared.up, "both notice Redis is gone")
                second = await send("while redis is away " * 200)
                await _until(lambda: _score(replicas[0], second, server.address) == 1.0, "A indexes alone")
                assert _score(replicas[1], second, server.address) == 0.0  # B keeps its own index
                assert _score(replicas[1], first, server.address) == 1.0

                redis_server.start()
                await _until(lambda: a.shared.up and b.shared.up, "both reconnect")
                third = await send("after redis returned " * 200)
                await _until(lambda: _score(replicas[1], third, server.address) == 1.0, "sharing resumes")
                assert a.errors == 0 and b.errors == 0 and b.shared_failed == 0
        finally:
            for sub in subs:
                await sub.close()
    run(body)


def test_replicas_that_each_dial_the_server_apply_each_batch_once(redis_server) -> None:
    """Upstream's other transport with a shared index: every replica dials the server's own
    publisher, so each batch reaches a replica twice, live and from the other through Redis.
    The second copy is dropped; it used to read as the server restarting, and wipe what the
    replica held for it."""
    async def body() -> None:
        config = _config(redis_server.port).replace('zmqEndpoint: "tcp://127.0.0.1:*"', 'zmqEndpoint: ""')
        replicas = [Scheduler(config) for _ in range(2)]
        subs = [KvEventSubscriber.from_config(s.router, s.config.precise_prefix) for s in replicas]
        for sub in subs:
            sub.start()
        try:
            await _until(lambda: all(sub.shared.up for sub in subs), "both replicas reach Redis")
            async with sim(kv_events_endpoint="tcp://127.0.0.1:*") as (server, session, base):
                for s, sub in zip(replicas, subs):
                    s.set_endpoints([Endpoint("sim", server.address), Endpoint("other", "10.0.0.9:8000")])
                    sub.set_publishers({server.address: server.kv_events_address})
                for i in range(100):  # until both subscriptions have joined
                    async with session.post(base + CHAT, json=_request(f"warm-up {i} " * 40)) as r:
                        assert r.status == 200
                    if all(sub.decoded[server.address] for sub in subs):
                        break
                    await asyncio.sleep(0.02)  # pacing: warm-up requests (bounded)
                prompts = [_request(f"prompt {i} " * 150) for i in range(4)]
                for prompt in prompts:
                    async with session.post(base + CHAT, json=prompt) as r:
                        assert r.status == 200
                for s in replicas:
                    for prompt in prompts:
                        await _until(lambda: _score(s, prompt, server.address) == 1.0, "every prompt indexed")
                # Each batch is shared by the replica it reached first (a copy that comes live
                # after the shared one is not shared again): wait until every shared batch was
                # applied by the other replica.
                await _until(lambda: sum(sub.shared.applied for sub in subs) >= len(prompts)
                             and sum(sub.shared.appended for sub in subs) == sum(sub.shared.applied for sub in subs),
                             "the copies arrived")
                # Every prompt is still there once the copies came through Redis.
                for s in replicas:
                    assert [_score(s, p, server.address) for p in prompts] == [1.0] * len(prompts)
                    assert s.router.kv_event_stats()["seq_gaps"] == 0
                assert all(sub.errors == 0 and sub.shared_failed == 0 for sub in subs)
        finally:
            for sub in subs:
                await sub.close()
    run(body)


def test_a_replica_that_restarts_gets_the_history_of_servers_publishing_to_another(redis_server) -> None:
    """The server publishes to replica A; B restarts. The shared log gives B only what comes
    after, so B asks the server's replay socket for its history at once (sharing through Redis,
    B follows every server), and scores a prompt cached before it started, with no new batch."""
    async def body() -> None:
        def replica() -> tuple[Scheduler, KvEventSubscriber]:
            sched = Scheduler(_config(redis_server.port))
            sub = KvEventSubscriber.from_config(sched.router, sched.config.precise_prefix)
            sub.start()
            return sched, sub

        (_, a), subs = replica(), []
        subs.append(a)
        try:
            async with sim(kv_events_endpoint=a.bound_address, kv_events_replay_endpoint="tcp://127.0.0.1:*") as (
                    server, session, base):
                labels = {REPLAY_PORT_LABEL: server.kv_events_replay_address.rsplit(":", 1)[1]}
                prompt = _request("cached before replica B started " * 150)
                async with session.post(base + CHAT, json=prompt) as r:
                    assert r.status == 200
                b_sched, b = replica()
                subs.append(b)
                await _until(lambda: b.shared.up, "B reaches Redis")
                b_sched.set_endpoints([Endpoint("sim", server.address), Endpoint("other", OTHER)])
                b.endpoints_changed([(server.address, labels), (OTHER, {})])
                await _until(lambda: _score(b_sched, prompt, server.address) == 1.0, "B indexes the history")
                assert b.received[server.address] == 0 and b.replays[(server.address, "complete")] == 1
        finally:
            for sub in subs:
                await sub.close()
    run(body)



def test_a_server_is_asked_for_its_history_once_however_often_the_pool_names_it(redis_server) -> None:
    """Sharing through Redis, a bound replica asks every server in the pool at once; every pool
    change names them again, but a server whose replay failed is not asked again for that (only a
    gap, after the cooldown, asks again)."""
    async def body() -> None:
        sched = Scheduler(_config(redis_server.port))
        sub = KvEventSubscriber.from_config(sched.router, sched.config.precise_prefix)
        sub.start()
        try:
            endpoints = [("127.0.0.1:8000", {REPLAY_PORT_LABEL: str(free_port())})]  # nothing answers
            sub.endpoints_changed(endpoints)
            await _until(lambda: sub.replays[("127.0.0.1:8000", "failed")] == 1, "the replay failed")
            for _ in range(3):
                sub.endpoints_changed(endpoints)
            await asyncio.sleep(0.1)  # a replay started here would be running now
            assert sub.held == 0 and sum(sub.replays.values()) == 1
            assert all(stream.replay is None for stream in sub._streams.values())
        finally:
            await sub.close()
    run(body)
