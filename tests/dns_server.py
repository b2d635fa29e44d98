"""A DNS server on 127.0.0.1 whose answers the test sets while traffic flows.

UDP only (answers are small), one thread, A and AAAA records with a TTL; a name with no
records gets NXDOMAIN. Started and stopped by its owner (a context manager).
"""

from __future__ import annotations

import ipaddress
import socket
import threading

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class DnsServer:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((host, 0))
        self._sock.settimeout(0.1)
        self.address = f"{host}:{self._sock.getsockname()[1]}"
        self._records: dict[str, tuple[list[str], int]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.queries = 0
        self._thread = threading.Thread(target=self._serve, name="test-dns", daemon=True)

    def set(self, name: str, addresses: list[str], ttl: int = 1) -> None:
        """`name` answers `addresses` (v4 and v6 mixed) from now on; [] makes it NXDOMAIN."""
        with self._lock:
            self._records[name.lower().rstrip(".")] = (list(addresses), ttl)

    def __enter__(self) -> "DnsServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._sock.recvfrom(4096)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            try:
                query = dns.message.from_wire(data)
            except Exception:
                continue
            self.queries += 1
            self._sock.sendto(self._answer(query).to_wire(), peer)

    def _answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name = question.name.to_text().lower().rstrip(".")
        with self._lock:
            addresses, ttl = self._records.get(name, ([], 0))
        if not addresses:
            response.set_rcode(dns.rcode.NXDOMAIN)
            return response
        version = 4 if question.rdtype == dns.rdatatype.A else 6
        wanted = [a for a in addresses if ipaddress.ip_address(a).version == version]
        if wanted and question.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            response.answer.append(dns.rrset.from_text_list(question.name, ttl, dns.rdataclass.IN,
                                                            question.rdtype, wanted))
        return response
