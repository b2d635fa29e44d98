"""Hostname endpoints resolved through a real DNS server on 127.0.0.1 whose answers the test sets."""

import asyncio

import pytest

from sluicegate.datalayer.discovery import Endpoint
from sluicegate.datalayer.dns import DnsFailure, Resolver, parse_server
from sluicegate.datalayer.dns_metrics import HostnameCollector
from sluicegate.datalayer.hostnames import HOSTNAME_LABEL, HostnameResolution
from sluicegate.errors import ConfigError
from tests.dns_server import DnsServer


@pytest.fixture
def dns_server():
    with DnsServer() as server:
        yield server


async def _until(predicate, timeout=10.0):
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)  # poll interval of this bounded wait
    raise AssertionError("condition not reached in time")


def test_resolver_returns_both_families_and_the_smallest_ttl(dns_server):
    dns_server.set("both.test", ["127.0.0.3", "::1", "127.0.0.2"], ttl=7)
    answer = asyncio.run(Resolver(dns_server.address).resolve("both.test"))
    assert answer.addresses == ("127.0.0.2", "127.0.0.3", "::1")
    assert answer.ttl_s == 7


def test_an_unknown_name_is_a_dns_failure_naming_it(dns_server):
    with pytest.raises(DnsFailure, match="missing.test"):
        asyncio.run(Resolver(dns_server.address).resolve("missing.test"))


@pytest.mark.parametrize("value, expected", [("127.0.0.1", ("127.0.0.1", 53)), ("127.0.0.1:5353", ("127.0.0.1", 5353)),
                                             ("[::1]:53", ("::1", 53)), ("::1", ("::1", 53))])
def test_dns_server_flag_forms(value, expected):
    assert parse_server(value) == expected


@pytest.mark.parametrize("value", ["dns.example:53", "127.0.0.1:x", "127.0.0.1:70000"])
def test_bad_dns_server_flags_name_the_value(value):
    with pytest.raises(ConfigError, match="--dns-server"):
        parse_server(value)


def test_each_address_becomes_an_endpoint_labelled_with_the_hostname_and_follows_dns(dns_server):
    dns_server.set("pool.test", ["127.0.0.2", "127.0.0.3"], ttl=1)
    seen: list[list[str]] = []
    last: list[Endpoint] = []

    def on_change(eps):
        last[:] = eps
        seen.append([e.hostport for e in eps])

    async def scenario():
        r = HostnameResolution(on_change, Resolver(dns_server.address), refresh_s=0.2)
        r.update([Endpoint("ip", "127.0.0.9", 80), Endpoint("gw", "pool.test", 8000, labels={"a": "b"})])
        r.start()
        await _until(lambda: len(last) == 3)
        assert [e.labels.get(HOSTNAME_LABEL) for e in last] == [None, "pool.test", "pool.test"]
        assert last[1].labels["a"] == "b" and last[1].name == "gw-127.0.0.2"
        dns_server.set("pool.test", ["127.0.0.4"], ttl=1)
        await _until(lambda: [e.hostport for e in last] == ["127.0.0.9:80", "127.0.0.4:8000"])
        await r.stop()

    asyncio.run(scenario())
    assert seen[0] == ["127.0.0.9:80"]  # IP endpoints do not wait for DNS


def test_a_name_that_stops_resolving_leaves_after_its_ttl_and_comes_back(dns_server):
    dns_server.set("flaky.test", ["127.0.0.2"], ttl=1)
    last: list[str] = []

    async def scenario():
        r = HostnameResolution(lambda eps: last.__setitem__(slice(None), [e.hostport for e in eps]),
                               Resolver(dns_server.address, timeout_s=0.5), refresh_s=0.2)
        r.update([Endpoint("gw", "flaky.test", 8000)])
        r.start()
        await _until(lambda: last == ["127.0.0.2:8000"])
        dns_server.set("flaky.test", [])
        await _until(lambda: r.hostnames["flaky.test"].failing)
        assert last == ["127.0.0.2:8000"]  # kept while the TTL lasts
        await _until(lambda: last == [])
        dns_server.set("flaky.test", ["127.0.0.2"], ttl=1)
        await _until(lambda: last == ["127.0.0.2:8000"])
        state = r.hostnames["flaky.test"]
        assert not state.failing and state.failures >= 1
        await r.stop()

    asyncio.run(scenario())


def test_a_name_that_never_resolves_is_skipped_counted_and_logged_once(dns_server, caplog):
    last: list[list[str]] = []

    async def scenario():
        r = HostnameResolution(lambda eps: last.append([e.hostport for e in eps]),
                               Resolver(dns_server.address), refresh_s=0.2)
        r.update([Endpoint("ip", "127.0.0.9", 80), Endpoint("gw", "nowhere.test", 8000)])
        r.start()
        await _until(lambda: r.hostnames["nowhere.test"].failures >= 3)
        metrics = {m.name: m.samples[0].value for m in HostnameCollector(r).collect()}
        await r.stop()
        return metrics

    metrics = asyncio.run(scenario())
    assert last == [["127.0.0.9:80"]]
    assert [rec for rec in caplog.records if "nowhere.test" in rec.getMessage()].__len__() == 1
    assert metrics["sluicegate_dns_hostname_addresses"] == 0
    assert metrics["sluicegate_dns_hostname_unresolved"] == 1
    assert metrics["sluicegate_dns_resolution_failures"] >= 3


def test_a_hostname_removed_from_discovery_stops_being_followed(dns_server):
    dns_server.set("gone.test", ["127.0.0.2"], ttl=1)
    last: list[str] = []

    async def scenario():
        r = HostnameResolution(lambda eps: last.__setitem__(slice(None), [e.hostport for e in eps]),
                               Resolver(dns_server.address), refresh_s=0.2)
        r.update([Endpoint("gw", "gone.test", 8000)])
        r.start()
        await _until(lambda: last == ["127.0.0.2:8000"])
        r.update([])
        assert last == [] and not r.hostnames
        await asyncio.sleep(0)  # one loop turn, not time: the cancelled tasks run their cancellation
        assert all(t.done() or t.cancelling() for t in r._tasks.values())
        await r.stop()

    asyncio.run(scenario())



def test_a_system_resolver_with_no_nameserver_is_a_dns_failure_not_a_crash(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("# no nameserver\n")
    with pytest.raises(DnsFailure, match="system resolver"):
        Resolver(resolv_conf=str(conf))
