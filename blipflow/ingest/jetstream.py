"""Jetstream v1: subscription URLs, event frames, and a client that fails over between instances.

The atproto SDK's Jetstream client speaks only the newer v2 endpoint, so this is our own on `websockets`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import orjson
import websockets
from websockets.asyncio.client import connect

from blipflow.config import JetstreamConfig
from blipflow.ingest.source import EventSink, SourceUnavailable
from blipflow.model.events import (
    LATEST_TIME_US,
    NSID_SYNTAX,
    RKEY_SYNTAX,
    AccountEvent,
    BadFrame,
    CommitEvent,
    Event,
    IdentityEvent,
)
from blipflow.model.identifiers import is_did, is_handle

log = logging.getLogger(__name__)

OPERATIONS = frozenset(("create", "update", "delete"))
# How long a stopping reader waits for the instance to answer its close frame before dropping the
# connection (websockets waits 10 s by default): Ctrl-C must not wait on a peer that has stopped answering.
CLOSE_TIMEOUT = 1.0
# Frames received and not yet read (high and low water marks): websockets stops reading the socket above
# the first and starts again below the second. At its default (16, 4) a reader that keeps up only just
# (ingest, while the store writes) paused and resumed the socket every 12 frames, two system calls each
# time: ~1.6 µs per event of the reader's thread (py-spy, 200k simulated events). Frames are ~1 KB.
FRAME_QUEUE = (512, 128)


def subscribe_url(
    instance: str,
    *,
    wanted_collections: list[str],
    wanted_dids: list[str],
    cursor: int | None,
) -> str:
    """The `/subscribe` URL for an instance given as a host name or a ws(s):// URL."""
    if "://" not in instance:
        instance = f"wss://{instance}"
    scheme, netloc, path, _, _ = urlsplit(instance)
    if scheme not in ("ws", "wss"):
        raise ValueError(f"jetstream instance {instance!r}: expected ws:// or wss://")
    if not path.rstrip("/").endswith("/subscribe"):
        path = path.rstrip("/") + "/subscribe"
    params: list[tuple[str, str]] = [("wantedCollections", c) for c in wanted_collections]
    params += [("wantedDids", d) for d in wanted_dids]
    if cursor is not None:
        params.append(("cursor", str(cursor)))
    return urlunsplit((scheme, netloc, path, urlencode(params), ""))


def wants_collection(patterns: list[str], collection: str) -> bool:
    """Jetstream's `wantedCollections` rule: an exact NSID or a `prefix.*` pattern; none means all."""
    if not patterns:
        return True
    return any(
        collection == pattern or (pattern.endswith(".*") and collection.startswith(pattern[:-1]))
        for pattern in patterns
    )


def parse_event(frame: str | bytes) -> Event:
    """One Jetstream v1 frame as an event, or BadFrame saying what is wrong with it."""
    try:
        data = orjson.loads(frame)
    except orjson.JSONDecodeError as error:
        raise BadFrame("not_json", str(error)) from None
    return event_from_dict(data, frame if isinstance(frame, bytes) else frame.encode())


def event_from_dict(data: Any, raw: bytes) -> Event:
    """A decoded v1 event as an Event; `raw` is the same event as JSON (UTF-8)."""
    if not isinstance(data, dict):
        raise BadFrame("not_object", f"top level is {type(data).__name__}")
    did = data.get("did")
    time_us = data.get("time_us")
    if not is_did(did):
        raise BadFrame("bad_did", f"did={did!r:.200}")
    if type(time_us) is not int or not 0 <= time_us < LATEST_TIME_US:
        raise BadFrame("bad_time_us", f"time_us={time_us!r} for {did}")
    kind = data.get("kind")
    if kind == "commit":
        return parse_commit(did, time_us, data.get("commit"), raw)
    if kind == "identity":
        identity = data.get("identity")
        handle = identity.get("handle") if isinstance(identity, dict) else None
        return IdentityEvent(did, time_us, handle if is_handle(handle) else None)
    if kind == "account":
        account = data.get("account")
        if not isinstance(account, dict) or not isinstance(account.get("active"), bool):
            raise BadFrame("bad_account", f"account event for {did} without a boolean 'active'")
        status = account.get("status")
        return AccountEvent(did, time_us, account["active"], status if isinstance(status, str) else None)
    raise BadFrame("unknown_kind", f"kind={kind!r} for {did}")


