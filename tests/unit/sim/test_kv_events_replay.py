"""KV-event replay, as vLLM serves it (`replay_endpoint`, a ZMQ ROUTER keeping the last batches)
and as the EPP asks for it (`kvEventsConfig.podDiscoveryConfig.replaySocketPort`): a subscriber
that joins after the engine cached a prompt, or that loses batches on the live stream, still
indexes every block; a replay socket that does not answer costs nothing but a warning. Real
simulators, real ZMQ sockets, the real Rust index."""

from __future__ import annotations

import asyncio
import logging

import msgpack
import pytest
import zmq
import zmq.asyncio

from sluicegate.scheduling import Endpoint, Scheduler
from sluicegate.scheduling.kv_events import PORT_LABEL, REPLAY_PORT_LABEL, KvEventSubscriber, replay_url
from sluicegate.sim.kv_events import END_SEQ
from tests.harness import free_port
from tests.unit.sim.test_sim import CHAT, run, sim
from tests.unit.sim.test_sim_kv_events import PRECISE, _prefix_scores, _request, _until

EVENTS = {"kv_events_endpoint": "tcp://127.0.0.1:*", "kv_events_replay_endpoint": "tcp://127.0.0.1:*"}
OTHER = "10.0.0.9:8000"


def _port(url: str) -> str:
    return url.rsplit(":", 1)[1]


async def _ask(url: str, start: bytes) -> list[list[bytes]]:
    """One replay request from a DEALER, as the EPP sends it; every reply up to the end marker."""
    sock = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(url)
    replies = []
    try:
        await sock.send_multipart([b"", start])
        for _ in range(1000):
            frames = await asyncio.wait_for(sock.recv_multipart(), 5)
            replies.append(frames)
            if frames[-1] == b"":
                return replies
        raise AssertionError("no end marker after 1000 replies")
    finally:
        sock.close()


def test_the_replay_socket_serves_kept_batches_from_the_asked_number_as_vllm_does() -> None:
    async def body() -> None:
        async with sim(**EVENTS) as (server, session, base):
            for i in range(3):  # nobody subscribes: every batch is lost live, and kept
                async with session.post(base + CHAT, json=_request(f"kept {i} " * 200)) as r:
                    assert r.status == 200
            url = server.kv_events_replay_address
            everything = await _ask(url, (0).to_bytes(8, "big"))
            *batches, end = everything
            assert end == [b"", b"", END_SEQ, b""]
            seqs = [int.from_bytes(seq, "big") for _, _topic, seq, _ in batches]
            assert seqs == list(range(len(seqs))) and len(seqs) >= 3
            ts, events, dp_rank = msgpack.unpackb(batches[0][3])
            assert events[0][0] == "BlockStored" and dp_rank == 0
            later = await _ask(url, (2).to_bytes(8, "big"))
            assert [int.from_bytes(f[2], "big") for f in later[:-1]] == seqs[2:]
            assert await _ask(url, (10**6).to_bytes(8, "big")) == [[b"", b"", END_SEQ, b""]]
            # A request that is not 8 bytes is ignored, and the socket still answers after it.
            sock = zmq.asyncio.Context.instance().socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(url)
            try:
                await sock.send_multipart([b"", b"short"])
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(sock.recv_multipart(), 0.3)
            finally:
                sock.close()
            assert len(await _ask(url, (0).to_bytes(8, "big"))) == len(everything)
    run(body)


