"""Two `sluicegate run` replicas behind one real Envoy (one EPP cluster, two hosts), sharing the
precise prefix index through a real redis-server: vLLM-style simulators publish their KV events
to one replica or the other (as vLLMs behind a Service would), and the lookup hit rate the
replicas report on /metrics stays within 5% of one EPP's on the same workload. With Redis
stopped mid-run both replicas keep routing from their own index with no error, and when Redis
returns they share again."""

from __future__ import annotations

import json
import random
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sluicegate.sim.config import SimConfig
from sluicegate.sim.toy_tokenizers import byte_level_chatml
from sluicegate.standalone import EnvoyOptions, EnvoyProcess, EppReplica
from sluicegate.standalone.epp_process import EppProcess
from tests.harness import RedisServer, free_port, free_port_to_dial_early, http_request, scrape, total, wait_until

pytestmark = [pytest.mark.envoy,
              pytest.mark.skipif(shutil.which("redis-server") is None,
                                 reason="redis-server is not installed (make redis-bin)")]

CHAT = "/v1/chat/completions"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
GROUPS = 12
PER_GROUP = 12
SERVERS = 4
HITS = "llm_d_epp_kv_cache_index_lookup_hits_total"
BLOCKS = "sluicegate_kv_cache_index_lookup_blocks_total"
WORDS = ("cache prefix token block router envoy replica index shared model server request "
         "latency queue system prompt assistant answer").split()


def _config(tokenizer: Path, zmq_port: int, redis_port: int | None) -> str:
    indexer = (f', indexerConfig: {{kvBlockIndexConfig: {{redisConfig: {{address: "127.0.0.1:{redis_port}"}}}}}}'
               if redis_port else "")
    return f"""
plugins:
- {{type: token-producer, parameters: {{local: {{path: "{tokenizer}"}}}}}}
- {{type: precise-prefix-cache-producer, parameters: {{
    tokenProcessorConfig: {{blockSize: 16, hashSeed: "42"}},
    kvEventsConfig: {{zmqEndpoint: "tcp://127.0.0.1:{zmq_port}"}}{indexer}}}}}
- {{type: prefix-cache-scorer}}
- {{type: queue-scorer}}
- {{type: max-score-picker}}
schedulingProfiles:
- name: p
  plugins: [{{pluginRef: prefix-cache-scorer, weight: 3}}, {{pluginRef: queue-scorer, weight: 1}},
            {{pluginRef: max-score-picker}}]
"""


def _workload(seed: int) -> list[str]:
    """GROUPS system prompts of ~1.5k characters, PER_GROUP requests each (own question), shuffled."""
    rng = random.Random(seed)
    prompts = [f"group {g}: " + " ".join(rng.choice(WORDS) for _ in range(220)) for g in range(GROUPS)]
    requests = [f"{prompts[g]}\n\nquestion {g}.{i}: {rng.random()}" for g in range(GROUPS) for i in range(PER_GROUP)]
    rng.shuffle(requests)
    return requests


def _post(url: str, content: str) -> int:
    body = {"model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": content}]}
    status, _, data = http_request(url, CHAT, json.dumps(body).encode())
    assert status == 200, data[:200]
    return status


