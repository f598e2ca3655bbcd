"""A faithful Jetstream v1 stand-in, for tests: a real PDS firehose in, Jetstream's v1 `/subscribe` out.

Jetstream itself cannot be built here, so this module re-implements the part of it blipflow talks to,
following the v1 server (bluesky-social/jetstream, pkg/consumer, pkg/server, pkg/models) and, for the
record JSON, indigo's atproto/data package that Jetstream marshals records with.

The translation itself (DAG-CBOR records in a CAR to Jetstream's record JSON, and `translate_message`:
one parsed ``#commit``/``#identity``/``#account`` message into v1 event dicts without ``time_us``) lives
in `blipflow.firehose_events`, shared with blipflow's firehose source.

Layout (top to bottom):

1. The pure core, testable without any network:
   - `encode_event`: an event as the JSON text Jetstream sends (Go field order, HTML escaping).
   - `EventLog`: assigns ``time_us`` (strictly increasing wall-clock microseconds), serialises each
     event once, and keeps every event for cursor replay; `append_stamped` keeps an event's own
     ``time_us`` (replay mode).
   - `SubscriberOptions` (query parsing, validation, filtering) and `Subscription` (a reader's position
     in the log: inclusive cursor replay that turns into the live tail with no gap and no duplicate).
2. The server (`StandinServer`): a `websockets` server on 127.0.0.1 serving ``/subscribe``, fed by the
   atproto SDK's `AsyncFirehoseSubscribeReposClient` from cursor 0, reconnecting when the PDS goes away;
   or, in replay mode, by a file of v1 events loaded up front (`load_events_file`). Frames are encoded
   once and written to each subscriber in bursts (`_send_burst`), so a replay runs at socket speed.
3. Test controls, which are NOT part of Jetstream and live on their own paths:
   ``/_inject`` (websocket; each frame it receives goes verbatim to every current subscriber, live only,
   never stored), ``/_disconnect`` (HTTP GET or websocket; closes every subscriber connection,
   ``?mode=abort`` drops them without a close frame), ``/_status`` (HTTP GET; JSON counters).
4. The process entry point (``python -m tests.support.jetstream_standin --firehose ws://127.0.0.1:N``, or
   ``--events-file PATH`` for replay mode: prints ``READY {"url": ..., "events": N}``), the
   `JetstreamStandin` handle, and the session-scoped pytest fixture `jetstream`.

Known deviations from real Jetstream are listed in `DEVIATIONS`.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import dataclasses
import http
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence
from urllib.parse import parse_qs, urlsplit

import orjson

from blipflow.ingest.firehose import websocket_xrpc_url
from blipflow.ingest.firehose_events import translate_message

log = logging.getLogger("jetstream_standin")

DEVIATIONS = (
    "Events are kept in memory for the life of the process (no 36h TTL, no pebble DB).",
    "zstd compression (compress=true / Socket-Encoding: zstd) is refused with HTTP 400 instead of served.",
    "No per-IP rate limits, no slow-consumer drop: a slow subscriber lags instead of being cut off.",
    "Records are looked up in the commit's CAR by the op's CID (the block's hash is checked) rather than by "
    "walking the MST from the commit root.",
    "Replay and live tail come from one in-memory log, so the replay/live cutover is exact.",
)

# ---------------------------------------------------------------------------------------------------
# 1. Pure core
# ---------------------------------------------------------------------------------------------------

# Limits from pkg/server/subscriber.go parseSubscriberOptions.
MAX_WANTED_DIDS = 10_000
MAX_WANTED_COLLECTIONS = 100


_HTML_ESCAPES = (
    (b"<", b"\\u003c"),
    (b">", b"\\u003e"),
    (b"&", b"\\u0026"),
    ("\u2028".encode(), b"\\u2028"),
    ("\u2029".encode(), b"\\u2029"),
)


def encode_event_bytes(event: Mapping[str, Any]) -> bytes:
    """`encode_event` as UTF-8 bytes, the payload of the text frame (what the server keeps and sends)."""
    data = orjson.dumps(event)
    # '<', '>', '&', U+2028 and U+2029 can only occur inside JSON strings, so this is safe to do on the text
    # (and on its UTF-8 bytes: no other character's encoding contains these byte sequences).
    if b"<" in data or b">" in data or b"&" in data or b"\xe2\x80" in data:
        for raw, escaped in _HTML_ESCAPES:
            if raw in data:
                data = data.replace(raw, escaped)
    # orjson hands back its whole output buffer (about 4 KiB for a 700-byte event); the log keeps every
    # event, so keep an exact-size copy.
    return bytes(memoryview(data))


def encode_event(event: Mapping[str, Any]) -> str:
    """An event as the JSON text Jetstream sends: Go field order, compact, HTML-escaped like encoding/json."""
    return encode_event_bytes(event).decode("utf-8")


class MonotonicClock:
    """Wall-clock unix microseconds that strictly increase, like Jetstream's pkg/monotonic clock."""

    def __init__(self, now_us: Callable[[], int] | None = None) -> None:
        self._now_us = now_us or (lambda: time.time_ns() // 1000)
        self._last = 0

    def now(self) -> int:
        value = max(self._now_us(), self._last + 1)
        self._last = value
        return value

    def advance_past(self, time_us: int) -> None:
        """Make every later `now` greater than `time_us` (after events stamped elsewhere)."""
        self._last = max(self._last, time_us)


@dataclasses.dataclass(frozen=True, slots=True)
class LogEntry:
    time_us: int
    did: str
    kind: str
    collection: str  # "" for identity and account events, which every collection filter lets through
    data: bytes  # the frame's UTF-8 payload, encoded once and sent as is to every subscriber

    @property
    def frame(self) -> str:
        """The JSON text of the frame."""
        return self.data.decode("utf-8")


EVENT_KINDS = ("commit", "identity", "account")


class EventsFileError(ValueError):
    """An ``--events-file`` that is not a file of v1 events in strictly increasing ``time_us`` order."""


class EventLog:
    """Every event the stand-in has emitted, in ``time_us`` order, for live fan-out and cursor replay."""

    def __init__(self, clock: MonotonicClock | None = None) -> None:
        self.clock = clock or MonotonicClock()
        self.entries: list[LogEntry] = []
        self._times: list[int] = []

    def __len__(self) -> int:
        return len(self.entries)

    def _keep(self, time_us: int, did: str, kind: str, body: Mapping[str, Any]) -> LogEntry:
        stamped = {"did": did, "time_us": time_us, "kind": kind, kind: body}
        collection = sys.intern(body.get("collection", "")) if kind == "commit" else ""
        entry = LogEntry(time_us, sys.intern(did), sys.intern(kind), collection, encode_event_bytes(stamped))
        self.entries.append(entry)
        self._times.append(time_us)
        return entry

    def append(self, event: Mapping[str, Any]) -> LogEntry:
        """Stamp `event` with the next ``time_us`` (Go field order: did, time_us, kind, body) and keep it."""
        kind = event["kind"]
        return self._keep(self.clock.now(), event["did"], kind, event[kind])

    def append_stamped(self, event: Any) -> LogEntry:
        """Keep a complete v1 event with its own ``time_us``, which must be later than every logged one.

        Raises EventsFileError (with the reason) for anything that is not a v1 event or is out of order.
        Later `append`s keep counting from it, so ``time_us`` stays strictly increasing.
        """
        if not isinstance(event, dict):
            raise EventsFileError(f"not a JSON object: {type(event).__name__}")
        kind = event.get("kind")
        if kind not in EVENT_KINDS:
            raise EventsFileError(f"kind must be one of {', '.join(EVENT_KINDS)}, not {kind!r}")
        extra = set(event) - {"did", "time_us", "kind", kind}
        if extra:
            raise EventsFileError(f"unexpected fields for a {kind} event: {', '.join(sorted(extra))}")
        did, time_us, body = event.get("did"), event.get("time_us"), event.get(kind)
        if not isinstance(did, str) or not did:
            raise EventsFileError("did must be a non-empty string")
        if not isinstance(time_us, int) or isinstance(time_us, bool) or not 0 < time_us < 2**63:
            raise EventsFileError(f"time_us must be a positive integer, not {time_us!r}")
        if not isinstance(body, dict):
            raise EventsFileError(f"{kind!r} must be an object")
        if kind == "commit" and not isinstance(body.get("collection"), str):
            raise EventsFileError("commit.collection must be a string")
        last = self.last_time_us
        if last is not None and time_us <= last:
            raise EventsFileError(f"time_us {time_us} does not increase strictly (previous event: {last})")
        self.clock.advance_past(time_us)
        return self._keep(time_us, did, kind, body)

    def index_for_cursor(self, cursor: int) -> int:
        """The position of the first event with ``time_us >= cursor`` (the cursor is inclusive)."""
        return bisect.bisect_left(self._times, cursor)

    @property
    def last_time_us(self) -> int | None:
        return self._times[-1] if self._times else None


class InvalidOptions(ValueError):
    """Subscriber options Jetstream rejects (HTTP 400 before the upgrade)."""


# indigo atproto/syntax: NSID and DID grammars.
_NSID = re.compile(
    r"^[a-zA-Z]([a-zA-Z0-9-]{0,62}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,62}[a-zA-Z0-9])?)+"
    r"(\.[a-zA-Z]([a-zA-Z0-9]{0,62})?)$"
)
_DID = re.compile(r"^did:[a-z]+:[a-zA-Z0-9._:%-]*[a-zA-Z0-9._-]$")


@dataclasses.dataclass
class SubscriberOptions:
    """What a subscriber asked for: parsed and validated like pkg/server parseSubscriberOptions."""

    collection_prefixes: tuple[str, ...] | None = None  # None: every collection
    collection_paths: frozenset[str] = frozenset()
    dids: frozenset[str] = frozenset()  # empty: every DID
    cursor: int | None = None
    max_message_size_bytes: int = 0
    require_hello: bool = False

    @classmethod
    def parse(
        cls,
        wanted_collections: Sequence[str] = (),
        wanted_dids: Sequence[str] = (),
        *,
        cursor: int | None = None,
        max_message_size_bytes: int = 0,
        require_hello: bool = False,
    ) -> "SubscriberOptions":
        prefixes: list[str] | None = None
        paths: set[str] = set()
        if wanted_collections:
            prefixes = []
            for provided in wanted_collections:
                if provided.endswith(".*"):
                    prefixes.append(provided[:-1])  # "app.bsky.*" matches by the prefix "app.bsky."
                    continue
                if len(provided) > 317 or not _NSID.match(provided):
                    raise InvalidOptions(f"invalid subscriber options: invalid collection: {provided}")
                paths.add(provided)
        dids: set[str] = set()
        for provided in wanted_dids:
            if len(provided) > 2048 or not _DID.match(provided):
                raise InvalidOptions("invalid subscriber options")
            dids.add(provided)
        if len(dids) > MAX_WANTED_DIDS:
            raise InvalidOptions("invalid subscriber options: too many wanted DIDs")
        if prefixes is not None and len(prefixes) + len(paths) > MAX_WANTED_COLLECTIONS:
            raise InvalidOptions("invalid subscriber options: too many wanted collections")
        return cls(
            collection_prefixes=tuple(prefixes) if prefixes is not None else None,
            collection_paths=frozenset(paths),
            dids=frozenset(dids),
            cursor=cursor,
            max_message_size_bytes=max(0, max_message_size_bytes),
            require_hello=require_hello,
        )

    @classmethod
    def from_query(cls, query: str, *, now_us: int | None = None) -> "SubscriberOptions":
        """Options from a ``/subscribe`` query string. A cursor in the future means live tail."""
        params = parse_qs(query, keep_blank_values=True)
        if _first(params, "compress") == "true":
            raise InvalidOptions("jetstream stand-in: zstd compression is not supported")
        cursor = None
        raw_cursor = _first(params, "cursor")
        if raw_cursor != "":
            try:
                cursor = int(raw_cursor, 10)
                if not -(2**63) <= cursor < 2**63 or raw_cursor.strip() != raw_cursor or "_" in raw_cursor:
                    raise ValueError
            except ValueError:
                raise InvalidOptions(f"invalid cursor: {raw_cursor}") from None
            now = now_us if now_us is not None else time.time_ns() // 1000
            if cursor > now:
                cursor = None
        return cls.parse(
            params.get("wantedCollections", []),
            params.get("wantedDids", []),
            cursor=cursor,
            max_message_size_bytes=parse_max_message_size_bytes(_first(params, "maxMessageSizeBytes")),
            require_hello=_first(params, "requireHello") == "true",
        )

    def with_update(self, payload: Mapping[str, Any]) -> "SubscriberOptions":
        """An ``options_update`` payload applied: collections, DIDs and max size change; cursor does not."""
        collections = payload.get("wantedCollections") or []
        dids = payload.get("wantedDids") or []
        if not isinstance(collections, list) or not all(isinstance(c, str) for c in collections):
            raise InvalidOptions("invalid subscriber options: wantedCollections must be a list of strings")
        if not isinstance(dids, list) or not all(isinstance(d, str) for d in dids):
            raise InvalidOptions("invalid subscriber options: wantedDids must be a list of strings")
        return SubscriberOptions.parse(
            collections,
            dids,
            cursor=self.cursor,
            max_message_size_bytes=parse_max_message_size_bytes(payload.get("maxMessageSizeBytes", 0)),
            require_hello=self.require_hello,
        )

    def wants_collection(self, collection: str) -> bool:
        if self.collection_prefixes is None or collection == "":
            return True
        if collection in self.collection_paths:
            return True
        return any(collection.startswith(prefix) for prefix in self.collection_prefixes)

    def wants(self, entry: LogEntry) -> bool:
        """Jetstream's emitToSubscriber filter: collection (identity/account always pass), then DID."""
        if not self.wants_collection(entry.collection):
            return False
        if self.dids and entry.did not in self.dids:
            return False
        if self.max_message_size_bytes and len(entry.data) > self.max_message_size_bytes:
            return False
        return True

    @property
    def filters(self) -> bool:
        """Whether `wants` can say no at all (False: every event goes out)."""
        return self.collection_prefixes is not None or bool(self.dids) or bool(self.max_message_size_bytes)


def _first(params: Mapping[str, list[str]], name: str) -> str:
    # Go's url.Values.Get: the first value, or "".
    values = params.get(name) or [""]
    return values[0]


def parse_max_message_size_bytes(value: Any) -> int:
    """pkg/server ParseMaxMessageSizeBytes: a non-negative int, anything else is 0 (no limit)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(0, min(value, 2**32 - 1))
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value):
        return max(0, min(int(value), 2**32 - 1))
    return 0


class Subscription:
    """A subscriber's position in the log.

    With a cursor it starts at the first event with ``time_us >= cursor``; without one at the end of the
    log (live only). `take` returns every pending frame it wants, in order, then moves on, so replay turns
    into the live tail with no gap and no duplicate. Injected test frames wait until the subscriber has
    passed the log position they were injected at.
    """

    def __init__(self, log_: EventLog, options: SubscriberOptions) -> None:
        self.log = log_
        self.options = options
        self.position = len(log_) if options.cursor is None else log_.index_for_cursor(options.cursor)
        self.last_time_us = 0
        self.injected: deque[tuple[int, str | bytes]] = deque()

    def inject(self, frame: str | bytes) -> None:
        self.injected.append((len(self.log), frame))

    def take(self, limit: int | None = None) -> list[str | bytes]:
        """The pending frames: log events as JSON text, injected frames verbatim."""
        return [item.frame if type(item) is LogEntry else item for item in self.take_items(limit)]

    def take_items(self, limit: int | None = None) -> list[LogEntry | str | bytes]:
        """Like `take`, but log events as their `LogEntry` (whose ``data`` is the encoded payload)."""
        items: list[LogEntry | str | bytes] = []
        entries = self.log.entries
        while limit is None or len(items) < limit:
            if self.injected and self.injected[0][0] <= self.position:
                items.append(self.injected.popleft()[1])
                continue
            if self.position >= len(entries):
                break
            if not self.options.filters:
                # Fast path (nothing to filter): a whole slice, up to the limit or the next injected frame.
                end = len(entries)
                if limit is not None:
                    end = min(end, self.position + limit - len(items))
                if self.injected:
                    end = min(end, self.injected[0][0])
                chunk = entries[self.position : end]
                self.position = end
                if chunk[0].time_us <= self.last_time_us:  # never, as the log's time_us strictly increase
                    chunk = [entry for entry in chunk if entry.time_us > self.last_time_us]
                if chunk:
                    items.extend(chunk)
                    self.last_time_us = chunk[-1].time_us
                continue
            entry = entries[self.position]
            self.position += 1
            # Jetstream also skips anything at or before the last time_us it sent this subscriber.
            if entry.time_us > self.last_time_us and self.options.wants(entry):
                items.append(entry)
                self.last_time_us = entry.time_us
        return items


# ---------------------------------------------------------------------------------------------------
# 2. The server
# ---------------------------------------------------------------------------------------------------



def _make_firehose_client(base_uri: str, get_cursor: Callable[[], int], on_connected: Callable[[], None]) -> Any:
    """The SDK's async firehose client, resuming from our cursor on every (re)connect, retrying quickly."""
    from atproto_firehose import AsyncFirehoseSubscribeReposClient

    class _Opened:
        def __init__(self, connect: Any) -> None:
            self._connect = connect

        async def __aenter__(self) -> Any:
            connection = await self._connect.__aenter__()
            on_connected()
            return connection

        async def __aexit__(self, *exc: Any) -> Any:
            return await self._connect.__aexit__(*exc)

    class _Client(AsyncFirehoseSubscribeReposClient):
        async def _before_connect(self) -> None:  # SDK hook, called before every dial
            self.update_params({"cursor": get_cursor()})

        def _get_async_client(self) -> Any:
            return _Opened(super()._get_async_client())

        def _get_reconnection_delay(self) -> float:
            # The PDS is local and tests restart it: come back fast instead of the SDK's 2**n seconds.
            return min(0.1 * 2 ** max(0, self._reconnect_no - 1), 1.0)

    return _Client(params={"cursor": get_cursor()}, base_uri=base_uri, recv_timeout=30.0)


class _Subscriber:
    def __init__(self, ws: Any, subscription: Subscription) -> None:
        self.ws = ws
        self.subscription = subscription
        self.wake = asyncio.Event()


# Frames taken from the log and written to the socket in one go. A burst is also the unit of fairness:
# the sender yields to the event loop after each one, so a subscriber replaying a long log does not
# starve the others (or the test controls).
BURST_FRAMES = 512


async def _send_burst(ws: Any, items: Sequence[LogEntry | str | bytes]) -> None:
    """Send every item as its own websocket message, with one socket write and one flow-control wait.

    Log events go out as text frames with their pre-encoded UTF-8 payload; injected frames verbatim
    (str: text, bytes: binary). Uses websockets' Sans-I/O protocol inside the connection's own
    `send_context` (state checks, drain, and ConnectionClosed exactly as `send` does them); per-message
    `send` calls would write to the socket once per frame.
    """
    send_context = getattr(ws, "send_context", None)
    if send_context is None:  # not the websockets version this was written against: the slow, public way
        for item in items:
            if type(item) is LogEntry:
                await ws.send(item.data, text=True)
            else:
                await ws.send(item)
        return
    async with send_context():
        protocol = ws.protocol
        for item in items:
            if type(item) is LogEntry:
                protocol.send_text(item.data)
            elif isinstance(item, str):
                protocol.send_text(item.encode("utf-8"))
            else:
                protocol.send_binary(item)
        # Data frames only ever queue whole serialized frames (never the EOF marker), so they can be
        # joined; send_context's own flush then finds nothing left and just applies flow control.
        ws.transport.write(b"".join(protocol.data_to_send()))


class StandinServer:
    """The stand-in process: firehose consumer, event log, and the websocket server."""

    def __init__(self, firehose_url: str | None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        """`firehose_url` None runs without upstream: events then come only from `ingest` (unit tests)
        or from `load_events_file` (replay mode)."""
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the stand-in only binds to loopback")
        self.firehose_base_uri = websocket_xrpc_url(firehose_url) if firehose_url is not None else None
        self.host = host
        self.port = port
        self.log = EventLog()
        self.subscribers: set[_Subscriber] = set()
        self.upstream_seq = 0  # the last firehose seq taken in; the cursor for reconnects
        self.upstream_connected = asyncio.Event()
        self.upstream_connections = 0
        self.upstream_messages = 0
        self._server: Any = None
        self._client: Any = None
        self._stopping = False
        self._firehose_task: asyncio.Task | None = None
        self._disconnect_counts: dict[Any, int] = {}

    # ---- upstream ----

    def _on_upstream_connected(self) -> None:
        self.upstream_connections += 1
        log.info("connected to firehose %s (cursor %s)", self.firehose_base_uri, self.upstream_seq)
        self.upstream_connected.set()

    async def _on_message(self, frame: Any) -> None:
        from atproto_firehose import parse_subscribe_repos_message

        try:
            message = parse_subscribe_repos_message(frame)
        except Exception as error:  # noqa: BLE001 - unknown (#handle, #tombstone, ...) or malformed
            log.info("ignoring firehose message %r: %s", getattr(frame, "type", None), error)
            return
        seq = getattr(message, "seq", None)
        if isinstance(seq, int):
            if seq <= self.upstream_seq:
                return  # already taken in before a reconnect
            self.upstream_seq = seq
        self.upstream_messages += 1
        self.ingest(message)

    def ingest(self, message: Any) -> list[LogEntry]:
        """Translate one parsed firehose message, log its events, and wake the subscribers."""
        entries = [self.log.append(event) for event in translate_message(message)]
        if entries:
            for subscriber in self.subscribers:
                subscriber.wake.set()
        return entries

    def load_events_file(self, path: str | Path) -> int:
        """Replay mode: log every v1 event in `path` (JSON lines) as given, ``time_us`` included.

        Blank lines are skipped. Raises EventsFileError naming the file and line for anything that is
        not a v1 event, or whose ``time_us`` does not increase strictly. Returns the number of events.
        """
        count = 0
        try:
            handle = open(path, "rb")
        except OSError as error:
            raise EventsFileError(f"{path}: cannot read: {error.strerror or error}") from None
        with handle:
            for lineno, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    event = orjson.loads(line)
                except orjson.JSONDecodeError as error:
                    raise EventsFileError(f"{path}:{lineno}: invalid JSON: {error}") from None
                try:
                    self.log.append_stamped(event)
                except EventsFileError as error:
                    raise EventsFileError(f"{path}:{lineno}: {error}") from None
                count += 1
        if count:
            for subscriber in self.subscribers:
                subscriber.wake.set()
        return count

    async def _run_firehose(self) -> None:
        from atproto_firehose.exceptions import FirehoseError

        while not self._stopping:
            self._client = _make_firehose_client(
                self.firehose_base_uri, lambda: self.upstream_seq, self._on_upstream_connected
            )
            try:
                await self._client.start(self._on_message, self._on_callback_error)
                if not self._stopping:
                    log.info("firehose closed the connection; reconnecting")
            except FirehoseError as error:
                text = str(error)
                if "FutureCursor" in text:
                    # The PDS came back with less history than we saw (a fresh PDS): start over from 0.
                    log.warning("firehose says our cursor %s is in the future; restarting at 0", self.upstream_seq)
                    self.upstream_seq = 0
                else:
                    log.warning("firehose error: %s; reconnecting", text)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001
                log.exception("firehose client failed; reconnecting")
            if not self._stopping:
                await asyncio.sleep(0.2)

    async def _on_callback_error(self, error: BaseException) -> None:
        log.error("failed to handle a firehose message: %r", error)

    # ---- downstream ----

    def _process_request(self, connection: Any, request: Any) -> Any:
        split = urlsplit(request.path)
        path = split.path
        if path == "/subscribe":
            if "zstd" in (request.headers.get("Socket-Encoding") or ""):
                return connection.respond(http.HTTPStatus.BAD_REQUEST, "jetstream stand-in: zstd compression is not supported\n")
            try:
                SubscriberOptions.from_query(split.query)
            except InvalidOptions as error:
                return connection.respond(http.HTTPStatus.BAD_REQUEST, str(error))
            return None
        if path == "/_inject":
            return None
        if path == "/_disconnect":
            abort = parse_qs(split.query).get("mode", [""])[0] == "abort"
            closed = self._disconnect_all(abort=abort)
            if request.headers.get("Upgrade", "").lower() == "websocket":
                self._disconnect_counts[connection] = closed
                return None
            return _json_response(connection, {"closed": closed})
        if path == "/_status":
            return _json_response(connection, self.status())
        return connection.respond(http.HTTPStatus.NOT_FOUND, "Not Found\n")

    def status(self) -> dict[str, Any]:
        return {
            "upstream_connected": self.upstream_connected.is_set(),
            "upstream_connections": self.upstream_connections,
            "upstream_seq": self.upstream_seq,
            "upstream_messages": self.upstream_messages,
            "events": len(self.log),
            "last_time_us": self.log.last_time_us,
            "subscribers": len(self.subscribers),
        }

    def _disconnect_all(self, *, abort: bool) -> int:
        subscribers = list(self.subscribers)
        for subscriber in subscribers:
            if abort:
                subscriber.ws.transport.abort()
            else:
                asyncio.ensure_future(subscriber.ws.close(1001, "jetstream stand-in: disconnect requested"))
        log.info("test control: disconnected %d subscriber(s)%s", len(subscribers), " (abort)" if abort else "")
        return len(subscribers)

    async def _handler(self, ws: Any) -> None:
        path = urlsplit(ws.request.path)
        if path.path == "/subscribe":
            await self._serve_subscribe(ws, SubscriberOptions.from_query(path.query))
        elif path.path == "/_inject":
            await self._serve_inject(ws)
        elif path.path == "/_disconnect":
            await ws.send(json.dumps({"closed": self._disconnect_counts.pop(ws, 0)}))
            await ws.close()

    async def _serve_subscribe(self, ws: Any, options: SubscriberOptions) -> None:
        subscriber = _Subscriber(ws, Subscription(self.log, options))
        hello = asyncio.Event()
        if not options.require_hello:
            hello.set()
        self.subscribers.add(subscriber)
        log.info("adding subscriber %s: %s", ws.id, options)
        reader = asyncio.ensure_future(self._read_subscriber(subscriber, hello))
        sender = asyncio.ensure_future(self._send_to_subscriber(subscriber, hello))
        try:
            await asyncio.wait({reader, sender}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.subscribers.discard(subscriber)
            for task in (reader, sender):
                task.cancel()
            await asyncio.gather(reader, sender, return_exceptions=True)
            log.info("removing subscriber %s", ws.id)

    async def _send_to_subscriber(self, subscriber: _Subscriber, hello: asyncio.Event) -> None:
        from websockets.exceptions import ConnectionClosed

        await hello.wait()
        try:
            while True:
                items = subscriber.subscription.take_items(limit=BURST_FRAMES)
                if not items:
                    subscriber.wake.clear()
                    await subscriber.wake.wait()
                    continue
                await _send_burst(subscriber.ws, items)
                await asyncio.sleep(0)  # let the other connections, and this one's reader, have a turn
        except ConnectionClosed:
            return

    async def _read_subscriber(self, subscriber: _Subscriber, hello: asyncio.Event) -> None:
        """Client text frames are subscriber-sourced messages; only ``options_update`` is understood."""
        from websockets.exceptions import ConnectionClosed

        ws = subscriber.ws
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    log.warning("received unexpected binary message from client, ignoring")
                    continue
                try:
                    parsed = json.loads(message)
                    if not isinstance(parsed, dict):
                        raise ValueError("not an object")
                except ValueError as error:
                    await ws.close(1000, f"failed to unmarshal subscriber sourced message: {error}"[:120])
                    return
                if parsed.get("type") != "options_update":
                    log.warning("received unexpected message type from client, ignoring: %r", parsed.get("type"))
                    continue
                payload = parsed.get("payload")
                try:
                    if not isinstance(payload, dict):
                        raise InvalidOptions("failed to unmarshal subscriber options update")
                    subscriber.subscription.options = subscriber.subscription.options.with_update(payload)
                except InvalidOptions as error:
                    await ws.close(1000, f"failed to parse subscriber options: {error}"[:120])
                    return
                hello.set()
                subscriber.wake.set()
        except ConnectionClosed:
            return

    async def _serve_inject(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for message in ws:
                for subscriber in self.subscribers:
                    subscriber.subscription.inject(message)
                    subscriber.wake.set()
                await ws.send(json.dumps({"queued": len(self.subscribers)}))
        except ConnectionClosed:
            return

    # ---- lifecycle ----

    async def start(self) -> str:
        from websockets.asyncio.server import serve

        self._server = await serve(
            self._handler,
            self.host,
            self.port,
            process_request=self._process_request,
            compression=None,  # Jetstream's gorilla upgrader does not negotiate permessage-deflate
            max_size=16 * 1024 * 1024,
            ping_interval=30,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        if self.firehose_base_uri is not None:
            self._firehose_task = asyncio.ensure_future(self._run_firehose())
        return self.url

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        self._stopping = True
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.stop()
        if self._firehose_task is not None:
            self._firehose_task.cancel()
            with contextlib.suppress(BaseException):
                await self._firehose_task
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)


def _json_response(connection: Any, body: Any) -> Any:
    response = connection.respond(http.HTTPStatus.OK, json.dumps(body) + "\n")
    del response.headers["Content-Type"]  # websockets' Headers are multi-valued: replace, don't add
    response.headers["Content-Type"] = "application/json"
    return response


# ---------------------------------------------------------------------------------------------------
# 3. Process entry point
# ---------------------------------------------------------------------------------------------------


async def _amain(firehose: str | None, port: int, ready_timeout: float, events_file: str | None = None) -> int:
    server = StandinServer(firehose, port=port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if events_file is not None:
        return await _amain_replay(server, events_file, stop)
    await server.start()
    connected = asyncio.ensure_future(server.upstream_connected.wait())
    stopping = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({connected, stopping}, timeout=ready_timeout, return_when=asyncio.FIRST_COMPLETED)
    if connected in done:
        sys.stdout.write("READY " + json.dumps({"url": server.url}) + "\n")
        sys.stdout.flush()
        await stop.wait()
        code = 0
    elif stopping in done:
        code = 0
    else:
        log.error("could not connect to the firehose at %s within %.0fs", server.firehose_base_uri, ready_timeout)
        code = 1
    connected.cancel()
    stopping.cancel()
    await server.stop()
    return code


async def _amain_replay(server: StandinServer, events_file: str, stop: asyncio.Event) -> int:
    """Replay mode: the file's events are the whole log (served from cursor 0 on), no upstream."""
    started = time.monotonic()
    try:
        count = server.load_events_file(events_file)
    except EventsFileError as error:
        sys.stderr.write(f"jetstream stand-in: bad --events-file: {error}\n")
        return EXIT_BAD_EVENTS_FILE
    log.info("loaded %d events from %s in %.2fs", count, events_file, time.monotonic() - started)
    await server.start()
    sys.stdout.write("READY " + json.dumps({"url": server.url, "events": count}) + "\n")
    sys.stdout.flush()
    await stop.wait()
    await server.stop()
    return 0


EXIT_BAD_EVENTS_FILE = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.jetstream_standin", description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--firehose", help="the PDS, as ws://127.0.0.1:PORT (or http://)")
    source.add_argument(
        "--events-file",
        help="replay mode, no firehose: serve the v1 events in this file (one JSON object a line, each with its "
        "own strictly increasing time_us) as the whole log",
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 to serve on (0: any free port)")
    parser.add_argument("--ready-timeout", type=float, default=60.0, help="seconds to wait for the firehose")
    parser.add_argument("--log-level", default=os.environ.get("JETSTREAM_STANDIN_LOG", "INFO"))
    args = parser.parse_args(argv)
    if args.firehose is not None:
        host = urlsplit(websocket_xrpc_url(args.firehose)).hostname
        if host not in ("127.0.0.1", "localhost", "::1"):
            parser.error("--firehose must be on loopback")
    logging.basicConfig(
        stream=sys.stderr, level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    # websockets logs every plain HTTP answer (/_status, /_disconnect) as a "rejected" connection
    logging.getLogger("websockets").setLevel(logging.WARNING)
    return asyncio.run(_amain(args.firehose, args.port, args.ready_timeout, args.events_file))


# ---------------------------------------------------------------------------------------------------
# 4. The test handle and fixture
# ---------------------------------------------------------------------------------------------------

_PROJECT_ROOT = Path(__file__).resolve().parents[2]


class JetstreamStandin:
    """A stand-in process, started and stopped by PID.

    >>> standin = JetstreamStandin.start(network.pds_ws_url)
    >>> standin.url                      # ws://127.0.0.1:N ; subscribe at f"{standin.url}/subscribe?..."
    >>> standin.inject("not json")       # to every current subscriber, verbatim, live only
    >>> standin.disconnect_all()         # closes every subscriber connection
    >>> standin.stop()

    Replay mode (no firehose): ``JetstreamStandin.start(events_file="events.jsonl")`` serves the file's
    v1 events, ``time_us`` as given, as the whole log; ``standin.events`` is how many there are.
    """

    def __init__(
        self,
        process: subprocess.Popen,
        url: str,
        log_path: Path,
        firehose_url: str | None,
        events_file: Path | None = None,
        events: int | None = None,
    ) -> None:
        self.process = process
        self.pid = process.pid
        self.url = url
        self.log_path = log_path
        self.firehose_url = firehose_url
        self.events_file = events_file
        self.events = events  # replay mode: the number of events loaded from the file

    @property
    def http_url(self) -> str:
        return "http://" + self.url[len("ws://") :]

    @classmethod
    def start(
        cls,
        firehose_url: str | None = None,
        *,
        events_file: str | Path | None = None,
        port: int = 0,
        timeout: float = 60.0,
        log_path: str | Path | None = None,
    ) -> "JetstreamStandin":
        """Start the process: reading `firehose_url`, or (replay mode) serving `events_file`; exactly one.

        `timeout` bounds the wait for the firehose, or for loading the file. Raises RuntimeError with the
        process's log tail if it does not come up (a bad events file names the line and the reason).
        """
        if (firehose_url is None) == (events_file is None):
            raise ValueError("give exactly one of firehose_url and events_file")
        if firehose_url is not None:
            source = ["--firehose", firehose_url]
        else:
            events_file = Path(events_file).resolve()
            source = ["--events-file", str(events_file)]
        if log_path is None:
            handle, name = tempfile.mkstemp(prefix="jetstream-standin-", suffix=".log")
            os.close(handle)
            log_path = Path(name)
        log_path = Path(log_path)
        with open(log_path, "ab") as log_file:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.support.jetstream_standin",
                    *source,
                    "--port",
                    str(port),
                    "--ready-timeout",
                    str(timeout),
                ],
                cwd=_PROJECT_ROOT,
                stdout=subprocess.PIPE,
                stderr=log_file,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        line = _readline_with_timeout(process, timeout + 10)
        if not line.startswith("READY "):
            code = _terminate(process)
            tail = log_path.read_text(errors="replace")[-4000:]
            raise RuntimeError(
                f"jetstream stand-in did not start (got {line!r}, exit code {code}); log {log_path}:\n{tail}"
            )
        ready = json.loads(line[len("READY ") :])
        return cls(process, ready["url"], log_path, firehose_url, events_file, ready.get("events"))

    def subscribe_url(
        self,
        *,
        wanted_collections: Iterable[str] = (),
        wanted_dids: Iterable[str] = (),
        cursor: int | None = None,
    ) -> str:
        from urllib.parse import urlencode

        params = [("wantedCollections", c) for c in wanted_collections] + [("wantedDids", d) for d in wanted_dids]
        if cursor is not None:
            params.append(("cursor", str(cursor)))
        return f"{self.url}/subscribe" + (f"?{urlencode(params)}" if params else "")

    def inject(self, frame: str | bytes, timeout: float = 10.0) -> int:
        """Send `frame` verbatim to every current subscriber (live only). Returns how many it was queued for."""
        from websockets.sync.client import connect

        with connect(f"{self.url}/_inject", open_timeout=timeout, compression=None) as ws:
            ws.send(frame)
            return json.loads(ws.recv(timeout))["queued"]

    def disconnect_all(self, *, abort: bool = False, timeout: float = 10.0) -> int:
        """Close every subscriber connection (close code 1001, or a bare TCP drop with abort=True)."""
        url = f"{self.http_url}/_disconnect" + ("?mode=abort" if abort else "")
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback only
            return json.loads(response.read())["closed"]

    def status(self, timeout: float = 10.0) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.http_url}/_status", timeout=timeout) as response:  # noqa: S310
            return json.loads(response.read())

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20.0) -> dict[str, Any]:
        """Poll `status()` until `predicate(status)` holds."""
        deadline = time.monotonic() + timeout
        while True:
            current = self.status()
            if predicate(current):
                return current
            if time.monotonic() > deadline:
                raise TimeoutError(f"jetstream stand-in status never matched: {current}")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        return _terminate(self.process, timeout)


def _readline_with_timeout(process: subprocess.Popen, timeout: float) -> str:
    result: list[str] = []

    def read() -> None:
        result.append(process.stdout.readline().decode("utf-8", errors="replace"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0].strip() if result else ""


def _terminate(process: subprocess.Popen, timeout: float = 10.0) -> int | None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout)
    if process.stdout is not None:
        process.stdout.close()
    return process.returncode


if __name__ != "__main__":
    import pytest

    @pytest.fixture(scope="session")
    def jetstream(atproto_network: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterable[JetstreamStandin]:
        """A Jetstream v1 stand-in reading the session's local PDS firehose."""
        log_path = tmp_path_factory.mktemp("jetstream-standin") / "standin.log"
        standin = JetstreamStandin.start(atproto_network.pds_ws_url, log_path=log_path)
        try:
            yield standin
        finally:
            standin.stop()


if __name__ == "__main__":
    sys.exit(main())
