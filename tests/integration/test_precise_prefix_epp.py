"""`sluicegate run` with a precise-prefix-cache-producer, over real ext_proc gRPC: a prompt goes
to the simulator whose KV cache holds it — a cache warmed behind the EPP's back. Both transports
(the EPP dialling each simulator's publisher; vLLM-style simulators dialling the EPP's bound
endpoint with token ids and vLLM's block hashes, keyed by the EPP's own tokenization), and
misconfiguration made visible: a wrong hash seed, a wrong tokenizer."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import yaml
from prometheus_client import generate_latest

from sluicegate.scheduling.kv_events import PORT_LABEL, REPLAY_PORT_LABEL
from sluicegate.metrics import build_registry
from sluicegate.sim.config import SimConfig
from sluicegate.sim.toy_tokenizers import byte_level_chatml, whitespace_llama2
from tests.harness import free_port_to_dial_early, http_request

from .extproc_client import exchange, header_set, request_body, request_headers
from .test_flowcontrol_extproc import InProcessEpp

CHAT = "/v1/chat/completions"
CONFIG = """
plugins:
- {type: precise-prefix-cache-producer, parameters: {blockSize: 16}}
- {type: prefix-cache-scorer}
- {type: max-score-picker}
schedulingProfiles: [{name: p, plugins: [{pluginRef: prefix-cache-scorer}, {pluginRef: max-score-picker}]}]
"""


def _body(text: str) -> bytes:
    return json.dumps({"model": "meta-llama/Llama-3.1-8B-Instruct", "max_tokens": 2,
                       "messages": [{"role": "user", "content": text}]}).encode()


def _dialled_fleet(loop_thread, sims, tmp_path, **sim_options):
    """Three simulators binding their publishers, and an EPP dialling each (a port label per
    server, as all share one host); returns the servers and the running EPP."""
    servers = sims.start(*(SimConfig(name=f"sim-{i}", speedup=50.0, kv_events_endpoint="tcp://127.0.0.1:*",
                                     **sim_options) for i in range(3)))
    endpoints = [{"name": s.name, "address": s.address.split(":")[0], "port": int(s.address.split(":")[1]),
                  "labels": {PORT_LABEL: s.kv_events_address.rsplit(":", 1)[1]}} for s in servers]
    path = tmp_path / "endpoints.yaml"
    path.write_text(yaml.safe_dump({"endpoints": endpoints}))
    return servers, InProcessEpp(loop_thread, path, CONFIG)


def _cache_behind_the_epps_back_and_route(epp, target, text: str) -> None:
    """Warm `target` until its events reach the EPP (ZMQ subscribers join asynchronously), cache
    a prompt there directly, then see the EPP route the prompt to it, and keep doing so."""
    _warm_until_events(epp, target)
    prompt = _body(text)
    assert http_request(f"http://{target.address}", CHAT, prompt)[0] == 200
    _routes_to_holder(epp, prompt, target)


def _routes_to_holder(epp, prompt: bytes, target) -> None:
    """Within 10 s the EPP routes `prompt` to `target`, and keeps doing so."""
    deadline = time.monotonic() + 10
    while (routed := _routed(epp, prompt)) != target.address:
        assert time.monotonic() < deadline, f"routed to {routed}, never to {target.address}"
        time.sleep(0.05)  # poll interval of this bounded wait
    for _ in range(5):  # and it stays there: the index, not chance, decides
        assert _routed(epp, prompt) == target.address


def test_the_epp_routes_to_the_simulator_whose_kv_events_report_the_prompt(loop_thread, sims, tmp_path):
    servers, in_process = _dialled_fleet(loop_thread, sims, tmp_path)
    try:
        _cache_behind_the_epps_back_and_route(in_process.epp, servers[1],
                                              "the one prompt the middle simulator holds " * 60)
    finally:
        in_process.stop()


def test_a_hybrid_models_sliding_window_group_does_not_take_away_what_full_attention_holds(
        loop_thread, sims, tmp_path):
    """vLLM's hybrid allocator (a model with sliding-window layers): every block is announced
    for the full-attention group and the window group, and a finished request's blocks behind
    the window leave the window group at once. Those removals name hashes the full-attention
    group still holds; the EPP must not drop them, or the prompt's prefix would be forgotten
    the moment its request ends. The skipped events show on upstream's families."""
    servers, in_process = _dialled_fleet(loop_thread, sims, tmp_path, kv_sliding_window=64)
    epp = in_process.epp
    try:
        _cache_behind_the_epps_back_and_route(epp, servers[1], "a long prompt for a hybrid model " * 60)
        text = _scrape(epp)
        for family in ("stores", "removals"):
            skipped = _sample(text, f'llm_d_epp_kv_cache_events_{family}_skipped_total'
                                    '{cache_kind="sliding_window",reason="unsupported_cache_kind"}')
            assert skipped > 0, family
        # Nothing was evicted (4,096 blocks a server): no removal reached the index.
        assert _sample(text, "llm_d_epp_kv_cache_events_dedup_removed_hashes_forwarded_total") == 0
        assert _sample(text, "llm_d_epp_kv_cache_index_lookup_latency_seconds_count") >= 6
        assert _sample(text, 'kvcache_index_lookup_latency_seconds_bucket{le="+Inf"}') >= 6
    finally:
        in_process.stop()


