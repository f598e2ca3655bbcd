"""One TLS context per process, as strict as httpx's own, shared by the clients blipflow makes."""

from __future__ import annotations

import ssl

from blipflow.network import tls
from blipflow.network.accounts import new_client
from blipflow.network.identity import IdentityResolver
from blipflow.store.history import Store


def test_the_context_checks_certificates_and_host_names_and_is_built_once() -> None:
    context = tls.verified()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 0  # trusts the authorities of the bundle
    assert tls.verified() is context


def test_the_clients_blipflow_makes_verify_with_it(tmp_path) -> None:
    """Read from httpx's transport, the one place a client keeps its context."""
    resolver = IdentityResolver(Store(tmp_path / "s.duckdb"), plc_url="https://plc.invalid", ttl_seconds=60)
    try:
        assert resolver.http._transport._pool._ssl_context is tls.verified()
    finally:
        resolver.close()
    client = new_client("https://pds.invalid", 5)
    try:
        assert client.request._client._transport._pool._ssl_context is tls.verified()
    finally:
        client.request.close()