class Stack:
    """`replicas` EPPs (each binding its own ZMQ endpoint) behind one Envoy, and SERVERS
    simulators publishing round-robin to the replicas' endpoints; `stop` stops them all."""

    def __init__(self, sims, tmp_path: Path, tokenizer: Path, replicas: int, redis_port: int | None) -> None:
        self.epps: list[EppProcess] = []
        self.envoy: EnvoyProcess | None = None
        self._sims = sims
        tmp_path.mkdir()
        zmq_ports = [free_port_to_dial_early() for _ in range(replicas)]
        # The simulators dial before the EPPs bind: ZMQ keeps retrying, as vLLM's does.
        self.servers = sims.start(*(SimConfig(
            name=f"sim-{i}", speedup=50.0, kv_events_endpoint=f"tcp://127.0.0.1:{zmq_ports[i % replicas]}",
            kv_events_encoding="map", tokenizer=str(tokenizer), hash_seed="42") for i in range(SERVERS)))
        endpoints = [{"name": s.name, "address": s.address.split(":")[0], "port": int(s.address.split(":")[1])}
                     for s in self.servers]
        (tmp_path / "endpoints.json").write_text(json.dumps({"endpoints": endpoints}))
        try:
            for r, port in enumerate(zmq_ports):
                config = tmp_path / f"epp-{r}.yaml"
                config.write_text(_config(tokenizer, port, redis_port))
                self.epps.append(EppProcess(tmp_path / "endpoints.json", "--config-file", str(config),
                                            log_path=tmp_path / f"epp-{r}.log").start())
            first, *more = self.epps
            opts = EnvoyOptions(listen_port=0, admin_port=0, listen_address="127.0.0.1", epp_port=first.port,
                                epp_health_port=first.health_port, epp_tls=False, concurrency=1,
                                epp_replicas=tuple(EppReplica("127.0.0.1", e.port, e.health_port) for e in more))
            self.envoy = EnvoyProcess(opts, wait_epp_healthy=True).start_blocking()
        except BaseException:
            self.stop()
            raise

    def metrics(self) -> list[dict[str, float]]:
        return [scrape(e.metrics_port) for e in self.epps]

    def warm_up(self) -> None:
        """Until every simulator's publisher has joined its EPP (ZMQ joins asynchronously):
        requests straight to each simulator until its events are counted."""
        for server in self.servers:
            def joined(server=server) -> bool:
                _post(f"http://{server.address}", f"warm-up {random.random()} " * 20)
                return any(total(m, "llm_d_epp_kv_cache_events_messages_received_total", pod_identifier=server.address) > 0
                           for m in self.metrics())
            wait_until(joined, timeout=30, interval=0.05, what=f"{server.name}'s events reach an EPP")

    def hit_rate(self, requests: list[str]) -> float:
        """Send `requests` through Envoy (4 at a time); blocks the best endpoint held over blocks
        looked up, summed over the replicas, for these requests only."""
        before = self.metrics()
        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(lambda c: _post(self.envoy.url, c), requests)) == [200] * len(requests)
        after = self.metrics()
        hits = sum(total(a, HITS) - total(b, HITS) for a, b in zip(after, before))
        blocks = sum(total(a, BLOCKS) - total(b, BLOCKS) for a, b in zip(after, before))
        assert blocks > 0
        return hits / blocks

    def stop(self) -> None:
        if self.envoy is not None:
            self.envoy.stop_blocking()
        for e in self.epps:
            e.stop()
        for s in self.servers:
            self._sims.stop(s)


