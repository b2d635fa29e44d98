"""Pool members beyond Pods: EndpointSlice addresses and ExternalName Services, and the models
bound to a pool (its allow-list)."""

from sluicegate.kube.pool import PoolModels, PoolSpec, pool_endpoints, pool_models

SEL = {"app": "m"}


def _slice(name, port, endpoints, labels=SEL, address_type="IPv4"):
    return {"metadata": {"name": name, "namespace": "ns", "labels": {**labels, "kubernetes.io/service-name": "svc"}},
            "addressType": address_type, "ports": [{"port": port}] if port else None, "endpoints": endpoints}


def test_ready_slice_addresses_on_target_ports_become_endpoints():
    spec = PoolSpec(SEL, (8000, 8001))
    slices = [_slice("s1", 8000, [{"addresses": ["10.0.0.1"], "conditions": {"ready": True}},
                                  {"addresses": ["10.0.0.2"]},
                                  {"addresses": ["10.0.0.3"], "conditions": {"ready": False}}]),
              _slice("s2", 8000, [{"addresses": ["10.0.0.9"]}], labels={"app": "other"}),
              _slice("s3", 8000, [{"addresses": ["fd00::1"]}], address_type="IPv6"),
              _slice("s4", None, [{"addresses": ["10.0.0.4"]}])]
    eps = pool_endpoints(spec, [], slices)
    assert [e.hostport for e in eps] == ["10.0.0.1:8000", "10.0.0.2:8000", "[fd00::1]:8000",
                                         "10.0.0.4:8000", "10.0.0.4:8001"]
    assert eps[0].name == "svc-10.0.0.1-rank-0" and eps[0].labels["app"] == "m"
    # The port's place in targetPorts is its rank (the KV-event ports a precise producer dials).
    assert [e.rank for e in eps] == [0, 0, 0, 0, 1] and eps[-1].name == "svc-10.0.0.4-rank-1"


def test_externalname_services_are_hostname_endpoints_and_others_are_ignored():
    spec = PoolSpec(SEL, (8000,))
    services = [{"metadata": {"name": "ext", "namespace": "ns", "labels": SEL},
                 "spec": {"type": "ExternalName", "externalName": "Models.Example.COM."}},
                {"metadata": {"name": "cip", "namespace": "ns", "labels": SEL}, "spec": {"type": "ClusterIP"}}]
    (ep,) = pool_endpoints(spec, [], [], services)
    assert (ep.name, ep.hostport, ep.is_hostname) == ("ext-rank-0", "models.example.com:8000", True)


def test_an_empty_selector_takes_every_pod_but_no_service():
    spec = PoolSpec({}, (8000,))
    slices = [_slice("s1", 8000, [{"addresses": ["10.0.0.1"]}])]
    assert pool_endpoints(spec, [], slices) == []


def test_an_address_given_by_a_pod_and_a_slice_is_one_endpoint_named_after_the_pod():
    spec = PoolSpec(SEL, (8000,))
    pod = {"metadata": {"name": "p", "labels": SEL},
           "status": {"podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}}
    eps = pool_endpoints(spec, [pod], [_slice("s1", 8000, [{"addresses": ["10.0.0.1"]}])])
    assert [(e.name, e.hostport) for e in eps] == [("p-rank-0", "10.0.0.1:8000")]


def test_models_bound_to_the_pool_come_from_its_annotation_and_its_rewrites():
    pool = {"metadata": {"annotations": {"sluicegate.io/served-models": "a, b"}}}
    rewrites = [{"spec": {"poolRef": {"name": "pool"}, "rules": [
                    {"matches": [{"model": {"value": "alias"}}], "targets": [{"modelRewrite": "c"}]}]}},
                {"spec": {"poolRef": {"name": "elsewhere"}, "rules": [{"targets": [{"modelRewrite": "z"}]}]}}]
    assert pool_models(pool, rewrites, "pool") == PoolModels(frozenset({"a", "b", "alias", "c"}), True)
    assert pool_models({"metadata": {}}, rewrites, "pool") == PoolModels(frozenset({"alias", "c"}), False)


def test_each_target_port_of_a_pod_is_an_endpoint_of_its_rank():
    spec = PoolSpec(SEL, (8000, 8001))
    pod = {"metadata": {"name": "p", "labels": SEL},
           "status": {"podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}}
    eps = pool_endpoints(spec, [pod], [])
    assert [(e.name, e.hostport, e.rank) for e in eps] == [("p-rank-0", "10.0.0.1:8000", 0),
                                                          ("p-rank-1", "10.0.0.1:8001", 1)]
