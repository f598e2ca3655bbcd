"""DID → handle and display name, cached with a TTL: in the control plane for dispatch (which never opens
the history store on its way to Letta), in the history store for the CLI, the monitor and maintenance.

Resolution goes through the configured PLC directory and the account's PDS, never DNS (handles are
not verified by DNS here: that needs the open internet, which offline and test networks lack).
"""

from __future__ import annotations

import json
import logging
import re
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Protocol
from urllib.parse import quote, urlsplit

import httpx

from blipflow.config import Settings
from blipflow.control.engine import ControlPlane
from blipflow.control.identities import Identities
from blipflow.model.blip import Identity
from blipflow.model.identifiers import is_did, is_handle
from blipflow.network import tls
from blipflow.store.history import Store

log = logging.getLogger(__name__)

PROFILE_COLLECTION = "app.bsky.actor.profile"
# A DID that could not be resolved is not tried again for this long (dispatch must not wait on it).
RETRY_FAILED_AFTER = timedelta(minutes=5)
IN_MEMORY_AT_MOST = 100_000  # identities kept in memory (some 30 MB at most)
MAX_REPLY_BYTES = 256 * 1024
MAX_URL_LENGTH = 2048
URL_TEXT = re.compile(r"[!-~]+")  # printable ASCII, no spaces
# Bluesky's own limit is 64 graphemes; more would only crowd the header line of every blip.
MAX_DISPLAY_NAME = 64
# C0 and C1 controls, lone surrogates, and the bidi embeddings, overrides and isolates.
UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")


@dataclass(frozen=True)
class RefreshedIdentities:
    resolved: int
    unresolved: int  # kept as they were: the PLC or PDS did not answer, or no longer knows the DID


class IdentityCache(Protocol):
    """Where resolved identities are kept: the history store, or the control plane's `Identities`."""

    def identities(self, dids: list[str]) -> dict[str, Identity]: ...

    def save_identities(self, identities: list[Identity]) -> None: ...

    def expired_identities(self, fetched_before: datetime, limit: int) -> list[str]: ...


