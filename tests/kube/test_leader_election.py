"""HA: two EPP replicas on one Lease. Only the leader reports SERVING; the follower takes over when
the leader shuts down (lease released) or dies (lease expires); without election both serve."""

from __future__ import annotations

import os
import signal
import time

import pytest
from kubernetes import client

from tests.kube.epp import FAST_LEASE, KubeEpp, health
from tests.kube.objects import wait_until

pytestmark = pytest.mark.kube


@pytest.fixture
def replicas(kube, control_plane):
    kube.create_pool("pool", {"app": "vllm"}, [8000])
    kube.ready_pod("a", {"app": "vllm"}, "10.30.0.1")
    started: list[KubeEpp] = []

    def start(*extra: str) -> KubeEpp:
        p = KubeEpp(control_plane.apiserver.kubeconfig, kube.ns, *extra).start()
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def serving(*epps: KubeEpp) -> list[KubeEpp]:
    return [p for p in epps if health(p.health_port) == "SERVING"]


def lease_holder(kube) -> str | None:
    leases = client.CoordinationV1Api(kube.api).list_namespaced_lease(kube.ns).items
    return leases[0].spec.holder_identity if leases else None


def test_only_the_leader_serves_and_the_follower_takes_over_on_shutdown(replicas, kube):
    a, b = replicas("--ha-enable-leader-election", *FAST_LEASE), replicas("--ha-enable-leader-election", *FAST_LEASE)
    leader = wait_until(lambda: serving(a, b), timeout=10, what="a leader")
    assert len(leader) == 1
    time.sleep(1.5)  # several renew periods: still exactly one
    assert serving(a, b) == leader
    holder = lease_holder(kube)
    follower = b if leader[0] is a else a
    assert health(follower.health_port, "liveness") != "UNAVAILABLE"  # alive, warm, not ready

    assert leader[0].stop() == 0  # SIGTERM: NOT_SERVING, lease released, drain, exit
    assert lease_holder(kube) != holder  # released, not left to expire
    wait_until(lambda: serving(follower) == [follower], timeout=5, what="follower took over")
    assert lease_holder(kube) not in (None, holder)


def test_follower_takes_over_within_the_lease_duration_when_the_leader_dies(replicas, kube):
    a, b = replicas("--ha-enable-leader-election", *FAST_LEASE), replicas("--ha-enable-leader-election", *FAST_LEASE)
    leader = wait_until(lambda: serving(a, b), timeout=10, what="a leader")[0]
    follower = b if leader is a else a
    leader.kill()  # no release: the follower waits for the lease to expire
    wait_until(lambda: serving(follower) == [follower], timeout=3 + 2 * 0.5 + 2, what="takeover after expiry")


def test_without_election_every_replica_serves(replicas):
    a, b = replicas(), replicas()
    wait_until(lambda: len(serving(a, b)) == 2, timeout=10, what="both replicas serving")


def test_sigterm_reports_not_serving_and_hands_over_before_the_drain_ends(replicas, kube):
    a = replicas("--ha-enable-leader-election", *FAST_LEASE, "--drain-timeout", "3")
    b = replicas("--ha-enable-leader-election", *FAST_LEASE, "--drain-timeout", "3")
    leader = wait_until(lambda: serving(a, b), timeout=10, what="a leader")[0]
    follower = b if leader is a else a
    holder = lease_holder(kube)
    os.kill(leader.pid, signal.SIGTERM)
    # While the old leader still drains (process alive): it says NOT_SERVING and the follower leads.
    wait_until(lambda: health(leader.health_port) == "NOT_SERVING", timeout=2, interval=0.01, what="NOT_SERVING")
    wait_until(lambda: serving(follower) == [follower] and health(leader.health_port) == "NOT_SERVING",
               timeout=2.5, interval=0.05, what="takeover while the old leader drains")
    assert lease_holder(kube) not in (None, holder)
