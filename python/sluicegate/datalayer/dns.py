"""Asks DNS for a hostname's addresses (A and AAAA) and how long they may be kept (TTL).

The system resolver (/etc/resolv.conf) by default; `--dns-server host:port` points it at one
server instead (tests run their own on 127.0.0.1). Nothing is cached here: the caller keeps
answers for their TTL and decides when to ask again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver

from ..errors import ConfigError
from .discovery import is_ip

DEFAULT_TIMEOUT_S = 2.0


class DnsFailure(Exception):
    """The name did not resolve: NXDOMAIN, no A/AAAA records, or no server answered in time."""


@dataclass(frozen=True)
class Answer:
    addresses: tuple[str, ...]  # sorted, IPv4 before IPv6
    ttl_s: float  # the smallest TTL among the answering record sets


def parse_server(value: str, flag: str = "--dns-server") -> tuple[str, int]:
    """`ip`, `ip:port` or `[ipv6]:port` (port 53 when absent)."""
    text = value.strip()
    host, port = text, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise ConfigError(f"{flag}: {value!r} is not ip[:port]")
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        if not port_text.isdigit():
            raise ConfigError(f"{flag}: {value!r} is not ip[:port]")
        port = int(port_text)
    if not is_ip(host):
        raise ConfigError(f"{flag}: {value!r} needs an IP address for the DNS server")
    if not 0 < port < 65536:
        raise ConfigError(f"{flag}: port {port} in {value!r} is out of range")
    return host, port


class Resolver:
    def __init__(self, server: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 resolv_conf: str = "/etc/resolv.conf") -> None:
        try:
            self._resolver = dns.asyncresolver.Resolver(filename=resolv_conf, configure=server is None)
        except dns.exception.DNSException as e:  # e.g. no nameserver in /etc/resolv.conf
            raise DnsFailure(f"system resolver: {e}") from None
        if server is not None:
            host, port = parse_server(server)
            self._resolver.nameservers = [host]
            self._resolver.port = port
        self._resolver.lifetime = timeout_s
        self._resolver.cache = None
        self.server = server or "system"

    async def resolve(self, hostname: str) -> Answer:
        """Both families at once; DnsFailure when neither has an address."""
        results = await asyncio.gather(self._query(hostname, "A"), self._query(hostname, "AAAA"),
                                       return_exceptions=True)
        addresses: list[str] = []
        ttls: list[float] = []
        errors: list[BaseException] = []
        for r in results:
            if isinstance(r, BaseException):
                errors.append(r)
            elif r is not None:
                addresses += sorted(rd.address for rd in r)
                ttls.append(float(r.rrset.ttl))
        if not addresses:
            reason = "; ".join(str(e) for e in errors) or "no A or AAAA records"
            raise DnsFailure(f"{hostname}: {reason}")
        return Answer(tuple(addresses), min(ttls))

    async def _query(self, hostname: str, rdtype: str) -> dns.resolver.Answer | None:
        try:
            return await self._resolver.resolve(hostname, rdtype, search=False)
        except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
            return None  # this family has nothing; the other may
        except dns.exception.DNSException as e:
            raise DnsFailure(f"{type(e).__name__}: {e}") from None