def test_a_subscriber_that_joins_after_the_engine_cached_a_prompt_indexes_it_from_the_replay() -> None:
    """What an EPP restart looks like: the engine cached the prompt while nobody listened, and no
    new batch follows. The subscriber asks the replay socket at once and indexes it."""
    async def body() -> None:
        async with sim(**EVENTS) as (server, session, base):
            prompt = _request("cached before the EPP started " * 60)
            async with session.post(base + CHAT, json=prompt) as r:
                assert r.status == 200
            sched = Scheduler(PRECISE)
            sched.set_endpoints([Endpoint("sim", server.address), Endpoint("other", OTHER)])
            assert _prefix_scores(sched, prompt)[server.address] == 0.0
            subscriber = KvEventSubscriber(sched.router)
            try:
                subscriber.endpoints_changed([(server.address, {
                    PORT_LABEL: _port(server.kv_events_address),
                    REPLAY_PORT_LABEL: _port(server.kv_events_replay_address)})])
                await _until(lambda: _prefix_scores(sched, prompt)[server.address] == 1.0, "prompt indexed")
                assert subscriber.received[server.address] == 0  # nothing came live
                assert subscriber.replays[(server.address, "complete")] == 1
                assert subscriber.replayed[server.address] >= 1
                assert _prefix_scores(sched, prompt)[OTHER] == 0.0
            finally:
                await subscriber.close()
    run(body)


def _bound(sched: Scheduler, replay_port: int = 0) -> KvEventSubscriber:
    subscriber = KvEventSubscriber(sched.router, "kv@", zmq_endpoint="tcp://127.0.0.1:*", replay_port=replay_port)
    subscriber.start()
    return subscriber


@pytest.mark.parametrize("replay", [True, False])
def test_batches_lost_on_the_live_stream_come_back_from_the_replay(replay: bool) -> None:
    """Half the batches never reach the bound subscriber (a network blip, a full high-water
    mark). With replay every prompt is indexed and the index sees no gap; without, it does."""
    async def body() -> None:
        sched = Scheduler(PRECISE)
        subscriber = _bound(sched)
        try:
            async with sim(kv_events_endpoint=subscriber.bound_address, kv_events_loss=0.5,
                           kv_events_replay_endpoint="tcp://127.0.0.1:*") as (server, session, base):
                sched.set_endpoints([Endpoint("sim", server.address), Endpoint("other", OTHER)])
                labels = {REPLAY_PORT_LABEL: _port(server.kv_events_replay_address)} if replay else {}
                subscriber.endpoints_changed([(server.address, labels), (OTHER, {})])
                prompts = [_request(f"prompt {i} " * 150) for i in range(12)]
                for prompt in prompts:
                    async with session.post(base + CHAT, json=prompt) as r:
                        assert r.status == 200
                engine = server._kv_events
                assert engine is not None and engine.lost > 0
                if replay:
                    # A lost last batch shows only when the next one comes: keep the engine busy.
                    for i in range(100):
                        if all(_prefix_scores(sched, p)[server.address] == 1.0 for p in prompts):
                            break
                        async with session.post(base + CHAT, json=_request(f"more {i} " * 20)) as r:
                            assert r.status == 200
                        await asyncio.sleep(0.05)  # pacing of this bounded wait
                    assert [_prefix_scores(sched, p)[server.address] for p in prompts] == [1.0] * len(prompts)
                    assert sched.router.kv_event_stats()["seq_gaps"] == 0
                    assert subscriber.replays[(server.address, "complete")] >= 1
                    assert subscriber.replays[(server.address, "failed")] == 0
                else:
                    await _until(lambda: sched.router.kv_event_stats()["seq_gaps"] > 0, "a gap seen")
                    assert any(_prefix_scores(sched, p)[server.address] < 1.0 for p in prompts)
                    assert not subscriber.replays
        finally:
            await subscriber.close()
    run(body)


