"""The headers and metadata a decision carries, end to end through the real Envoy: the
disaggregated stage peers (prefill, encode) and the data-parallel rank reach the model server,
session affinity pins by x-session-id and by the x-session-token the client got back (one per
stage with disaggregation, `profileName`), x-llm-d-slo-tpot-ms steers the latency plugins, and
--emit-endpoint-scores puts the primary profile's scores in envoy.lb metadata (copied into a request header by the route here, so the server can
show what Envoy held); x-kv-cache-source-host-port names the peer holding the prompt (a forged one is dropped), and
a burst of prompt-sharing requests is served one server per prompt, and a repeated image goes back to the server
that encoded it. The model servers are small HTTP servers of this test that echo the
request headers they received and report the queue length the test sets."""

from __future__ import annotations

import json
import base64
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import sluicegate.standalone.process as envoy_process
from sluicegate.extproc.protocol import (
    DATA_PARALLEL_HEADER,
    DESTINATION_ENDPOINT_SCORES,
    DESTINATION_NAMESPACE,
    ENCODERS_HEADER,
    PREFILLER_HEADER,
    SESSION_ID_HEADER,
    SESSION_TOKEN_HEADER,
)
from sluicegate.standalone import EnvoyOptions, EnvoyProcess
from sluicegate.standalone.epp_process import EppProcess
from tests.harness import http_request, wait_until

pytestmark = pytest.mark.envoy

CHAT = "/v1/chat/completions"
SCORES_HEADER = "x-test-endpoint-scores"


class EchoServer:
    """A model server stand-in: /metrics with a settable queue and KV-cache use; POSTs answered
    with a chat completion whose `received_headers` are the request headers it got. With `timing`
    (first-token seconds, seconds per further token, tokens) the answer comes in two chunks: the
    first after the first-token time, the rest after the other tokens' time."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.waiting = 0
        self.kv = 0.1
        self.timing: tuple[float, float, int] | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args) -> None:
                pass

            def _send(self, body: bytes, content_type: str) -> None:
                self.send_response(200)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._send(f"vllm:num_requests_waiting {server.waiting}\nvllm:num_requests_running 0\n"
                           f"vllm:kv_cache_usage_perc {server.kv}\n".encode(), "text/plain")

            def _read_body(self) -> bytes:
                if self.headers.get("transfer-encoding", "").lower() != "chunked":
                    return self.rfile.read(int(self.headers.get("content-length") or 0))
                data = b""
                while (size := int(self.rfile.readline().strip() or b"0", 16)) > 0:
                    data += self.rfile.read(size)
                    self.rfile.readline()
                self.rfile.readline()
                return data

            def do_POST(self) -> None:
                request = json.loads(self._read_body())
                tokens = server.timing[2] if server.timing else 1
                body = json.dumps({
                    "id": "c", "object": "chat.completion", "model": request.get("model"),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "ok " * tokens}}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": tokens, "total_tokens": 3 + tokens},
                    "served_by": server.name,
                    "received_headers": {k.lower(): v for k, v in self.headers.items()},
                }).encode()
                if server.timing is None:
                    self._send(body, "application/json")
                    return
                first_token_s, per_token_s, _ = server.timing
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                for delay, part in ((first_token_s, body[:10]), (per_token_s * (tokens - 1), body[10:])):
                    time.sleep(delay)  # the server's own timing, which the EPP measures
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class Stack:
    def __init__(self, tmp_path: Path, servers: list[EchoServer], config: str,
                 labels: list[dict[str, str]] | None = None, epp_args: tuple[str, ...] = ()) -> None:
        self.servers = servers
        endpoints = [{"name": s.name, "address": s.address.split(":")[0], "port": int(s.address.split(":")[1]),
                      "labels": (labels or [{}] * len(servers))[i]} for i, s in enumerate(servers)]
        (tmp_path / "endpoints.json").write_text(json.dumps({"endpoints": endpoints}))
        (tmp_path / "config.yaml").write_text(config)
        self.epp = EppProcess(tmp_path / "endpoints.json", "--config-file", str(tmp_path / "config.yaml"),
                              *epp_args).start()
        opts = EnvoyOptions(listen_port=0, admin_port=0, listen_address="127.0.0.1", epp_port=self.epp.port,
                            epp_health_port=self.epp.health_port, epp_tls=False, concurrency=1)
        self.envoy = EnvoyProcess(opts, wait_epp_healthy=True).start_blocking()

    def post(self, content: str | list = "hi", headers: dict[str, str] | None = None) -> tuple[dict, dict[str, str]]:
        body = {"model": "m", "messages": [{"role": "user", "content": content}], "max_tokens": 1}
        status, resp_headers, data = http_request(self.envoy.url, CHAT, body, headers)
        assert status == 200, data
        return json.loads(data), resp_headers

    def served_by(self, headers: dict[str, str] | None = None) -> str:
        return self.post(headers=headers)[0]["served_by"]

    def load(self, **waiting: int) -> None:
        """Set queue lengths by server name and wait until the EPP's scrapes show them."""
        for s in self.servers:
            s.waiting = waiting.get(s.name, s.waiting)

        def seen() -> bool:
            text = http_request(f"http://127.0.0.1:{self.epp.metrics_port}", "/metrics")[2].decode()
            return all(re.search(rf'^inference_pool_per_pod_queue_size{{[^}}]*model_server_pod="{s.name}"[^}}]*}} '
                                 rf'{s.waiting}(\.0)?$', text, re.M) for s in self.servers)

        wait_until(seen, what=f"the EPP seeing queues {waiting}")

    def stop(self) -> None:
        self.envoy.stop_blocking()
        self.epp.stop()


