"""The TLS settings of every HTTP client blipflow makes for the network, built once per process.

httpx builds a new SSL context for every client, and building one reads the whole CA bundle (about 40 ms
of CPU); clients are made per account session, per handle looked up and per identity resolver. The
context is the one httpx would build — certifi's bundle, or the one SSL_CERT_FILE / SSL_CERT_DIR names
when the first client is made (at a process's start) — and one context serves every client and thread.
"""

from __future__ import annotations

import ssl
from functools import cache

import httpx


@cache
def verified() -> ssl.SSLContext:
    """httpx's default context: certificates and host names checked against the trusted authorities."""
    return httpx.create_ssl_context()