class IdentityResolver:
    @classmethod
    def from_settings(cls, store: Store, settings: Settings) -> IdentityResolver:
        """A resolver on the history store's cache, which also counts its hits and misses for `status`."""
        return cls(store, plc_url=settings.bluesky.plc_uri, ttl_seconds=settings.identity.ttl_seconds,
                   counted_in=store)

    @classmethod
    def in_control_plane(cls, plane: ControlPlane, settings: Settings) -> IdentityResolver:
        """A resolver on the control plane's cache, dispatch's: it never opens the history store."""
        return cls(Identities(plane), plc_url=settings.bluesky.plc_uri, ttl_seconds=settings.identity.ttl_seconds)

    def __init__(self, cache: IdentityCache, *, plc_url: str, ttl_seconds: float, timeout: float = 5.0,
                 counted_in: Store | None = None) -> None:
        self.cache = cache
        self.counted_in = counted_in  # the store whose counters count the cache's hits and misses, if any
        self.plc_url = plc_url.rstrip("/")
        self.ttl = timedelta(seconds=ttl_seconds)
        self.http = httpx.Client(timeout=timeout, verify=tls.verified())
        self.failed_until: dict[str, datetime] = {}
        # What the cache would say anyway, kept until it could say otherwise: a fresh identity until its TTL
        # ends, one that failed until it is tried again. Dispatch resolves a window's authors for every
        # window, and a read of the cache each time was one more wait for the control plane per window.
        self.in_memory: dict[str, tuple[Identity, datetime]] = {}
        self.unreachable_until = datetime.min.replace(tzinfo=timezone.utc)

    def close(self) -> None:
        self.http.close()

    def resolve(self, dids: list[str]) -> dict[str, Identity]:
        """Identities for `dids`, fresh from the cache where possible; unresolvable DIDs map to a bare Identity."""
        identities, stale = self.cached(dids)
        identities.update(self.refresh(stale, identities))
        return identities

    def cached(self, dids: list[str]) -> tuple[dict[str, Identity], list[str]]:
        """What the cache knows of `dids` (a bare Identity where nothing), and which of them to resolve
        again: unknown or older than the TTL, unless they failed a moment ago. Only reads and counts,
        so it can share a store session with other work."""
        wanted = sorted(set(dids))
        with self.one_open():
            return self._cached(wanted)

    def one_open(self) -> AbstractContextManager[None]:
        """One open of the history store for the read and the count, when both are there."""
        return self.counted_in.session() if self.counted_in is not None else nullcontext()

    def _cached(self, wanted: list[str]) -> tuple[dict[str, Identity], list[str]]:
        now = datetime.now(timezone.utc)
        known = self.kept_in_memory(wanted, now)
        if len(known) < len(wanted):
            known.update(self.cache.identities([did for did in wanted if did not in known]))
        fresh_after = now - self.ttl
        identities: dict[str, Identity] = {}
        stale: list[str] = []
        for did in wanted:
            identity = known.get(did)
            identities[did] = identity or Identity(did, None, None, None, None)
            fresh = identity is not None and identity.fetched_at is not None and identity.fetched_at >= fresh_after
            if fresh:
                self.keep_in_memory(identities[did], identity.fetched_at + self.ttl, now)
            elif self.failed_until.get(did, now) <= now:
                stale.append(did)
            else:
                self.keep_in_memory(identities[did], self.failed_until[did], now)
        if wanted and self.counted_in is not None:
            self.counted_in.add_counters({"identity.cache_hits": len(wanted) - len(stale), "identity.cache_misses": len(stale)})
        return identities, stale

    def kept_in_memory(self, dids: list[str], now: datetime) -> dict[str, Identity]:
        return {did: kept[0] for did in dids if (kept := self.in_memory.get(did)) is not None and now < kept[1]}

    def keep_in_memory(self, identity: Identity, until: datetime, now: datetime) -> None:
        """Keep `identity` in memory until `until`; once many are kept, those past it are dropped."""
        if len(self.in_memory) >= IN_MEMORY_AT_MOST:
            self.in_memory = {did: kept for did, kept in self.in_memory.items() if now < kept[1]}
            if len(self.in_memory) >= IN_MEMORY_AT_MOST:
                self.in_memory.clear()
        self.in_memory[identity.did] = (identity, until)

    def refresh_expired(self, limit: int) -> RefreshedIdentities:
        """Resolve again up to `limit` cached identities older than the TTL (or never resolved), the
        longest-waiting first, so that dispatch and `history` find them fresh instead of waiting on the PLC."""
        dids = self.cache.expired_identities(datetime.now(timezone.utc) - self.ttl, limit)
        known = self.cache.identities(dids)
        resolved = self.refresh(dids, known)
        refreshed = sum(1 for did in dids if resolved[did].fetched_at != known[did].fetched_at)
        return RefreshedIdentities(refreshed, len(dids) - refreshed)

    def refresh(self, dids: list[str], known: dict[str, Identity]) -> dict[str, Identity]:
        """Resolve `dids` over the network and cache what resolved."""
        resolved = self.fetch_all(dids, known)
        self.remember(resolved)
        return resolved

    def fetch_all(self, dids: list[str], known: dict[str, Identity]) -> dict[str, Identity]:
        """Resolve `dids` over the network only, never touching the store: a caller may abandon this
        half-way (a DuckDB call cannot be)."""
        return {did: self.fetch(did, known.get(did)) for did in dids}

    def remember(self, resolved: dict[str, Identity]) -> None:
        """Cache those of `resolved` that did resolve."""
        fetched = [identity for identity in resolved.values() if identity.fetched_at is not None]
        if fetched:
            self.cache.save_identities(fetched)

    def fetch(self, did: str, known: Identity | None) -> Identity:
        """Resolve one DID now. On failure, or an answer that is not what was asked for, keep what was known
        (a handle from an identity event, say)."""
        try:
            document = self.did_document(did)
            handle, pds = claimed_handle(document), pds_endpoint(document)
            display_name = self.display_name(did, pds) if pds else None
        except (httpx.HTTPError, ValueError) as error:
            now = datetime.now(timezone.utc)
            self.failed_until[did] = now + RETRY_FAILED_AFTER
            if not isinstance(error, httpx.TransportError):
                log.warning("cannot resolve %s: %s; trying again in %s", did, error, RETRY_FAILED_AFTER)
            elif self.unreachable_until <= now:  # one line for a directory that is down, not one per author
                self.unreachable_until = now + RETRY_FAILED_AFTER
                log.warning("cannot reach the PLC directory %s: %s; authors stay unresolved for now, "
                            "each tried again in %s", self.plc_url, error, RETRY_FAILED_AFTER)
            return known or Identity(did, None, None, None, None)
        return Identity(did, handle, display_name, pds, datetime.now(timezone.utc))

    def did_document(self, did: str) -> dict:
        if not is_did(did):
            raise BadReply(f"{shown(did)} is not a DID")
        if did.startswith("did:plc:"):
            url = f"{self.plc_url}/{quote(did)}"
        elif did.startswith("did:web:"):
            url = f"https://{did.removeprefix('did:web:').replace(':', '/')}/.well-known/did.json"
        else:
            raise ValueError(f"unsupported DID method in {did}")
        status, document = self.json_reply("its DID document", url)
        if status != 200:
            raise BadReply(f"its DID document: {url} answered HTTP {status}")
        if not isinstance(document, dict):
            raise BadReply(f"its DID document is {type(document).__name__}, not an object")
        if document.get("id") != did:
            raise BadReply(f"its DID document is that of {shown(document.get('id'))}")
        return document

    def display_name(self, did: str, pds: str) -> str | None:
        try:
            status, reply = self.json_reply(
                "its profile", f"{pds.rstrip('/')}/xrpc/com.atproto.repo.getRecord",
                {"repo": did, "collection": PROFILE_COLLECTION, "rkey": "self"},
            )
        except httpx.HTTPError as error:
            log.warning("cannot read the profile of %s: %s", did, error)
            return None
        if status != 200:
            return None  # no profile record: many agents never set one
        profile = reply.get("value") if isinstance(reply, dict) else None
        if not isinstance(profile, dict):
            raise BadReply(f"its profile at {pds} is not a record")
        return usable_display_name(profile.get("displayName"))

    def json_reply(self, what: str, url: str, params: dict[str, str] | None = None) -> tuple[int, object]:
        """The status of a GET and, for a 200, its body as JSON; BadReply for a body too big or not JSON.
        The body is read only up to MAX_REPLY_BYTES: a DID document or a profile is a few hundred bytes."""
        try:
            with self.http.stream("GET", url, params=params) as response:
                if response.status_code != 200:
                    return response.status_code, None
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_REPLY_BYTES:
                        raise BadReply(f"{what} at {url} is over {MAX_REPLY_BYTES} bytes")
        except httpx.InvalidURL as error:
            raise BadReply(f"{what}: {error}") from None
        try:
            # The standard parser, not orjson: a lone surrogate in a display name costs that character,
            # not the whole answer.
            return 200, json.loads(body)
        except (ValueError, RecursionError):
            raise BadReply(f"{what} at {url} is not JSON") from None