@pytest.fixture
def stack(tmp_path, monkeypatch):
    """make(names, config): echo servers, then the EPP with `config` (or config(servers)) and Envoy.
    Envoy's route copies envoy.lb's scores into a request header, so the server shows them."""
    original = envoy_process.envoy_bootstrap

    def with_scores_header(opts):
        bootstrap = original(opts)
        listener = bootstrap["static_resources"]["listeners"][0]
        manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
        for host in manager["route_config"]["virtual_hosts"]:
            for route in host["routes"]:
                route.setdefault("request_headers_to_add", []).append({
                    "header": {"key": SCORES_HEADER,
                               "value": f"%DYNAMIC_METADATA({DESTINATION_NAMESPACE}:{DESTINATION_ENDPOINT_SCORES})%"},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"})
        return bootstrap

    monkeypatch.setattr(envoy_process, "envoy_bootstrap", with_scores_header)
    made: list[Stack] = []
    servers: list[EchoServer] = []

    def make(names: list[str], config, **kw) -> Stack:
        mine = [EchoServer(n) for n in names]
        servers.extend(mine)
        text = config(mine) if callable(config) else config
        made.append(Stack(tmp_path, mine, text, **kw))
        return made[-1]

    yield make
    for s in made:
        s.stop()
    for server in servers:
        server.stop()


def test_the_decode_server_learns_its_prefill_peer(stack):
    config = """
plugins:
- {type: prefill-filter}
- {type: decode-filter}
- {type: queue-scorer}
- {type: always-disagg-pd-decider}
- {type: disagg-profile-handler, parameters: {deciders: {prefill: always-disagg-pd-decider}}}
schedulingProfiles:
- {name: prefill, plugins: [{pluginRef: prefill-filter}, {pluginRef: queue-scorer}]}
- {name: decode, plugins: [{pluginRef: decode-filter}, {pluginRef: queue-scorer}]}
"""
    role = "llm-d.ai/role"
    s = stack(["p", "d"], config, labels=[{role: "prefill"}, {role: "decode"}])
    answer = wait_until(lambda: (a := s.post()[0])["received_headers"].get(PREFILLER_HEADER) and a,
                        what="a request carrying its prefill peer")
    assert answer["served_by"] == "d"
    assert answer["received_headers"][PREFILLER_HEADER] == s.servers[0].address


def test_a_request_with_an_image_tells_the_decode_server_its_encoder(stack):
    """E/PD: media goes to an encode server first; the decode server learns where from
    x-encoder-hosts-ports. A text-only request has no encode stage."""
    config = """
plugins:
- {type: encode-filter}
- {type: decode-filter}
- {type: queue-scorer}
- {type: always-disagg-multimodal-decider}
- {type: disagg-profile-handler, parameters: {deciders: {encode: always-disagg-multimodal-decider}}}
schedulingProfiles:
- {name: encode, plugins: [{pluginRef: encode-filter}, {pluginRef: queue-scorer}]}
- {name: decode, plugins: [{pluginRef: decode-filter}, {pluginRef: queue-scorer}]}
"""
    role = "llm-d.ai/role"
    s = stack(["e", "d"], config, labels=[{role: "encode"}, {role: "decode"}])
    image = [{"type": "text", "text": "what is this?"},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    answer = wait_until(lambda: (a := s.post(image)[0])["received_headers"].get(ENCODERS_HEADER) and a,
                        what="a request carrying its encoder")
    assert answer["served_by"] == "d"
    assert answer["received_headers"][ENCODERS_HEADER] == s.servers[0].address
    text = s.post("just words")[0]
    assert text["served_by"] == "d" and ENCODERS_HEADER not in text["received_headers"]


def test_data_parallel_goes_to_the_rank_zero_port_naming_the_picked_rank(stack):
    def config(servers: list[EchoServer]) -> str:
        port = servers[0].address.split(":")[1]
        return (f"plugins: [{{type: data-parallel-profile-handler, parameters: {{primaryPort: {port}}}}},"
                " {type: queue-scorer}]\n")

    s = stack(["rank0", "rank1"], config)
    s.servers[0].waiting = 9
    answer = wait_until(
        lambda: (a := s.post()[0])["received_headers"].get(DATA_PARALLEL_HEADER) == s.servers[1].address and a,
        what="rank1 picked")
    assert answer["served_by"] == "rank0"  # the picked pod's IP at the rank-0 port


def test_a_session_id_stays_on_its_server_while_other_requests_follow_the_load(stack):
    config = """
plugins:
- {type: queue-scorer}
- {type: session-affinity-filter, parameters: {strategy: session_id}}
schedulingProfiles:
- {name: default, plugins: [{pluginRef: session-affinity-filter}, {pluginRef: queue-scorer}]}
"""
    s = stack(["a", "b"], config)
    s.load(a=0, b=9)
    session = {SESSION_ID_HEADER: "conversation-1"}
    assert s.served_by(session) == "a"
    s.load(a=9, b=0)
    assert s.served_by(session) == "a"
    assert s.served_by({SESSION_ID_HEADER: "conversation-2"}) == "b"


def test_the_client_gets_a_session_token_that_brings_it_back(stack):
    config = """
plugins:
- {type: queue-scorer}
- {type: session-affinity-scorer}
schedulingProfiles:
- {name: default, plugins: [{pluginRef: queue-scorer}, {pluginRef: session-affinity-scorer, weight: 10}]}
"""
    s = stack(["a", "b"], config)
    s.load(a=0, b=9)
    answer, headers = s.post()
    assert answer["served_by"] == "a"
    token = headers[SESSION_TOKEN_HEADER]
    s.load(a=9, b=0)
    assert s.served_by({SESSION_TOKEN_HEADER: token}) == "a"


def test_with_disaggregation_each_stage_has_its_token_and_both_stages_come_back(stack):
    """P/D with a session filter per stage (upstream's pairing): the prefill one, `profileName:
    prefill`, writes the prefill pick in x-session-token-prefill; sent back with x-session-token,
    both stages stay where they were while the loads turn."""
    config = """
plugins:
- {type: prefill-filter}
- {type: decode-filter}
- {type: queue-scorer}
- {type: always-disagg-pd-decider}
- {type: disagg-profile-handler, parameters: {deciders: {prefill: always-disagg-pd-decider}}}
- {name: session-decode, type: session-affinity-filter}
- name: session-prefill
  type: session-affinity-filter
  parameters: {profileName: prefill, encodedEndpointHeaderConfig: {header: x-session-token-prefill}}
schedulingProfiles:
- {name: prefill, plugins: [{pluginRef: prefill-filter}, {pluginRef: session-prefill}, {pluginRef: queue-scorer}]}
- {name: decode, plugins: [{pluginRef: decode-filter}, {pluginRef: session-decode}, {pluginRef: queue-scorer}]}
"""
    role = "llm-d.ai/role"
    s = stack(["p1", "p2", "d1", "d2"], config,
              labels=[{role: "prefill"}, {role: "prefill"}, {role: "decode"}, {role: "decode"}])
    p1, p2, _, _ = (x.address for x in s.servers)
    s.load(p1=0, p2=9, d1=0, d2=9)
    answer, headers = s.post()
    assert (answer["served_by"], answer["received_headers"][PREFILLER_HEADER]) == ("d1", p1)
    tokens = {SESSION_TOKEN_HEADER: headers[SESSION_TOKEN_HEADER], "x-session-token-prefill":
              headers["x-session-token-prefill"]}
    assert tokens[SESSION_TOKEN_HEADER] != tokens["x-session-token-prefill"]
    s.load(p1=9, p2=0, d1=9, d2=0)
    again = s.post(headers=tokens)[0]
    assert (again["served_by"], again["received_headers"][PREFILLER_HEADER]) == ("d1", p1)
    fresh = s.post()[0]
    assert (fresh["served_by"], fresh["received_headers"][PREFILLER_HEADER]) == ("d2", p2)


def test_the_tpot_slo_header_keeps_a_request_off_the_server_too_slow_per_token(stack):
    """x-llm-d-slo-tpot-ms reaches the latency plugins (predicted-latency-producer in streaming
    mode): once the predictor has learned each server's timing from requests pinned to it, a
    request whose SLOs both servers meet packs onto the slow one (less headroom, still valid); the
    same request asking for 20 ms per token goes to the fast one."""
    config = """
plugins:
- {type: predicted-latency-producer, parameters: {streamingMode: true}}
- {type: slo-headroom-tier-filter, parameters: {epsilonExploreNeg: 0.0}}
- {type: latency-scorer, parameters: {tpotWeight: 0.0}}
- {type: session-affinity-filter}
schedulingProfiles:
- name: default
  plugins: [{pluginRef: session-affinity-filter}, {pluginRef: slo-headroom-tier-filter}, {pluginRef: latency-scorer}]
"""
    s = stack(["fast", "slow"], config)
    fast, slow = s.servers
    fast.kv, slow.kv = 0.5, 0.1
    fast.timing, slow.timing = (0.02, 0.005, 5), (0.2, 0.04, 5)
    s.load(fast=0, slow=10)
    for _ in range(6):  # the predictor trusts itself after 8 samples
        for server in (fast, slow):
            token = base64.b64encode(server.name.encode()).decode()
            assert s.served_by({SESSION_TOKEN_HEADER: token}) == server.name
    ttft = {"x-llm-d-slo-ttft-ms": "1000"}
    assert s.served_by({**ttft, "x-llm-d-slo-tpot-ms": "1000"}) == "slow"
    assert s.served_by({**ttft, "x-llm-d-slo-tpot-ms": "20"}) == "fast"


def test_emit_endpoint_scores_puts_the_weighted_scores_in_envoy_lb_metadata(stack):
    config = """
plugins:
- {type: queue-scorer}
schedulingProfiles:
- {name: default, plugins: [{pluginRef: queue-scorer, weight: 2}]}
"""
    s = stack(["a", "b", "c"], config, epp_args=("--emit-endpoint-scores",))
    a, b, c = (x.address for x in s.servers)
    for server, waiting in zip(s.servers, (0, 5, 10)):
        server.waiting = waiting
    want = {a: 2.0, b: 1.0, c: 0.0}

    def scores():
        got = s.post()[0]["received_headers"].get(SCORES_HEADER)
        return got is not None and json.loads(got) == want and got

    wait_until(scores, what=f"scores {want}")


def test_without_the_flag_no_scores_are_sent(stack):
    s = stack(["a"], "plugins: [{type: queue-scorer}]\n")
    answer = s.post()[0]
    assert answer["served_by"] == "a"
    assert answer["received_headers"].get(SCORES_HEADER) in (None, "", "-")


def test_a_prompt_stays_on_the_server_holding_its_prefix_while_new_prompts_follow_the_load(stack):
    config = """
plugins:
- {type: queue-scorer}
- {type: prefix-cache-affinity-filter, parameters: {affinityThreshold: 0.8}}
- {type: token-load-scorer}
schedulingProfiles:
- name: default
  plugins: [{pluginRef: prefix-cache-affinity-filter}, {pluginRef: queue-scorer}, {pluginRef: token-load-scorer}]
"""
    s = stack(["a", "b"], config)
    s.load(a=0, b=9)
    prompt = "You are a helpful assistant. " * 40
    assert s.post(prompt)[0]["served_by"] == "a"
    s.load(a=9, b=0)
    assert s.post(prompt)[0]["served_by"] == "a"
    assert s.post("A different conversation. " * 40)[0]["served_by"] == "b"


KV_SOURCE_HEADER = "x-kv-cache-source-host-port"


def test_a_server_lacking_the_prefix_learns_which_peer_holds_it_and_a_forged_source_is_dropped(stack):
    """p2p-source-producer: the prompt's first server is named in x-kv-cache-source-host-port for
    the next request of that prompt sent elsewhere; a client's own value never reaches a server."""
    config = """
plugins:
- {type: approx-prefix-cache-producer, parameters: {autoTune: false}}
- {type: prefix-cache-scorer}
- {type: queue-scorer}
- {type: p2p-source-producer}
schedulingProfiles:
- {name: default, plugins: [{pluginRef: prefix-cache-scorer, weight: 1}, {pluginRef: queue-scorer, weight: 3}]}
"""
    s = stack(["a", "b"], config)
    s.load(a=0, b=0)
    prompt = "the shared system prompt " * 60
    forged = {KV_SOURCE_HEADER: "192.0.2.9:8000"}
    first = s.post(prompt, headers=forged)[0]
    assert KV_SOURCE_HEADER not in first["received_headers"]
    holder = next(x for x in s.servers if x.name == first["served_by"])
    s.load(**{holder.name: 10})
    second = s.post(prompt, headers=forged)[0]
    assert second["served_by"] != holder.name
    assert second["received_headers"][KV_SOURCE_HEADER] == holder.address


def test_a_burst_of_prompt_sharing_requests_is_served_one_server_per_prompt(stack):
    """burst-prefix-cache-producer: concurrent requests within one window are placed jointly, each
    prompt's samples on one server (the ext_proc stream waits for the window, not the server)."""
    config = """
plugins:
- {type: burst-prefix-cache-producer, parameters: {windowDurationMs: 1000}}
- {type: prefix-cache-scorer, parameters: {prefixMatchInfoProducerName: burst-prefix-cache-producer}}
- {type: max-score-picker}
"""
    s = stack(["a", "b", "c"], config)
    prompts = ["rollout prompt one " * 40, "rollout prompt two " * 40]
    served: dict[int, set[str]] = {0: set(), 1: set()}
    lock = threading.Lock()

    def send(i: int) -> None:
        name = s.post(prompts[i % 2])[0]["served_by"]
        with lock:
            served[i % 2].add(name)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert len(served[0]) == 1 and len(served[1]) == 1, served
    assert served[0] != served[1]


def test_a_repeated_image_is_served_where_it_was_encoded_while_new_images_follow_the_load(stack):
    """mm-embeddings-cache-producer and -scorer: an image goes back to the server that encoded
    it, although its queue is now the longer one; a new image goes to the shorter queue."""
    config = """
plugins:
- {type: mm-embeddings-cache-producer, parameters: {cacheSizeInMBPerServer: 2048}}
- {type: mm-embeddings-cache-scorer}
- {type: queue-scorer}
schedulingProfiles:
- {name: default, plugins: [{pluginRef: mm-embeddings-cache-scorer, weight: 4}, {pluginRef: queue-scorer, weight: 1}]}
"""
    s = stack(["a", "b"], config)
    s.load(a=0, b=0)

    def image(url: str) -> list:
        return [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": url}}]

    first = s.post(image("https://example.test/cat.png"))[0]["served_by"]
    other = next(x.name for x in s.servers if x.name != first)
    s.load(**{first: 5, other: 0})
    assert s.post(image("https://example.test/cat.png"))[0]["served_by"] == first
    assert s.post(image("https://example.test/dog.png"))[0]["served_by"] == other
