"""sluicegate's precise prefix routing against a model server nobody here wrote:
llm-d-inference-sim (llm-d's own simulator, `make inference-sim-bin`; skipped without it),
over real ext_proc gRPC. The EPP tokenizes through the simulator's render API, binds the ZMQ
endpoint the simulators dial, and keys their events from the token ids they carry; both event
encodings. A wrong hash seed shows on /metrics and in the log. An EPP that starts after a
simulator cached a prompt gets its blocks from the simulator's replay socket."""

from __future__ import annotations


import pytest
import yaml

from sluicegate.scheduling.kv_events import REPLAY_PORT_LABEL
from sluicegate.sim.config import DEFAULT_MODEL
from tests.harness import free_port, free_port_to_dial_early, http_request, wait_until
from tests.inference_sim import InferenceSim, missing_reason

from .extproc_client import exchange, header_set, request_body, request_headers
from .test_flowcontrol_extproc import InProcessEpp
from .test_precise_prefix_epp import CHAT, _body, _scrape, _warm_until_events, assert_wrong_seed_shows

pytestmark = pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason()))


def _config(render: str, zmq_endpoint: str, hash_seed: str) -> str:
    # No speculative indexing: a lookup hits only through the simulators' events.
    return f"""
plugins:
- {{type: token-producer, parameters: {{modelName: "{DEFAULT_MODEL}", vllm: {{url: "http://{render}"}}}}}}
- {{type: precise-prefix-cache-producer, parameters: {{
    tokenProcessorConfig: {{blockSize: 16, hashSeed: "{hash_seed}"}}, kvEventsConfig: {{zmqEndpoint: "{zmq_endpoint}"}}}}}}
- {{type: prefix-cache-scorer}}
- {{type: max-score-picker}}
schedulingProfiles: [{{name: p, plugins: [{{pluginRef: prefix-cache-scorer}}, {{pluginRef: max-score-picker}}]}}]
"""


class _Fleet:
    """Three simulators dialling a free endpoint, and the EPP binding it; all stopped by `stop`."""

    def __init__(self, loop_thread, tmp_path) -> None:
        self._loop_thread = loop_thread
        self._tmp_path = tmp_path
        self._made: list = []
        self.zmq_endpoint = f"tcp://127.0.0.1:{free_port_to_dial_early()}"
        self.sims: list[InferenceSim] = []
        self.endpoints: list[dict] = []

    def start_sims(self, sim_seed: str = "42", map_format: bool = False, replay: bool = False) -> list[InferenceSim]:
        """With `replay`, each keeps its batches for replay on a port its endpoint's label names."""
        for i in range(3):
            port = free_port()
            extra = ("--kv-events-replay-endpoint", f"tcp://127.0.0.1:{port}") if replay else ()
            sim = InferenceSim(self.zmq_endpoint, hash_seed=sim_seed, map_format=map_format, seed=1 + i, extra=extra)
            self._made.append(sim)
            self.sims.append(sim)
            self.endpoints.append({"name": f"isim-{i}", "address": "127.0.0.1", "port": sim.port,
                                   **({"labels": {REPLAY_PORT_LABEL: str(port)}} if replay else {})})
        for sim in self.sims:
            sim.wait_ready()
        return self.sims

    def start_epp(self, epp_seed: str = "42") -> InProcessEpp:
        path = self._tmp_path / "endpoints.yaml"
        path.write_text(yaml.safe_dump({"endpoints": self.endpoints}))
        epp = InProcessEpp(self._loop_thread, path, _config(self.sims[0].address, self.zmq_endpoint, epp_seed))
        self._made.append(epp)
        return epp

    def stop(self) -> None:
        for item in reversed(self._made):
            item.stop()


@pytest.fixture
def fleet(loop_thread, tmp_path):
    """start(epp_seed, sim_seed, map_format) -> (InProcessEpp, three simulators); all stopped after."""
    made: list[_Fleet] = []

    def start(epp_seed: str = "42", sim_seed: str = "42", map_format: bool = False):
        made.append(_Fleet(loop_thread, tmp_path))
        sims = made[-1].start_sims(sim_seed, map_format)
        return made[-1].start_epp(epp_seed), sims

    yield start
    for f in made:
        f.stop()


@pytest.fixture
def fleet_parts(loop_thread, tmp_path):
    """A _Fleet whose simulators and EPP the test starts apart."""
    parts = _Fleet(loop_thread, tmp_path)
    yield parts
    parts.stop()


@pytest.mark.parametrize("map_format", [False, True], ids=["array", "map"])
def test_chat_is_routed_to_the_inference_sim_whose_events_report_it(fleet, map_format):
    in_process, sims = fleet(map_format=map_format)
    epp = in_process.epp
    target = sims[2]
    _warm_until_events(epp, target)
    prompt = _body("You are a careful assistant for the billing team; answer from the ledger. " * 12)
    batches = epp.router.kv_event_stats()["batches"]
    assert http_request(f"http://{target.address}", CHAT, prompt)[0] == 200
    # The simulator sends its events in batches of 16 or once a second.
    wait_until(lambda: epp.router.kv_event_stats()["batches"] > batches, timeout=10,
               what="the batch with the prompt's blocks")
    for _ in range(6):  # the index, not chance, decides: every time to the holder
        answers = exchange(epp.port, [request_headers(CHAT), request_body(prompt, True)])
        assert header_set(answers[0].request_headers.response)["x-gateway-destination-endpoint"] == target.address
    stats = epp.router.kv_event_stats()
    # Every chain the simulators started was indexed (a parent of 0 is no parent), and their
    # hashes, llm-d's own block keys, pass the seed check.
    assert stats["unknown_parents"] == 0 and stats["decode_failures"] == 0
    assert stats["engine_hash_checks"] > 0 and stats["engine_hash_mismatches"] == 0
    assert stats["size"] > 0 and stats["lookup_hits"] > 0 and stats["tokenize_failures"] == 0
    assert f'sluicegate_kv_events_decoded_total{{pod_identifier="{target.address}"}}' in _scrape(epp)


def test_a_wrong_hash_seed_against_inference_sim_shows_on_metrics_and_in_the_log(fleet, caplog):
    in_process, sims = fleet(epp_seed="7", sim_seed="42")
    assert_wrong_seed_shows(in_process.epp, sims[0], caplog)


def test_an_epp_started_after_inference_sim_cached_a_prompt_gets_its_blocks_by_replay(fleet_parts):
    """The simulators cache a prompt while no EPP is bound (their batches are lost), then the EPP
    starts. The first batch it receives is numbered past the lost ones, so it asks that
    simulator's replay socket (`--kv-events-replay-endpoint`) for them: the prompt's chain is
    indexed, whole, and routes to its holder."""
    parts = fleet_parts
    target = parts.start_sims(replay=True)[1]
    prompt = _body("You are the archivist; quote the retention policy before answering anything. " * 12)
    assert http_request(f"http://{target.address}", CHAT, prompt)[0] == 200
    epp = parts.start_epp().epp
    _warm_until_events(epp, target)
    wait_until(lambda: epp.kv_events.replays[(target.address, "complete")] == 1, timeout=10,
               what="the replay of the batches sent before the EPP started")
    for _ in range(6):
        answers = exchange(epp.port, [request_headers(CHAT), request_body(prompt, True)])
        assert header_set(answers[0].request_headers.response)["x-gateway-destination-endpoint"] == target.address
    stats = epp.router.kv_event_stats()
    assert epp.kv_events.replayed[target.address] >= 1
    assert stats["unknown_parents"] == 0 and stats["seq_gaps"] == 0 and stats["decode_failures"] == 0
