"""The activator against a real kube-apiserver, end to end: client → real Envoy → the EPP
(`sluicegate run --pool-name ...` with flow control) → a simulator that exists only while the
Deployment named by the pool's annotations has replicas. No controller runs, so the test is
the kubelet: when replicas become 1 it starts the simulator and creates a Ready Pod for it."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families
from sluicegate.sim.config import SimConfig
from sluicegate.sim.server import SimServer
from sluicegate.standalone.ports import find_free_port

from tests.harness import http_request
from tests.integration.extproc_client import exchange, request_body, request_headers
from tests.integration.test_activator_static import epp_behind_envoy
from tests.kube.epp import FAST_LEASE, KubeEpp, health
from tests.kube.objects import wait_until

pytestmark = [pytest.mark.kube, pytest.mark.envoy]

CHAT = "/v1/chat/completions"
APP = {"app": "model"}
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
# Flow control on; its own TTLs longer than any grace period here, so the activator's is the one seen.
FLOW = """
featureGates: [flowControl]
flowControl:
  defaultRequestTTL: 60s
  noEndpointRequestTTL: 60s
"""


def chat(content: str = "hello", max_tokens: int = 4, **extra) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens, **extra}


def annotations(grace: str = "20s", delay: str = "120s", **override: str) -> dict[str, str]:
    ann = {"activator.llm-d.ai/target-apiversion": "apps/v1", "activator.llm-d.ai/target-kind": "Deployment",
           "activator.llm-d.ai/target-name": "model", "activator.llm-d.ai/scale-from-zero-grace-period": grace,
           "activator.llm-d.ai/scale-down-delay": delay}
    ann.update({f"activator.llm-d.ai/{k.replace('_', '-')}": v for k, v in override.items()})
    return ann


class Kubelet:
    """Plays the Deployment controller and the kubelet for one single-replica workload: replicas ≥ 1
    → a simulator on `port` and a Ready Pod at 127.0.0.1; replicas 0 → Pod deleted, simulator
    stopped. With `comes_up=False` the Pod never appears (a model that cannot start)."""

    def __init__(self, kube, loop_thread, port: int, sim: SimConfig, comes_up: bool = True) -> None:
        self.kube, self._lt, self.port, self._sim_config = kube, loop_thread, port, sim
        self.apps = client.AppsV1Api(kube.api)
        self.comes_up = comes_up
        self.allow = threading.Event()  # cleared: hold the Pod back (the model is still loading)
        self.allow.set()
        self.sim: SimServer | None = None
        self.up_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-kubelet", daemon=True)

    def create_deployment(self, replicas: int) -> None:
        self.apps.create_namespaced_deployment(self.kube.ns, {
            "metadata": {"name": "model"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": APP},
                     "template": {"metadata": {"labels": APP},
                                  "spec": {"containers": [{"name": "model-server", "image": "sluicegate/sim"}]}}}})

    def deployment(self):
        return self.apps.read_namespaced_deployment("model", self.kube.ns)

    def replicas(self) -> int:
        return self.deployment().spec.replicas

    def replica_changes(self) -> int:
        """How many times spec changed since creation (each replicas write bumps generation)."""
        return self.deployment().metadata.generation - 1

    def set_replicas(self, n: int) -> None:
        self.apps.patch_namespaced_deployment_scale("model", self.kube.ns, {"spec": {"replicas": n}})

    def start(self) -> "Kubelet":
        self._reconcile()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        self._down()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self._reconcile()

    def _reconcile(self) -> None:
        want = self.replicas()
        if want and self.sim is None and self.comes_up and self.allow.is_set():
            self.sim = SimServer(self._sim_config)
            self._lt.run(self.sim.start(port=self.port))
            self.kube.ready_pod("model-0", {**APP, "llm-d.ai/engine-type": "vllm"}, "127.0.0.1")
            self.up_at = time.monotonic()
        elif not want and self.sim is not None:
            self._down()

    def _down(self) -> None:
        if self.sim is not None:
            self.kube.delete_pod_now("model-0")
            self._lt.run(self.sim.stop())
            self.sim = None


def create_annotated_pool(kube, port: int, ann: dict[str, str]) -> None:
    kube.create_pool("pool", APP, [port])
    kube.custom.patch_namespaced_custom_object("inference.networking.k8s.io", "v1", kube.ns, "inferencepools", "pool",
                                               {"metadata": {"annotations": ann}})


class Stack:
    def __init__(self, kube, control_plane, loop_thread, *, replicas: int, ann: dict[str, str], comes_up=True,
                 epp_args: tuple[str, ...] = (), sim: SimConfig | None = None, config: str = FLOW) -> None:
        port = find_free_port()
        self.kubelet = Kubelet(kube, loop_thread, port, sim or SimConfig(name="model-0", speedup=50), comes_up)
        self.kubelet.create_deployment(replicas)
        create_annotated_pool(kube, port, ann)
        self.kubelet.start()
        self.epp = KubeEpp(control_plane.apiserver.kubeconfig, kube.ns, "--config-text", config, *epp_args)
        try:
            self.envoy = epp_behind_envoy(self.epp)
        except BaseException:
            self.kubelet.stop()
            raise

    def post(self, body: dict | None = None, timeout: float = 60.0):
        return http_request(self.envoy.url, CHAT, body or chat(), timeout=timeout)

    def metric(self, name: str, **labels: str) -> float:
        _, _, text = http_request(f"http://127.0.0.1:{self.epp.metrics_port}", "/metrics")
        for fam in text_string_to_metric_families(text.decode()):
            for s in fam.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return s.value
        raise AssertionError(f"{name}{labels} not exported")

    def scale_events(self, direction: str) -> float:
        return self.metric("sluicegate_activator_scale_events_total", direction=direction)

    def log(self) -> str:
        return self.epp.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.envoy.stop_blocking()
        self.epp.stop()
        self.kubelet.stop()


@pytest.fixture
def stack(kube, control_plane, loop_thread):
    made: list[Stack] = []

    def make(**kw) -> Stack:
        s = Stack(kube, control_plane, loop_thread, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def concurrently(stack: Stack, n: int, body: dict | None = None) -> list[tuple[int, float, bytes, float]]:
    """n requests at once; (status, seconds until answered, body, monotonic time answered) each."""
    def one(_):
        t0 = time.monotonic()
        status, _, data = stack.post(body)
        t1 = time.monotonic()
        return status, t1 - t0, data, t1

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_requests_at_zero_wait_scale_up_once_and_all_succeed(stack):
    s = stack(replicas=0, ann=annotations(grace="20s"))
    s.kubelet.allow.clear()  # the model "loads" until the test has seen every request waiting
    with ThreadPoolExecutor(1) as ex:
        results = ex.submit(concurrently, s, 20)
        wait_until(lambda: s.metric("sluicegate_scale_from_zero_waiting_requests", inference_pool="pool") == 20,
                   timeout=15, interval=0.05, what="20 requests waiting for capacity")
        assert s.kubelet.replicas() == 1 and s.scale_events("up") == 1
        s.kubelet.allow.set()
        out = results.result(timeout=60)
    assert [status for status, *_ in out] == [200] * 20
    assert s.kubelet.replica_changes() == 1  # exactly one scale-up however many requests waited
    assert s.scale_events("up") == 1
    assert s.metric("sluicegate_scale_from_zero_waiting_requests", inference_pool="pool") == 0
    up = s.kubelet.up_at
    assert up is not None and min(done for *_, done in out) >= up  # none went before the pod was Ready
    print(f"pod Ready → first response {min(done for *_, done in out) - up:.3f} s, "
          f"last {max(done for *_, done in out) - up:.3f} s")


def test_a_client_that_gives_up_while_held_leaves_its_queue(stack):
    s = stack(replicas=0, ann=annotations(grace="20s"))
    s.kubelet.allow.clear()
    with pytest.raises(TimeoutError):
        s.post(timeout=1.0)  # the client hangs up; Envoy ends the ext_proc stream
    wait_until(lambda: s.metric("sluicegate_scale_from_zero_waiting_requests", inference_pool="pool") == 0,
               timeout=10, interval=0.05, what="held request gone")
    assert s.metric("sluicegate_flow_control_requests_total", outcome="cancelled") == 1
    s.kubelet.allow.set()
    assert s.post()[0] == 200 and s.kubelet.replica_changes() == 1


def test_time_from_first_request_to_first_response_at_zero(stack):
    s = stack(replicas=0, ann=annotations(grace="20s"))
    t0 = time.monotonic()
    status, _, body = s.post()
    elapsed = time.monotonic() - t0
    assert status == 200, body
    assert s.kubelet.replica_changes() == 1
    print(f"scale from zero, kubelet playing with no image pull: first response after {elapsed:.3f} s")


def test_no_ready_endpoint_within_the_grace_period_fails_every_waiting_request_with_503(stack):
    s = stack(replicas=0, ann=annotations(grace="3s"), comes_up=False)
    # The grace period applies once the activator manages the pool (it reads the annotation after
    # start-up); a request sent before then waits on flow control's own TTL instead.
    wait_until(lambda: s.metric("sluicegate_activator_managed", inference_pool="pool") == 1, timeout=15,
               interval=0.05, what="activator managing the pool")
    out = concurrently(s, 20)
    assert [status for status, *_ in out] == [503] * 20
    for _, took, body, _ in out:
        # Failed by the grace period (the body names it), not earlier; a busy machine may answer late.
        assert took >= 2.7, took
        assert b"grace period" in body
    assert s.kubelet.replicas() == 1 and s.kubelet.replica_changes() == 1
    assert s.metric("sluicegate_scale_from_zero_expired_requests_total", inference_pool="pool") == 20
    assert s.metric("sluicegate_scale_from_zero_waiting_requests", inference_pool="pool") == 0


def test_idle_pool_scales_to_zero_once_and_a_request_resets_the_delay(stack):
    delay = 1.5
    s = stack(replicas=1, ann=annotations(delay=f"{delay}s"), epp_args=("--enable-scale-to-zero",))
    # Serving (scaled back up if it idled to zero while the stack started); count from here.
    wait_until(lambda: s.post()[0] == 200, timeout=15, interval=0.1, what="pool serving")
    changes, downs, ups = s.kubelet.replica_changes(), s.scale_events("down"), s.scale_events("up")
    for _ in range(3):  # a request every 0.6 delay keeps it up
        time.sleep(0.6 * delay)  # pacing: the client's request interval
        assert s.post()[0] == 200
    assert s.kubelet.replicas() == 1 and s.scale_events("down") == downs
    wait_until(lambda: s.kubelet.replicas() == 0, timeout=3 * delay, interval=0.05, what="scaled to zero")
    time.sleep(2 * delay)  # idle on: nothing more to do
    assert s.kubelet.replica_changes() == changes + 1 and s.scale_events("down") == downs + 1
    assert s.post()[0] == 200  # and the next request brings it back
    assert s.kubelet.replica_changes() == changes + 2 and s.scale_events("up") == ups + 1


def test_a_long_stream_in_flight_blocks_scale_to_zero(stack):
    delay = 1.0
    slow = SimConfig(name="model-0", alpha_ms=10.0, beta_ms=0.0, max_output_tokens=4096)  # ~10 ms a token
    s = stack(replicas=1, ann=annotations(delay=f"{delay}s"), epp_args=("--enable-scale-to-zero",), sim=slow)
    # Serving (scaled back up if it idled to zero while the stack started); count from here.
    wait_until(lambda: s.post()[0] == 200, timeout=15, interval=0.1, what="pool serving")
    changes, downs = s.kubelet.replica_changes(), s.scale_events("down")
    t0 = time.monotonic()
    status, _, body = s.post(chat(max_tokens=350, stream=True, ignore_eos=True))  # ~3.5 s: 3.5× the delay
    streamed = time.monotonic() - t0
    assert status == 200 and b"[DONE]" in body
    assert streamed > 3 * delay, streamed
    assert s.kubelet.replica_changes() == changes and s.scale_events("down") == downs  # not while it streamed
    wait_until(lambda: s.kubelet.replicas() == 0, timeout=3 * delay, interval=0.05, what="scaled to zero after")


def test_traffic_that_bypasses_this_epp_blocks_scale_to_zero(stack):
    """Another EPP replica's requests are invisible to this one's flow control, but the model
    server reports them: a stream sent straight to the pod keeps the pool up."""
    delay = 1.0
    slow = SimConfig(name="model-0", alpha_ms=10.0, beta_ms=0.0, max_output_tokens=4096)
    s = stack(replicas=1, ann=annotations(delay=f"{delay}s"), epp_args=("--enable-scale-to-zero",), sim=slow)
    wait_until(lambda: s.post()[0] == 200, timeout=15, interval=0.1, what="pool serving")
    changes, downs = s.kubelet.replica_changes(), s.scale_events("down")
    t0 = time.monotonic()
    status, _, body = http_request(f"http://127.0.0.1:{s.kubelet.port}", CHAT,
                                   chat(max_tokens=350, stream=True, ignore_eos=True), timeout=30)
    assert status == 200 and time.monotonic() - t0 > 3 * delay
    assert s.kubelet.replica_changes() == changes and s.scale_events("down") == downs
    wait_until(lambda: s.kubelet.replicas() == 0, timeout=3 * delay, interval=0.05, what="scaled to zero after")


def test_replicas_set_above_one_by_an_autoscaler_are_left_alone(stack):
    delay = 1.0
    s = stack(replicas=3, ann=annotations(delay=f"{delay}s"), epp_args=("--enable-scale-to-zero",))  # an HPA's
    time.sleep(3 * delay)  # observation window: three delays in which it must not scale
    assert s.kubelet.replicas() == 3 and s.scale_events("down") == 0
    s.kubelet.set_replicas(1)  # the autoscaler steps back to 1: that edge is the activator's again
    wait_until(lambda: s.kubelet.replicas() == 0, timeout=3 * delay, interval=0.05, what="1 → 0")


@pytest.mark.parametrize("override, field, value", [
    ({"target_kind": "Deploymnet"}, "activator.llm-d.ai/target-kind", "'Deploymnet'"),
    ({"target_name": ""}, "activator.llm-d.ai/target-name", "''"),
    ({"scale_from_zero_grace_period": "soon"}, "activator.llm-d.ai/scale-from-zero-grace-period", "'soon'"),
    ({"target_kind": "ConfigMap", "target_apiversion": "v1"}, "activator.llm-d.ai/target-kind", "'ConfigMap'"),
    ({"target_kind": "ReplicationController", "target_apiversion": "v1"}, "activator.llm-d.ai/target-kind",
     "'ReplicationController'"),
])
def test_invalid_annotations_are_reported_once_and_the_pool_runs_without_activator(stack, override, field, value):
    s = stack(replicas=1, ann=annotations(delay="0.5s", **override), epp_args=("--enable-scale-to-zero",))
    wait_until(lambda: s.post()[0] == 200, timeout=15, interval=0.1, what="pool serving")
    time.sleep(1.5)  # three scale-down delays and fifteen activator ticks
    assert s.kubelet.replicas() == 1 and s.kubelet.replica_changes() == 0
    assert s.metric("sluicegate_activator_managed", inference_pool="pool") == 0
    reports = [line for line in s.log().splitlines() if "served without an activator" in line]
    assert len(reports) == 1, reports
    assert field in reports[0] and value in reports[0]


def test_annotations_without_flow_control_are_reported_not_ignored(stack):
    s = stack(replicas=1, ann=annotations(), config="featureGates: []\n")
    wait_until(lambda: s.post()[0] == 200, timeout=15, interval=0.1, what="pool serving")
    warnings = [line for line in s.log().splitlines() if "flow control is off" in line]
    assert len(warnings) == 1 and "activator.llm-d.ai" in warnings[0]


def test_only_the_lease_holder_scales_to_zero(kube, control_plane, loop_thread):
    """A follower sees no traffic: left to itself it would take a pool at 1 whose first pod is
    still starting, with requests held at the leader, for idle."""
    delay = 1.0
    port = find_free_port()
    kubelet = Kubelet(kube, loop_thread, port, SimConfig(name="model-0", speedup=50))
    kubelet.allow.clear()  # the model loads until the test says so
    kubelet.create_deployment(0)
    create_annotated_pool(kube, port, annotations(delay=f"{delay}s"))
    kubelet.start()
    args = ("--config-text", FLOW, "--enable-scale-to-zero", "--ha-enable-leader-election", *FAST_LEASE)
    epps: list[KubeEpp] = []
    answers: list = []
    try:
        epps = [KubeEpp(control_plane.apiserver.kubeconfig, kube.ns, *args).start() for _ in range(2)]
        leader = wait_until(lambda: [p for p in epps if health(p.health_port) == "SERVING"], timeout=15,
                            what="a leader")[0]
        body = json.dumps(chat()).encode()
        held = threading.Thread(target=lambda: answers.extend(exchange(
            leader.port, [request_headers(CHAT), request_body(body, True)], timeout=30)))
        held.start()
        wait_until(lambda: kubelet.replicas() == 1, timeout=10, what="scaled 0 → 1 by the leader")
        time.sleep(3 * delay)  # three delays in which the follower saw nothing at all
        assert kubelet.replicas() == 1 and kubelet.replica_changes() == 1
        kubelet.allow.set()
        held.join(30)
        assert answers and answers[0].WhichOneof("response") == "request_headers", answers
    finally:
        for p in epps:
            p.stop()
        kubelet.stop()