def _sample(text: str, name: str) -> float:
    """The value of the sample `name` (with its labels, as exposed) in a scrape."""
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " ")]
    assert values, f"{name} not exposed"
    return values[0]


def _routed(epp, prompt: bytes) -> str:
    answers = exchange(epp.port, [request_headers(CHAT), request_body(prompt, True)])
    return header_set(answers[0].request_headers.response)["x-gateway-destination-endpoint"]


def test_an_epp_started_after_the_servers_cached_a_prompt_routes_it_to_the_holder_through_replay(
        loop_thread, sims, tmp_path):
    """An EPP restart: the servers cached a prompt while no EPP listened, and send nothing more.
    With their replay sockets named (replaySocketPort, or a label per server here, as all share
    one host), the EPP asks each for what it kept and routes the prompt to its holder at once."""
    servers = sims.start(*(SimConfig(name=f"sim-{i}", speedup=50.0, kv_events_endpoint="tcp://127.0.0.1:*",
                                     kv_events_replay_endpoint="tcp://127.0.0.1:*") for i in range(3)))
    target = servers[1]
    prompt = _body("the one prompt the middle simulator cached before the EPP started " * 50)
    assert http_request(f"http://{target.address}", CHAT, prompt)[0] == 200
    endpoints = [{"name": s.name, "address": s.address.split(":")[0], "port": int(s.address.split(":")[1]),
                  "labels": {PORT_LABEL: s.kv_events_address.rsplit(":", 1)[1],
                             REPLAY_PORT_LABEL: s.kv_events_replay_address.rsplit(":", 1)[1]}} for s in servers]
    path = tmp_path / "endpoints.yaml"
    path.write_text(yaml.safe_dump({"endpoints": endpoints}))
    in_process = InProcessEpp(loop_thread, path, CONFIG)
    epp = in_process.epp
    try:
        _routes_to_holder(epp, prompt, target)  # from the replayed blocks
        text = _scrape(epp)
        for s in servers:
            assert f'sluicegate_kv_events_replays_total{{outcome="complete",pod_identifier="{s.address}"}} 1.0' in text
        assert f'llm_d_epp_kv_cache_events_messages_received_total{{pod_identifier="{target.address}"}}' not in text
        # Upstream's subscriber and index families, and the index's earlier kvcache_* names.
        assert "llm_d_epp_kv_cache_events_active_subscribers 3.0" in text
        assert "llm_d_epp_kv_cache_events_pool_queue_depth 0.0" in text
        hits = [line for line in text.splitlines() if line.startswith("llm_d_epp_kv_cache_index_max_pod_hit_count_total ")]
        assert hits and float(hits[0].split()[1]) > 0
        assert "kvcache_index_admissions_total" in text and "kvcache_index_lookup_hits_total" in text
    finally:
        in_process.stop()


def _precise_config(tokenizer: Path, hash_seed: str) -> str:
    return f"""
plugins:
- {{type: token-producer, parameters: {{local: {{path: "{tokenizer}"}}}}}}
- {{type: precise-prefix-cache-producer, parameters: {{
    tokenProcessorConfig: {{blockSize: 16, hashSeed: "{hash_seed}"}},
    kvEventsConfig: {{zmqEndpoint: "tcp://127.0.0.1:{free_port_to_dial_early()}"}}}}}}
- {{type: prefix-cache-scorer}}
- {{type: max-score-picker}}
schedulingProfiles: [{{name: p, plugins: [{{pluginRef: prefix-cache-scorer}}, {{pluginRef: max-score-picker}}]}}]
"""


def _start_vllm_style(loop_thread, sims, tmp_path, epp_tokenizer: Path, sim_tokenizer: Path,
                      epp_seed: str, sim_seed: str = "42"):
    """An EPP binding its ZMQ endpoint, and three simulators tokenizing with `sim_tokenizer`,
    hashing with `sim_seed` and dialling the EPP (upstream's transport and topics)."""
    config = _precise_config(epp_tokenizer, epp_seed)
    endpoint = yaml.safe_load(config)["plugins"][1]["parameters"]["kvEventsConfig"]["zmqEndpoint"]
    # The simulators dial before the EPP has bound: ZMQ keeps retrying, as vLLM's does.
    servers = sims.start(*(SimConfig(name=f"sim-{i}", speedup=50.0, kv_events_endpoint=endpoint,
                                     kv_events_encoding="map", tokenizer=str(sim_tokenizer), hash_seed=sim_seed)
                           for i in range(3)))
    path = tmp_path / "endpoints.yaml"
    path.write_text(yaml.safe_dump({"endpoints": [
        {"name": s.name, "address": s.address.split(":")[0], "port": int(s.address.split(":")[1])}
        for s in servers]}))
    return InProcessEpp(loop_thread, path, config), servers