@pytest.fixture
def redis_server():
    server = RedisServer(free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _requests_per_epp(stack: Stack) -> list[float]:
    return [total(m, "llm_d_epp_request_total") for m in stack.metrics()]


def test_two_replicas_sharing_redis_keep_one_epps_hit_rate_and_survive_a_redis_outage(sims, tmp_path, redis_server):
    tokenizer = byte_level_chatml(tmp_path / "tok")
    work = _workload(seed=19)

    one = Stack(sims, tmp_path / "one", tokenizer, replicas=1, redis_port=None)
    try:
        one.warm_up()
        rate_one = one.hit_rate(work)
    finally:
        one.stop()

    # The same two replicas without Redis each know half the servers' caches: the workload
    # shows what sharing is worth (else "within 5%" would say nothing).
    apart = Stack(sims, tmp_path / "apart", tokenizer, replicas=2, redis_port=None)
    try:
        apart.warm_up()
        rate_apart = apart.hit_rate(work)
    finally:
        apart.stop()
    assert rate_apart < 0.95 * rate_one

    two = Stack(sims, tmp_path / "two", tokenizer, replicas=2, redis_port=redis_server.port)
    try:
        wait_until(lambda: all(m.get("sluicegate_kv_index_redis_up{}") == 1.0 for m in two.metrics()),
                   timeout=15, what="both replicas reach Redis")
        two.warm_up()
        rate_two = two.hit_rate(work)
        served = _requests_per_epp(two)
        print(f"hit rate: one EPP {rate_one:.3f}, two EPPs apart {rate_apart:.3f}, sharing Redis {rate_two:.3f}; "
              f"requests per replica {served}")
        # Envoy spread the streams over both replicas, and each applied the other's batches.
        assert min(served) >= 0.25 * sum(served)
        assert all(total(m, "sluicegate_kv_index_redis_batches_total", direction="applied") > 0
                   for m in two.metrics())
        assert rate_one > 0.5  # the workload shares prefixes: most blocks are found
        assert abs(rate_two - rate_one) <= 0.05 * rate_one

        # Redis goes away mid-run: requests keep flowing, none fails.
        statuses: list[int] = []
        failures: list[BaseException] = []
        stop = threading.Event()

        def send() -> None:
            rng = random.Random(7)
            while not stop.is_set() and len(statuses) < 5000:
                try:
                    statuses.append(_post(two.envoy.url, rng.choice(work)))
                except BaseException as exc:  # noqa: BLE001 — every failure is reported below
                    failures.append(exc)

        senders = [threading.Thread(target=send, name=f"sender-{i}") for i in range(2)]
        for t in senders:
            t.start()
        try:
            wait_until(lambda: len(statuses) >= 20, timeout=30, what="requests flowing")
            redis_server.stop()
            stopped = time.monotonic()
            wait_until(lambda: all(m.get("sluicegate_kv_index_redis_up{}") == 0.0 for m in two.metrics()),
                       timeout=15, what="both replicas notice Redis is gone")
            during = two.metrics()
            noticed_s = time.monotonic() - stopped
            sent = len(statuses)
            wait_until(lambda: len(statuses) >= sent + 60, timeout=60, what="requests served without Redis")
            after_outage = two.metrics()
            # Each replica kept looking up (and finding) blocks in its own index.
            for d, a in zip(during, after_outage):
                assert total(a, BLOCKS) > total(d, BLOCKS)
                assert total(a, HITS) > total(d, HITS)
            outage_requests = len(statuses) - sent
            redis_server.start()
            restarted = time.monotonic()
            wait_until(lambda: all(m.get("sluicegate_kv_index_redis_up{}") == 1.0 for m in two.metrics()),
                       timeout=20, what="both replicas reconnect")
            reconnected_s = time.monotonic() - restarted
            back = two.metrics()

            def applied_again() -> bool:
                return all(total(m, "sluicegate_kv_index_redis_batches_total", direction="applied")
                           > total(b, "sluicegate_kv_index_redis_batches_total", direction="applied")
                           for m, b in zip(two.metrics(), back))
        finally:
            stop.set()
            for t in senders:
                t.join(60)
        assert not failures, failures[:3]
        assert statuses and set(statuses) == {200}
        for m in two.metrics():
            assert total(m, "llm_d_epp_request_error_total") == 0
            assert total(m, "sluicegate_kv_events_failed_total") == 0

        # After the outage a new shared prefix learned through one replica is found by both. (The
        # outage traffic repeats prompts the servers already cache, so it may publish no new blocks:
        # the shared batches after the reconnect come from this new workload.)
        rate_after = two.hit_rate(_workload(seed=20))
        wait_until(applied_again, timeout=30, what="both replicas apply shared batches again")
        print(f"hit rate after Redis returned: {rate_after:.3f}; requests during the run {len(statuses)}, "
              f"{outage_requests}+ while Redis was away; outage noticed after {noticed_s:.2f} s, "
              f"reconnected {reconnected_s:.2f} s after Redis returned")
        assert abs(rate_after - rate_one) <= 0.05 * rate_one
    finally:
        two.stop()
