"""The routing policies compared: three a proxy has without an EPP (random, round-robin, least
outstanding requests counted by the client), and sluicegate's Router with the default profile,
with precise prefix scoring fed by the simulators' KV events, and with active-request (varied) or
LoRA affinity (lora) scoring added; on `burst`, the queue-scorer's rules for requests sent since
the last scrape."""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from sluicegate.scheduling import Endpoint, Scheduler
from sluicegate.scheduling.kv_events import KvEventSubscriber

from sluicegate.sim.config import DEFAULT_MODEL

from benches.quality.fleet import INFERENCE_SIM, FleetShape, SimFleetProcess

def _default_profile(extra_plugins: str = "", extra_refs: str = "") -> str:
    """Upstream's default profile written out, with plugins added to it."""
    return f"""
plugins:
- {{type: queue-scorer}}
- {{type: kv-cache-utilization-scorer}}
- {{type: prefix-cache-scorer}}
- {{type: max-score-picker}}
{extra_plugins}
schedulingProfiles:
- name: default
  plugins:
  - {{pluginRef: queue-scorer, weight: 2}}
  - {{pluginRef: kv-cache-utilization-scorer, weight: 2}}
  - {{pluginRef: prefix-cache-scorer, weight: 3}}
  - {{pluginRef: max-score-picker}}
{extra_refs}
"""


# The approximate scorer as it was before approx-prefix-cache-producer (sluicegate ≤ 2026-12-05),
# on this fleet: its LRU held the KV cache converted to 64-token blocks (1536 × 16 / 64 = 384),
# 256 blocks matched at most; it did not hash a trailing partial block (the one difference
# parameters cannot restore; it never matches a longer prompt of the same chat).
PREVIOUS = _default_profile().replace(
    "- {type: prefix-cache-scorer}",
    "- {type: prefix-cache-scorer, parameters: {autoTune: false, lruCapacityPerServer: 384, "
    "maxPrefixTokensToMatch: 16384}}")
# The default profile with upstream's prefix scorer: a cached prefix counts whatever the queue
# (affinityQueueSlack 0), so a hot prefix stays on the server that first cached it (the default,
# affinityQueueTokens 200, moves it only once the wait at its server outweighs its prefill).
UPSTREAM_SCORER = _default_profile().replace(
    "- {type: prefix-cache-scorer}", "- {type: prefix-cache-scorer, parameters: {affinityQueueSlack: 0}}")
# sluicegate's default until session 7: a match discounted by its server's queue depth alone.
QUEUE_SLACK = _default_profile().replace(
    "- {type: prefix-cache-scorer}", "- {type: prefix-cache-scorer, parameters: {affinityQueueSlack: 4}}")
PRECISE = _default_profile("- {type: precise-prefix-cache-producer, parameters: {blockSize: 16}}")
# upstream's no-hit-lru-scorer, weight 2 (as llm-d's optimized-baseline and precise-prefix guides
# add it to their profiles): a request no server has cached goes to the server that least
# recently took one, so the first request of each system prompt spreads the prefixes over the
# servers instead of wherever ties fall while every server is idle.
NO_HIT_LRU_PLUGIN = "- {type: no-hit-lru-scorer}"
NO_HIT_LRU_REF = "  - {pluginRef: no-hit-lru-scorer, weight: 2}"
NO_HIT_LRU = _default_profile(NO_HIT_LRU_PLUGIN, NO_HIT_LRU_REF)


def precise_tokens(shape: FleetShape, render_url: str = "", no_hit_lru: bool = False) -> str:
    """Upstream's precise pipeline against vLLM-style servers: token-producer (in-process from
    the servers' tokenizer, or through a server's render API) -> precise-prefix-cache-producer
    bound where the servers publish -> prefix-cache-scorer, with speculative indexing; with
    `no_hit_lru`, the no-hit-lru-scorer too."""
    tokens = (f'- {{type: token-producer, parameters: {{modelName: "{DEFAULT_MODEL}", vllm: {{url: "{render_url}"}}}}}}'
              if render_url else f'- {{type: token-producer, parameters: {{local: {{path: "{shape.tokenizer}"}}}}}}')
    producer = ("- {type: precise-prefix-cache-producer, parameters: {"
                f'tokenProcessorConfig: {{blockSize: 16, hashSeed: "{shape.hash_seed}"}}, '
                f'kvEventsConfig: {{zmqEndpoint: "{shape.kv_events_endpoint}"}}, '
                "speculativeIndexing: true, speculativeTTL: 2s}}")
    extra, refs = (f"\n{NO_HIT_LRU_PLUGIN}", NO_HIT_LRU_REF) if no_hit_lru else ("", "")
    return _default_profile(f"{tokens}\n{producer}{extra}", refs)


