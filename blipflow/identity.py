"""DID → handle and display name, cached in the store with a TTL.

Resolution goes through the configured PLC directory and the account's PDS, never DNS (handles are
not verified by DNS here: that needs the open internet, which offline and test networks lack).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import httpx

from blipflow.blip import Identity
from blipflow.config import Settings
from blipflow.store import Store

log = logging.getLogger(__name__)

PROFILE_COLLECTION = "app.bsky.actor.profile"
# A DID that could not be resolved is not tried again for this long (dispatch must not wait on it).
RETRY_FAILED_AFTER = timedelta(minutes=5)


@dataclass(frozen=True)
class RefreshedIdentities:
    resolved: int
    unresolved: int  # kept as they were: the PLC or PDS did not answer, or no longer knows the DID


class IdentityResolver:
    @classmethod
    def from_settings(cls, store: Store, settings: Settings) -> IdentityResolver:
        return cls(store, plc_url=settings.bluesky.plc_uri, ttl_seconds=settings.identity.ttl_seconds)

    def __init__(self, store: Store, *, plc_url: str, ttl_seconds: float, timeout: float = 5.0) -> None:
        self.store = store
        self.plc_url = plc_url.rstrip("/")
        self.ttl = timedelta(seconds=ttl_seconds)
        self.http = httpx.Client(timeout=timeout)
        self.failed_until: dict[str, datetime] = {}
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
        known = self.store.identities(wanted)
        now = datetime.now(timezone.utc)
        fresh_after = now - self.ttl
        identities: dict[str, Identity] = {}
        stale: list[str] = []
        for did in wanted:
            identity = known.get(did)
            identities[did] = identity or Identity(did, None, None, None, None)
            fresh = identity is not None and identity.fetched_at is not None and identity.fetched_at >= fresh_after
            if not fresh and self.failed_until.get(did, now) <= now:
                stale.append(did)
        if wanted:
            self.store.add_counters({"identity.cache_hits": len(wanted) - len(stale), "identity.cache_misses": len(stale)})
        return identities, stale

    def refresh_expired(self, limit: int) -> RefreshedIdentities:
        """Resolve again up to `limit` cached identities older than the TTL (or never resolved), the
        longest-waiting first, so that dispatch and `history` find them fresh instead of waiting on the PLC."""
        dids = self.store.expired_identities(datetime.now(timezone.utc) - self.ttl, limit)
        known = self.store.identities(dids)
        resolved = self.refresh(dids, known)
        refreshed = sum(1 for did in dids if resolved[did].fetched_at != known[did].fetched_at)
        return RefreshedIdentities(refreshed, len(dids) - refreshed)

    def refresh(self, dids: list[str], known: dict[str, Identity]) -> dict[str, Identity]:
        """Resolve `dids` over the network and cache what resolved."""
        resolved = {did: self.fetch(did, known.get(did)) for did in dids}
        fetched = [identity for identity in resolved.values() if identity.fetched_at is not None]
        if fetched:
            self.store.save_identities(fetched)
        return resolved

    def fetch(self, did: str, known: Identity | None) -> Identity:
        """Resolve one DID now. On failure keep what was known (a handle from an identity event, say)."""
        try:
            document = self.did_document(did)
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
        handle = next(
            (aka.removeprefix("at://") for aka in document.get("alsoKnownAs", []) if aka.startswith("at://")),
            None,
        )
        pds = next(
            (s.get("serviceEndpoint") for s in document.get("service", []) if str(s.get("id", "")).endswith("#atproto_pds")),
            None,
        )
        display_name = self.display_name(did, pds) if pds else None
        return Identity(did, handle, display_name, pds, datetime.now(timezone.utc))

    def did_document(self, did: str) -> dict:
        if did.startswith("did:plc:"):
            url = f"{self.plc_url}/{quote(did)}"
        elif did.startswith("did:web:"):
            url = f"https://{did.removeprefix('did:web:').replace(':', '/')}/.well-known/did.json"
        else:
            raise ValueError(f"unsupported DID method in {did}")
        response = self.http.get(url)
        response.raise_for_status()
        document = response.json()
        if not isinstance(document, dict):
            raise ValueError(f"DID document of {did} is not an object")
        return document

    def display_name(self, did: str, pds: str) -> str | None:
        try:
            response = self.http.get(
                f"{pds.rstrip('/')}/xrpc/com.atproto.repo.getRecord",
                params={"repo": did, "collection": PROFILE_COLLECTION, "rkey": "self"},
            )
        except httpx.HTTPError as error:
            log.warning("cannot read the profile of %s: %s", did, error)
            return None
        if response.status_code != 200:
            return None  # no profile record: many agents never set one
        name = response.json().get("value", {}).get("displayName")
        return name if isinstance(name, str) and name else None
