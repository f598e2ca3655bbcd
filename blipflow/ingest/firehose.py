"""A PDS or relay firehose (`com.atproto.sync.subscribeRepos`) as a source, for networks without Jetstream.

Each message is translated exactly as Jetstream would (`firehose_events`) and then read like a
Jetstream frame, so both sources hand ingest the same events. The resumable position is the firehose
`seq`; events are stamped with the commit's own `time`, in microseconds.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import orjson
from atproto import AsyncFirehoseSubscribeReposClient, parse_subscribe_repos_message

from blipflow.ingest.firehose_events import translate_message
from blipflow.ingest.jetstream import event_from_dict, wants_collection
from blipflow.ingest.source import EventSink
from blipflow.model.events import BadFrame, CommitEvent, Event

log = logging.getLogger(__name__)


def time_us_of(iso_time: str) -> int:
    stamp = datetime.fromisoformat(iso_time.replace("Z", "+00:00"))
    return int(stamp.timestamp() * 1_000_000)


def events_from_message(message: Any) -> list[Event]:
    """The events in one decoded firehose message (none for #sync, #info, or what Jetstream would skip)."""
    time_text = getattr(message, "time", None)
    events = translate_message(message)
    if not events:
        return []
    time_us = time_us_of(time_text)  # translate_message only passes messages whose time is RFC 3339
    stamped = [{**event, "time_us": time_us} for event in events]
    return [event_from_dict(event, orjson.dumps(event)) for event in stamped]


class FirehoseSource:
    """Reads a PDS's or relay's `subscribeRepos`, resuming by `seq`; the SDK client reconnects by itself."""

    def __init__(self, service_url: str, *, wanted_collections: list[str], wanted_dids: list[str]) -> None:
        self.xrpc_url = websocket_xrpc_url(service_url)
        self.wanted_collections = wanted_collections
        self.wanted_dids = set(wanted_dids)

    @property
    def cursor_key(self) -> str:
        return f"firehose:{self.xrpc_url}"

    def wanted(self, event: Event) -> bool:
        if self.wanted_dids and event.did not in self.wanted_dids:
            return False
        # Like Jetstream, identity and account events bypass the collection filter.
        return not isinstance(event, CommitEvent) or wants_collection(self.wanted_collections, event.collection)

    @property
    def first_cursor(self) -> int | None:
        # A PDS or relay of one's own keeps its history: the first run reads all of it.
        return 0

    async def run(self, sink: EventSink, cursor: int | None) -> None:
        params = {"cursor": cursor} if cursor is not None else None
        # No receive timeout: an idle PDS is normal, and websocket pings notice a dead one.
        client = AsyncFirehoseSubscribeReposClient(params, base_uri=self.xrpc_url, recv_timeout=None)
        sink.connected(self.xrpc_url)

        async def on_message(frame: Any) -> None:
            try:
                message = parse_subscribe_repos_message(frame)
                events = events_from_message(message)
            except BadFrame as bad:
                sink.reject(bad)
                return
            except Exception as error:  # noqa: BLE001 - a message we cannot decode is skipped, never fatal
                sink.reject(BadFrame("bad_message", f"{type(error).__name__}: {error}"))
                return
            for event in events:
                if self.wanted(event):
                    sink.accept(event)
            seq = getattr(message, "seq", None)
            if isinstance(seq, int):
                client.update_params({"cursor": seq})  # the SDK reconnects with these params
                sink.advance(seq)
            if sink.backlogged:
                await sink.drain()

        try:
            await client.start(on_message)
        finally:
            sink.disconnected(self.xrpc_url)


def websocket_xrpc_url(service_url: str) -> str:
    """`https://pds.example` → `wss://pds.example/xrpc` (and http → ws)."""
    url = service_url.rstrip("/")
    if url.startswith("https://"):
        url = "wss://" + url[len("https://"):]
    elif url.startswith("http://"):
        url = "ws://" + url[len("http://"):]
    return url if url.endswith("/xrpc") else url + "/xrpc"