def parse_commit(did: str, time_us: int, commit: Any, raw: bytes) -> CommitEvent:
    if not isinstance(commit, dict):
        raise BadFrame("bad_commit", f"commit is {type(commit).__name__} for {did}")
    operation = commit.get("operation")
    collection = commit.get("collection")
    rkey = commit.get("rkey")
    rev = commit.get("rev")
    if operation not in OPERATIONS:
        raise BadFrame("bad_commit", f"operation={operation!r} for {did}")
    if not (isinstance(collection, str) and NSID_SYNTAX.fullmatch(collection)
            and isinstance(rkey, str) and RKEY_SYNTAX.fullmatch(rkey) and rkey not in (".", "..")):
        raise BadFrame("bad_commit", f"collection={collection!r:.200} rkey={rkey!r:.600} for {did}")
    if operation == "delete":
        return CommitEvent(did, time_us, operation, collection, rkey, optional_text(rev), None, None, raw)
    record = commit.get("record")
    cid = commit.get("cid")
    if not isinstance(record, dict) or not isinstance(cid, str):
        raise BadFrame("bad_commit", f"{operation} of {collection}/{rkey} for {did} without record or cid")
    return CommitEvent(did, time_us, operation, collection, rkey, optional_text(rev), cid, record, raw)


def optional_text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class JetstreamSource:
    """Reads events from the configured instances, forever, resuming by `time_us` after every drop.

    On a drop it reconnects with exponential backoff and jitter, moving on to the next instance,
    from the last received `time_us` minus `rewind_seconds` (ingest dedupes the overlap).
    """

    def __init__(self, config: JetstreamConfig, *, max_frame_bytes: int) -> None:
        self.config = config
        self.max_frame_bytes = max_frame_bytes
        self.last_time_us: int | None = None
        self.connects = 0
        self.disconnects = 0
        self.connected_to: str | None = None

    @property
    def cursor_key(self) -> str:
        # Jetstream instances all stamp events with wall-clock microseconds, so one cursor serves them all.
        return "jetstream"

    @property
    def first_cursor(self) -> int | None:
        # Like thought.stream, a first run starts with what is said from now on.
        return None

    def resume_cursor(self, stored: int | None) -> int | None:
        latest = self.last_time_us if self.last_time_us is not None else stored
        if latest is None:
            return None
        return max(0, latest - int(self.config.rewind_seconds * 1_000_000))

    async def run(self, sink: EventSink, cursor: int | None) -> None:
        failures = 0
        attempt = 0
        while True:
            instance = self.config.instances[attempt % len(self.config.instances)]
            attempt += 1
            url = subscribe_url(
                instance,
                wanted_collections=self.config.wanted_collections,
                wanted_dids=self.config.wanted_dids,
                cursor=self.resume_cursor(cursor),
            )
            try:
                received = await self.read_connection(url, instance, sink)
            except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException) as error:
                received = 0
                log.warning("jetstream %s: connection failed: %s", instance, describe_error(error))
            if received:
                failures = 0
            else:
                failures += 1
            if self.config.max_reconnect_attempts and failures >= self.config.max_reconnect_attempts:
                raise SourceUnavailable(
                    f"jetstream: no instance could be read after {failures} attempts "
                    f"(tried {', '.join(self.config.instances)})"
                )
            delay = min(self.config.max_reconnect_delay, self.config.reconnect_delay * 2 ** max(0, failures - 1))
            await asyncio.sleep(delay * random.uniform(0.5, 1.0) if failures else 0.05)

    async def read_connection(self, url: str, instance: str, sink: EventSink) -> int:
        received = 0
        async with connect(
            url,
            compression=None,
            max_size=self.max_frame_bytes * 4,
            open_timeout=10,
            close_timeout=CLOSE_TIMEOUT,
            max_queue=FRAME_QUEUE,
            ping_interval=20,
            ping_timeout=20,
        ) as socket:
            self.connects += 1
            self.connected_to = instance
            sink.connected(instance)
            try:
                while True:
                    try:
                        # As bytes: decoding every text frame to str costs the reader's thread, and the store
                        # wants the UTF-8 anyway; orjson checks it (a frame that is not UTF-8 is not JSON).
                        frame = await socket.recv(decode=False)
                    except websockets.exceptions.ConnectionClosedOK:
                        break
                    received += 1
                    if len(frame) > self.max_frame_bytes:
                        sink.reject(BadFrame("oversized", f"{len(frame)} byte frame from {instance}"))
                        continue
                    try:
                        event = parse_event(frame)
                    except BadFrame as bad:
                        sink.reject(bad)
                        continue
                    self.last_time_us = event.time_us
                    sink.accept(event)
                    sink.advance(event.time_us)
                    if sink.backlogged:
                        await sink.drain()
            except websockets.exceptions.ConnectionClosed as closed:
                log.warning("jetstream %s: connection closed: %s", instance, describe_error(closed))
            finally:
                self.disconnects += 1
                self.connected_to = None
                sink.disconnected(instance)
        return received


def describe_error(error: BaseException) -> str:
    return str(error) or type(error).__name__
