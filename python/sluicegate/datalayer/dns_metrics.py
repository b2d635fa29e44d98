"""Prometheus families for hostname endpoints: how many addresses each hostname has now and
how often resolving it failed (our extras, hence the `sluicegate_` prefix)."""

from __future__ import annotations

from typing import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .hostnames import HostnameResolution


class HostnameCollector(Collector):
    def __init__(self, resolution: HostnameResolution) -> None:
        self._resolution = resolution

    def collect(self) -> Iterator[Metric]:
        states = sorted(self._resolution.hostnames.items())
        if not states:
            return  # no hostname endpoints: nothing to report, and no families beyond upstream's
        g = GaugeMetricFamily("sluicegate_dns_hostname_addresses",
                              "Addresses a hostname endpoint currently has (0: not resolving, skipped).",
                              labels=["hostname"])
        up = GaugeMetricFamily("sluicegate_dns_hostname_unresolved",
                               "1 while the hostname's last resolution failed.", labels=["hostname"])
        c = CounterMetricFamily("sluicegate_dns_resolution_failures",
                                "Resolutions of a hostname endpoint that failed (NXDOMAIN, no records, timeout).",
                                labels=["hostname"])
        for name, state in states:
            g.add_metric([name], len(state.addresses))
            up.add_metric([name], 1 if state.failing else 0)
            c.add_metric([name], state.failures)
        yield g
        yield up
        yield c