def test_a_replay_socket_that_never_answers_costs_a_warning_and_no_batch(caplog) -> None:
    async def body() -> None:
        sched = Scheduler(PRECISE)
        subscriber = _bound(sched, replay_port=free_port())  # nothing listens there
        try:
            async with sim(kv_events_endpoint=subscriber.bound_address, kv_events_loss=0.5) as (
                    server, session, base):
                sched.set_endpoints([Endpoint("sim", server.address), Endpoint("other", OTHER)])
                subscriber.endpoints_changed([(server.address, {}), (OTHER, {})])
                address = server.address
                for i in range(200):  # until a gap asks for a replay, and that fails after 2 s
                    if subscriber.replays[(address, "failed")]:
                        break
                    async with session.post(base + CHAT, json=_request(f"unanswered {i} " * 40)) as r:
                        assert r.status == 200
                    await asyncio.sleep(0.05)  # pacing of the bounded loop
                assert subscriber.replays[(address, "failed")] == 1
                assert subscriber.zmq_errors[(address, "replay-no-progress")] == 1
                # Every batch that came live, before, during and after the replay, was applied.
                stream = subscriber._streams[address]
                assert not stream.held and stream.applied == stream.last["live"]
                assert subscriber.decoded[address] == subscriber.received[address] and subscriber.errors == 0
        finally:
            await subscriber.close()
        assert any("replay from" in r.getMessage() and "failed" in r.getMessage() for r in caplog.records)
    with caplog.at_level(logging.WARNING, logger="sluicegate.scheduling.kv_events"):
        run(body)


def test_a_batch_that_came_live_is_not_applied_again_from_the_shared_log_but_a_restart_is() -> None:
    """With the EPP dialling every engine and sharing through Redis, each batch arrives twice;
    the second copy is dropped. Numbers going back (the engine restarted) are indexed afresh."""
    async def body() -> None:
        async with sim(**EVENTS) as (server, session, base):
            sched = Scheduler(PRECISE)
            sched.set_endpoints([Endpoint("sim", server.address), Endpoint("other", OTHER)])
            prompt = _request("twice " * 150)
            for body_ in (prompt, _request("and another " * 100)):
                async with session.post(base + CHAT, json=body_) as r:
                    assert r.status == 200
            batches = await _ask(server.kv_events_replay_address, (0).to_bytes(8, "big"))
            assert len(batches) >= 3
            subscriber = KvEventSubscriber(sched.router)
            try:
                for _, topic, seq, payload in batches[:-1]:
                    subscriber._receive(server.address, [topic, seq, payload], "")
                assert _prefix_scores(sched, prompt)[server.address] == 1.0
                size = sched.router.kv_event_stats()["size"]
                for _, _, seq, payload in batches[:-1]:
                    subscriber._apply_shared(server.address, "", payload, int.from_bytes(seq, "big"))
                assert sched.router.kv_event_stats()["size"] == size
                assert _prefix_scores(sched, prompt)[server.address] == 1.0
                # The engine restarted and published one batch: what it held before is gone.
                restarted = msgpack.packb([0.0, [["BlockStored", [123], None, [], 16, None, "GPU", None]], 0])
                subscriber._receive(server.address, [b"", (0).to_bytes(8, "big"), restarted], "")
                assert _prefix_scores(sched, prompt)[server.address] == 0.0
                assert sched.router.kv_event_stats()["size"] == 1
            finally:
                await subscriber.close()
    run(body)


def test_the_replay_url_is_the_endpoint_host_at_the_replay_port() -> None:
    assert replay_url("10.1.2.3:8000", 5558) == "tcp://10.1.2.3:5558"
    assert replay_url("10.1.2.3:8000", 0) == ""
    assert replay_url("10.1.2.3:8000", 0, {REPLAY_PORT_LABEL: "6001"}) == "tcp://10.1.2.3:6001"
    assert replay_url("10.1.2.3:8000", 5558, {REPLAY_PORT_LABEL: "replay"}) == ""  # not a port: none
    assert replay_url("10.1.2.3:8000", 70000) == ""
    # A data-parallel rank offsets the port, as it offsets the publisher's (upstream's rule).
    assert replay_url("10.1.2.3:8001", 5558, rank=1) == "tcp://10.1.2.3:5559"
    assert replay_url("10.1.2.3:8001", 0, rank=1) == ""