def _with_parameters(profile: str, plugin: str, params: str) -> str:
    """`profile` with `plugin`'s entry given `params` (a YAML flow mapping)."""
    return profile.replace(f"- {{type: {plugin}}}", f"- {{type: {plugin}, parameters: {params}}}")


# The default profile with the queue-scorer taking two free batch slots for granted at a server
# reporting no queue (`inFlightFreeSlots: 2`; the default counts each request sent there since
# the scrape as half of one waiting), or counting none (`inFlight: never`, upstream's scorer).
IN_FLIGHT_FREE2 = _with_parameters(_default_profile(), "queue-scorer", "{inFlightFreeSlots: 2}")
IN_FLIGHT_NEVER = _with_parameters(_default_profile(), "queue-scorer", "{inFlight: never}")
LORA_PLUGIN = "- {type: lora-affinity-scorer}"
LORA_REF = "  - {pluginRef: lora-affinity-scorer, weight: 2}"
LORA = _default_profile(LORA_PLUGIN, LORA_REF)
LORA_NO_HIT_LRU = _default_profile(f"{LORA_PLUGIN}\n{NO_HIT_LRU_PLUGIN}", f"{LORA_REF}\n{NO_HIT_LRU_REF}")
ACTIVE = _default_profile("- {type: active-request-scorer}", "  - {pluginRef: active-request-scorer, weight: 2}")


def publishers_join_s(shape: FleetShape) -> float:
    """How long after the EPP binds every server's publisher has redialled and joined: ours
    redial every 100 ms (ZMQ's reconnect interval), llm-d-inference-sim's every second."""
    return 1.5 if shape.server == INFERENCE_SIM else 0.5


class PolicyError(RuntimeError):
    """A policy could not route a request (the request fails; the run goes on)."""


