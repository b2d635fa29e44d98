"""ext_proc TLS under upstream's flags: --tls-min-version=VersionTLS13 and unknown cipher suites
are refused by name."""

from __future__ import annotations


import pytest

from sluicegate.errors import ConfigError
from sluicegate.servertls import check_policy


def test_policies_the_server_cannot_keep_are_refused_by_flag():
    with pytest.raises(ConfigError, match="--tls-min-version=VersionTLS13"):
        check_policy("VersionTLS13", ())
    with pytest.raises(ConfigError, match="--tls-cipher-suites: unknown cipher suite 'TLS_FAST'"):
        check_policy(None, ("TLS_FAST",))
    check_policy("VersionTLS12", ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256"))