def test_a_dialling_subscriber_offsets_both_ports_by_each_endpoints_rank() -> None:
    """Two data-parallel ranks of one pod (two targetPorts): each has its own publisher and
    replay socket, socketPort + rank and replaySocketPort + rank, as upstream dials them."""
    async def body() -> None:
        sched = Scheduler(PRECISE)
        subscriber = KvEventSubscriber(sched.router, socket_port=5557, replay_port=5567)
        try:
            subscriber.endpoints_changed([("10.0.0.1:8000", {}), ("10.0.0.1:8001", {})], {"10.0.0.1:8001": 1})
            assert {a: url for a, (url, _) in subscriber._tasks.items()} == {
                "10.0.0.1:8000": "tcp://10.0.0.1:5557", "10.0.0.1:8001": "tcp://10.0.0.1:5558"}
            assert subscriber._replay_url("10.0.0.1:8001") == "tcp://10.0.0.1:5568"
        finally:
            await subscriber.close()
    run(body)


def test_replies_without_a_topic_as_older_vllm_sends_them_are_read_too() -> None:
    """vLLM before topics in replies answered `[identity, b"", seq, payload]` and ended with
    `[identity, b"", END_SEQ, b""]`: a ROUTER here answers so, with batches our simulator made."""
    async def body() -> None:
        async with sim(**EVENTS) as (server, session, base):
            prompt = _request("an older engine kept this " * 60)
            async with session.post(base + CHAT, json=prompt) as r:
                assert r.status == 200
            kept = [(f[2], f[3]) for f in (await _ask(server.kv_events_replay_address, (0).to_bytes(8, "big")))[:-1]]
        older = zmq.asyncio.Context.instance().socket(zmq.ROUTER)
        older.setsockopt(zmq.LINGER, 0)
        port = older.bind_to_random_port("tcp://127.0.0.1")

        async def answer() -> None:
            identity, _, start = await older.recv_multipart()
            assert int.from_bytes(start, "big") == 0
            for seq, payload in kept:
                await older.send_multipart([identity, b"", seq, payload])
            await older.send_multipart([identity, b"", END_SEQ, b""])

        sched = Scheduler(PRECISE)
        address = "127.0.0.1:8000"  # the engine's HTTP address; its publisher is never dialled
        sched.set_endpoints([Endpoint("older", address), Endpoint("other", OTHER)])
        subscriber = KvEventSubscriber(sched.router, socket_port=free_port())
        answering = asyncio.create_task(answer())
        try:
            subscriber.endpoints_changed([(address, {REPLAY_PORT_LABEL: str(port)}), (OTHER, {})])
            await asyncio.wait_for(answering, 5)
            await _until(lambda: subscriber.replays[(address, "complete")] == 1, "the replay completed")
            assert _prefix_scores(sched, prompt)[address] == 1.0
            assert subscriber.replayed[address] == len(kept)
        finally:
            answering.cancel()
            await subscriber.close()
            older.close()
    run(body)


def test_without_a_shared_index_a_bound_subscriber_waits_for_a_servers_first_batch() -> None:
    """With the servers dialling the bound endpoint and no Redis, a server known from the pool
    may publish to another replica: it is not replayed here until its first batch comes (this
    replica would hold its history and never see its evictions)."""
    async def body() -> None:
        sched = Scheduler(PRECISE)
        subscriber = _bound(sched)
        try:
            async with sim(**EVENTS) as (server, session, base):
                sched.set_endpoints([Endpoint("sim", server.address), Endpoint("other", OTHER)])
                subscriber.endpoints_changed([
                    (server.address, {REPLAY_PORT_LABEL: _port(server.kv_events_replay_address)}), (OTHER, {})])
                await asyncio.sleep(0.3)  # longer than a replay of one server takes here
                assert not subscriber.replays and server._kv_events.replays == 0
        finally:
            await subscriber.close()
    run(body)