class Policy:
    """A baseline policy also runs a Router that scrapes the fleet (and routes nothing), so the
    simulators carry the same /metrics load in every run: the eight servers share one process,
    and scraping costs it CPU that would otherwise count against sluicegate alone."""

    name = ""

    async def start(self, fleet: SimFleetProcess) -> None:
        self.addresses = list(fleet.addresses)
        self.scheduler = Scheduler()
        await _scrape(self.scheduler, self.addresses)

    def pick(self, path: str, body: bytes) -> str:
        raise NotImplementedError

    async def pick_async(self, path: str, body: bytes) -> str:
        return self.pick(path, body)

    async def answered(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        """The picked server's answer to the request this task routed (ext_proc policies)."""

    def done(self, address: str) -> None:
        pass

    async def stop(self) -> None:
        self.scheduler.router.stop_scraper()


async def _scrape(scheduler: Scheduler, addresses: list[str]) -> None:
    """Point the Router at the fleet, start its scraper and wait (≤ 2 s) until each is scraped."""
    scheduler.set_endpoints([Endpoint(f"sim-{i}", a) for i, a in enumerate(addresses)])
    router = scheduler.router
    router.start_scraper()
    for _ in range(200):
        if all(s.age_ms >= 0 for s in router.status()):
            return
        await asyncio.sleep(0.01)
    raise RuntimeError("the Router never scraped every simulator")


class RandomPolicy(Policy):
    name = "random"

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(f"random-policy|{seed}")

    def pick(self, path: str, body: bytes) -> str:
        return self.rng.choice(self.addresses)


class RoundRobinPolicy(Policy):
    name = "round-robin"

    async def start(self, fleet: SimFleetProcess) -> None:
        await super().start(fleet)
        self.cycle = itertools.cycle(self.addresses)

    def pick(self, path: str, body: bytes) -> str:
        return next(self.cycle)


class LeastRequestPolicy(Policy):
    """Fewest requests outstanding from this client (Envoy's LEAST_REQUEST), ties at random."""

    name = "least-queue"

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(f"least-policy|{seed}")

    async def start(self, fleet: SimFleetProcess) -> None:
        await super().start(fleet)
        self.outstanding = dict.fromkeys(self.addresses, 0)

    def pick(self, path: str, body: bytes) -> str:
        low = min(self.outstanding.values())
        address = self.rng.choice([a for a, n in self.outstanding.items() if n == low])
        self.outstanding[address] += 1
        return address

    def done(self, address: str) -> None:
        self.outstanding[address] -= 1


class SluicegatePolicy(Policy):
    """The Router as the EPP runs it: Rust scraper on the sims' /metrics, route per request,
    release when the answer is in; with `precise`, KV events feed the prefix index."""

    def __init__(self, name: str, config: str | None = None, precise: bool = False,
                 render: bool = False, edit: Callable[[str], str] | None = None) -> None:
        self.name = name
        self.config = config
        self.precise = precise
        self.render = render  # tokenize through the first server's render API
        self.edit = edit  # applied to the render profile once the fleet's address is known
        self.subscriber: KvEventSubscriber | None = None
        self.index_stats: dict[str, int] | None = None
        # Tokenizing off the event loop, as the ext_proc server does on tokio's blocking pool:
        # as many threads as requests may tokenize at once here, so none waits for a thread.
        self.threads: ThreadPoolExecutor | None = None

    async def start(self, fleet: SimFleetProcess) -> None:
        self.addresses = list(fleet.addresses)
        config = self.config
        if self.render:
            config = precise_tokens(fleet.shape, f"http://{self.addresses[0]}")
            config = self.edit(config) if self.edit else config
        self.scheduler = Scheduler(config)
        if self.precise and fleet.shape.token_level:
            # The servers dial the EPP: bind first, as the EPP does at start.
            self.subscriber = KvEventSubscriber.from_config(self.scheduler.router, self.scheduler.config.precise_prefix)
            self.subscriber.start()
            # They redial until the bind: events sent before a server's connection and
            # subscription join are dropped, and every later BlockStored continuing a dropped
            # chain is skipped (unknown parent) until the server evicts it. A production EPP
            # binds long before traffic; here it comes next.
            await asyncio.sleep(publishers_join_s(fleet.shape))
        await _scrape(self.scheduler, self.addresses)
        if self.precise and not fleet.shape.token_level:
            self.subscriber = KvEventSubscriber(self.scheduler.router)
            self.subscriber.set_publishers(fleet.kv_events)

    def pick(self, path: str, body: bytes) -> str:
        return self.scheduler.router.route(path, body).primary

    async def pick_async(self, path: str, body: bytes) -> str:
        # A policy that tokenizes works off the event loop, as the EPP works off the proxy's:
        # the loop keeps sending arrivals on time and reading answers meanwhile. Through the
        # render API the production order holds: the round trip first (Router.tokenize, as
        # ext_proc does before admission), then a cycle on the loop with the ids, scoring the
        # load as it is when the ids are in. In-process, the Router tokenizes first, as in ext_proc.
        tokenizes = self.render or (self.config is not None and "token-producer" in self.config)
        if not tokenizes:
            return self.pick(path, body)
        loop = asyncio.get_running_loop()
        if self.threads is None:
            self.threads = ThreadPoolExecutor(64, thread_name_prefix=f"{self.name}-tokenize")
        if self.render:
            router = self.scheduler.router
            tokens = await loop.run_in_executor(self.threads, router.tokenize, path, body)
            return router.route(path, body, tokens=tokens).primary
        return await loop.run_in_executor(self.threads, self.pick, path, body)

    def done(self, address: str) -> None:
        self.scheduler.release(address)

    async def stop(self) -> None:
        # The precise index's counters (lookups, blocks matched, events skipped), for the trace.
        self.index_stats = self.scheduler.router.kv_event_stats()
        await super().stop()
        if self.subscriber is not None:
            await self.subscriber.close()
        if self.threads is not None:
            self.threads.shutdown(wait=True)


def scorer_variants(shape: FleetShape | None = None) -> list[SluicegatePolicy]:
    """SLUICEGATE_QUALITY_VARIANTS="name={params};...": the default profile with these
    prefix-cache-scorer parameters (YAML flow mapping), one extra row each, to compare settings
    in one run, e.g. `slack8={affinityQueueSlack: 8}`; SLUICEGATE_QUALITY_QUEUE_VARIANTS the same
    for queue-scorer parameters, e.g. `free2={inFlightFreeSlots: 2}`, and
    SLUICEGATE_QUALITY_PICKER_VARIANTS for max-score-picker's, e.g. `tie05={tieTolerance: 0.05}`.
    On vLLM-style servers (`shape` with a tokenizer) also the precise profile with them
    (`sluicegate+precise-<name>`)."""
    return _variants("SLUICEGATE_QUALITY_VARIANTS", "prefix-cache-scorer", shape) + _load_variants(shape)


def _load_variants(shape: FleetShape | None = None) -> list[SluicegatePolicy]:
    """The SLUICEGATE_QUALITY_QUEUE_VARIANTS and SLUICEGATE_QUALITY_PICKER_VARIANTS rows (every
    table runs them; `shared_prefix` also the prefix-cache-scorer ones, `scorer_variants`)."""
    return (_variants("SLUICEGATE_QUALITY_QUEUE_VARIANTS", "queue-scorer", shape)
            + _variants("SLUICEGATE_QUALITY_PICKER_VARIANTS", "max-score-picker", shape))


def _variants(env: str, plugin: str, shape: FleetShape | None = None) -> list[SluicegatePolicy]:
    out = []
    for item in filter(None, os.environ.get(env, "").split(";")):
        name, sep, params = item.partition("=")
        if not sep or not params.strip().startswith("{"):
            raise ValueError(f"{env}: expected name={{params}}, got {item!r}")
        config = _with_parameters(_default_profile(), plugin, params.strip())
        out.append(SluicegatePolicy(f"sluicegate-{name.strip()}", config))
        if shape is not None and shape.server == INFERENCE_SIM:
            out.append(SluicegatePolicy(f"sluicegate+precise-render-{name.strip()}", None, True, render=True,
                                        edit=functools.partial(_with_parameters, plugin=plugin, params=params.strip())))
        elif shape is not None and shape.tokenizer:
            config = _with_parameters(precise_tokens(shape), plugin, params.strip())
            out.append(SluicegatePolicy(f"sluicegate+precise-{name.strip()}", config, True))
    return out


def in_flight_policies() -> list[SluicegatePolicy]:
    """The default profile with the queue-scorer's other rules for requests sent since the
    scrape (rows for test_upstream_go.py; `sluicegate-inflight-never` also on `burst`)."""
    return [SluicegatePolicy("sluicegate-inflight-never", IN_FLIGHT_NEVER),
            SluicegatePolicy("sluicegate-free2", IN_FLIGHT_FREE2)]


def policies(workload: str, seed: int, shape: FleetShape | None = None) -> list[Policy]:
    # Every table also runs the default profile with the no-hit-lru-scorer: on independent
    # prompts every request is one no server has cached.
    no_hit = SluicegatePolicy("sluicegate-no-hit-lru", NO_HIT_LRU)
    if workload == "burst":  # what counting requests sent since the scrape buys (least-queue counts all)
        return [RoundRobinPolicy(), LeastRequestPolicy(seed), SluicegatePolicy("sluicegate"), no_hit,
                in_flight_policies()[0], *_load_variants()]
    out: list[Policy] = [RandomPolicy(seed), RoundRobinPolicy(), LeastRequestPolicy(seed),
                         SluicegatePolicy("sluicegate"), no_hit]
    if workload == "shared_prefix":
        out.append(SluicegatePolicy("sluicegate-previous", PREVIOUS))
        out.append(SluicegatePolicy("sluicegate-upstream-scorer", UPSTREAM_SCORER))
        out.append(SluicegatePolicy("sluicegate-queue-slack", QUEUE_SLACK))
        out += scorer_variants(shape)
    if shape is not None and shape.server == INFERENCE_SIM:  # its tokenizer is its render API's
        out.append(SluicegatePolicy("sluicegate+precise-render", None, True, render=True))
    elif shape is not None and shape.tokenizer:
        out += [SluicegatePolicy("sluicegate+precise", precise_tokens(shape), True),
                SluicegatePolicy("sluicegate+precise-render", None, True, render=True),
                SluicegatePolicy("sluicegate+precise-no-hit-lru", precise_tokens(shape, no_hit_lru=True), True)]
    else:
        out.append(SluicegatePolicy("sluicegate+precise", PRECISE, True))
    if workload == "varied":  # EPP-side in-flight counts, what least-queue routes by
        out.append(SluicegatePolicy("sluicegate+active", ACTIVE))
    if workload == "lora":
        out += [SluicegatePolicy("sluicegate+lora", LORA), SluicegatePolicy("sluicegate+lora-no-hit-lru", LORA_NO_HIT_LRU)]
    if workload != "shared_prefix":  # there with scorer_variants()
        out += _load_variants()
    return out