def _warm_until_events(epp, target) -> None:
    deadline = time.monotonic() + 20
    i = 0
    while epp.router.kv_event_stats()["batches"] == 0:
        assert time.monotonic() < deadline, "the EPP never received a KV-event batch"
        assert http_request(f"http://{target.address}", CHAT, _body(f"warm-up {i} " * 30))[0] == 200
        i += 1
        time.sleep(0.02)  # pacing: warm-up requests until the first event batch


def _scrape(epp) -> str:
    return generate_latest(build_registry(epp.router, "default", extra=epp._collectors)).decode()


def test_vllm_style_servers_dial_the_epp_and_token_keys_route_chat_to_the_holder(loop_thread, sims, tmp_path):
    tok = byte_level_chatml(tmp_path / "tok")
    in_process, servers = _start_vllm_style(loop_thread, sims, tmp_path, tok, tok, "42")
    epp = in_process.epp
    try:
        target = servers[2]
        _warm_until_events(epp, target)
        prompt = _body("You are a helpful assistant. Shared system prompts make prefix caching pay off. " * 8)
        assert http_request(f"http://{target.address}", CHAT, prompt)[0] == 200
        deadline = time.monotonic() + 10
        while True:
            answers = exchange(epp.port, [request_headers(CHAT), request_body(prompt, True)])
            routed = header_set(answers[0].request_headers.response)["x-gateway-destination-endpoint"]
            if routed == target.address:
                break
            assert time.monotonic() < deadline, f"routed to {routed}, never to {target.address}"
            time.sleep(0.05)  # poll interval of this bounded wait
        stats = epp.router.kv_event_stats()
        assert stats["engine_hash_mismatches"] == 0 and stats["engine_hash_checks"] > 0
        assert stats["lookup_hits"] > 0 and stats["tokenize_failures"] == 0
        text = _scrape(epp)
        assert f'sluicegate_kv_events_decoded_total{{pod_identifier="{target.address}"}}' in text
        assert "llm_d_epp_kv_cache_index_lookup_hits_total" in text
    finally:
        in_process.stop()


def assert_wrong_seed_shows(epp, server, caplog) -> None:
    """Within 15 s of traffic to `server`, an EPP configured with hashSeed "7" (the servers
    hash with another) warns about PYTHONHASHSEED and counts the mismatches on /metrics."""
    started = time.monotonic()
    _warm_until_events(epp, server)
    with caplog.at_level(logging.WARNING, logger="sluicegate.scheduling.kv_events"):
        while "PYTHONHASHSEED" not in caplog.text:
            assert time.monotonic() - started < 15, "no warning about the hash seed"
            http_request(f"http://{server.address}", CHAT, _body(f"more {time.monotonic()} " * 30))
            time.sleep(0.2)  # pacing: requests until the warning shows (bounded)
    assert "hashSeed='7'" in caplog.text
    mismatches = [line for line in _scrape(epp).splitlines()
                  if line.startswith("sluicegate_kv_events_engine_hash_mismatches_total ")]
    assert mismatches and float(mismatches[0].split()[1]) > 0


def test_a_wrong_hash_seed_shows_on_metrics_and_in_the_log_within_seconds(loop_thread, sims, tmp_path, caplog):
    tok = byte_level_chatml(tmp_path / "tok")
    in_process, servers = _start_vllm_style(loop_thread, sims, tmp_path, tok, tok, epp_seed="7", sim_seed="42")
    try:
        assert_wrong_seed_shows(in_process.epp, servers[0], caplog)
    finally:
        in_process.stop()


def test_a_wrong_tokenizer_shows_as_lookups_that_never_hit_while_events_arrive(loop_thread, sims, tmp_path, caplog):
    in_process, servers = _start_vllm_style(loop_thread, sims, tmp_path, whitespace_llama2(tmp_path / "epp-tok"),
                                            byte_level_chatml(tmp_path / "sim-tok"), "42")
    epp = in_process.epp
    try:
        started = time.monotonic()
        _warm_until_events(epp, servers[0])
        prompt = _body("The quick brown fox jumps over the lazy dog while the sky turns red. " * 8)
        with caplog.at_level(logging.WARNING, logger="sluicegate.scheduling.kv_events"):
            while "matched no block" not in caplog.text:
                assert time.monotonic() - started < 15, "no warning about lookups that never hit"
                http_request(f"http://{servers[0].address}", CHAT, prompt)
                exchange(epp.port, [request_headers(CHAT), request_body(prompt, True)])
                time.sleep(0.1)  # pacing: requests until the warning shows (bounded)
        assert "token-producer" in caplog.text
        assert "sluicegate_kv_cache_index_hit_ratio 0.0" in _scrape(epp)
    finally:
        in_process.stop()