class BadReply(ValueError):
    """A PLC directory or PDS answered, but not with what was asked for."""


def claimed_handle(document: dict) -> str | None:
    """The handle a DID document claims: its first at:// alias, as ATProto reads it; None if it has none."""
    aliases = document.get("alsoKnownAs", [])
    if not isinstance(aliases, list):
        raise BadReply(f"alsoKnownAs in its DID document is {type(aliases).__name__}, not a list")
    alias = next((aka for aka in aliases if isinstance(aka, str) and aka.startswith("at://")), None)
    if alias is None:
        return None
    if not is_handle(handle := alias.removeprefix("at://")):
        raise BadReply(f"its DID document claims {shown(alias)}, which is not a handle")
    return handle


def pds_endpoint(document: dict) -> str | None:
    """The URL of the account's PDS in a DID document; None if it names none."""
    services = document.get("service", [])
    if not isinstance(services, list):
        raise BadReply(f"service in its DID document is {type(services).__name__}, not a list")
    endpoint = next((service.get("serviceEndpoint") for service in services
                     if isinstance(service, dict) and isinstance(service.get("id"), str)
                     and service["id"].endswith("#atproto_pds")), None)
    if endpoint is None:
        return None
    if not is_web_url(endpoint):
        raise BadReply(f"its PDS {shown(endpoint)} is not an http(s) URL")
    return endpoint


def is_web_url(value: object) -> bool:
    if not isinstance(value, str) or len(value) > MAX_URL_LENGTH or not URL_TEXT.fullmatch(value):
        return False
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises for a port that is not one
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.query and not parts.fragment


def usable_display_name(value: object) -> str | None:
    """A display name as a header line can show it: one line of printable text, at most
    MAX_DISPLAY_NAME characters. A PDS hands back whatever its owner wrote (a self-hosted one need not
    check the lexicon's limits): line breaks become spaces; control characters, lone surrogates (which
    no database stores) and bidi overrides (which reorder what follows) go."""
    if not isinstance(value, str):
        return None
    text = " ".join(UNPRINTABLE.sub("", " ".join(value.split())).split())
    if len(text) > MAX_DISPLAY_NAME:
        text = text[:MAX_DISPLAY_NAME - 1].rstrip() + "…"
    return text or None


def shown(value: object) -> str:
    """A value from an answer, for a log line: text quoted and cut short, anything else by its type."""
    return f"{value[:100]!r}" if isinstance(value, str) else type(value).__name__
