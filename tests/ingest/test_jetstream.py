"""Jetstream v1 protocol: subscription URLs, collection filters, and parsing frames into events."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve

from blipflow.config import JetstreamConfig
from blipflow.ingest.jetstream import (
    JetstreamSource,
    parse_event,
    subscribe_url,
    wants_collection,
)
from blipflow.ingest.source import PassiveSink
from blipflow.model.events import (
    LATEST_TIME_US,
    AccountEvent,
    BadFrame,
    CommitEvent,
    Event,
    IdentityEvent,
)

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
T = 1_760_000_000_123_456


def frame(**event: Any) -> bytes:
    return orjson.dumps(event)


def commit(operation: str = "create", **fields: Any) -> bytes:
    body: dict[str, Any] = {"rev": "3lbt5xyz", "operation": operation, "collection": "stream.thought.blip",
                            "rkey": "3lbt5abc"}
    if operation != "delete":
        body.update(cid="bafyreicid", record={"$type": "stream.thought.blip", "content": "hi",
                                               "createdAt": "2025-10-09T08:53:20.123Z"})
    body.update(fields)
    return frame(did=DID, time_us=T, kind="commit", commit=body)


# -- subscribe_url ---------------------------------------------------------------------------------


def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def test_host_only_instance_becomes_wss_subscribe() -> None:
    url = subscribe_url("jetstream2.us-east.bsky.network", wanted_collections=[], wanted_dids=[], cursor=None)
    assert url == "wss://jetstream2.us-east.bsky.network/subscribe"


def test_ws_url_is_kept_with_port_and_path() -> None:
    url = subscribe_url("ws://127.0.0.1:6008", wanted_collections=[], wanted_dids=[], cursor=None)
    assert url == "ws://127.0.0.1:6008/subscribe"
    url = subscribe_url("ws://127.0.0.1:6008/subscribe", wanted_collections=[], wanted_dids=[], cursor=None)
    assert url == "ws://127.0.0.1:6008/subscribe"  # not doubled
    url = subscribe_url("wss://proxy.example/jet/", wanted_collections=[], wanted_dids=[], cursor=None)
    assert url == "wss://proxy.example/jet/subscribe"


def test_filters_repeat_and_cursor_is_sent() -> None:
    url = subscribe_url(
        "ws://127.0.0.1:6008",
        wanted_collections=["stream.thought.blip", "app.bsky.feed.*"],
        wanted_dids=[DID, "did:web:example.com"],
        cursor=T,
    )
    assert urlsplit(url).path == "/subscribe"
    params = query(url)
    assert params["wantedCollections"] == ["stream.thought.blip", "app.bsky.feed.*"]
    assert params["wantedDids"] == [DID, "did:web:example.com"]
    assert params["cursor"] == [str(T)]


def test_cursor_zero_is_sent_and_none_is_not() -> None:
    assert query(subscribe_url("h", wanted_collections=[], wanted_dids=[], cursor=0))["cursor"] == ["0"]
    assert "cursor" not in query(subscribe_url("h", wanted_collections=["a.b"], wanted_dids=[], cursor=None))


def test_non_websocket_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="http://"):
        subscribe_url("http://127.0.0.1:6008", wanted_collections=[], wanted_dids=[], cursor=None)


# -- wants_collection ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "collection", "wanted"),
    [
        ([], "anything.at.all", True),
        (["stream.thought.blip"], "stream.thought.blip", True),
        (["stream.thought.blip"], "stream.thought.blipx", False),
        (["stream.thought.blip"], "stream.thought", False),
        (["stream.thought.*"], "stream.thought.blip", True),
        (["stream.thought.*"], "stream.thought.deep.nested", True),
        (["stream.thought.*"], "stream.thoughts.blip", False),
        (["stream.thought.*"], "stream.thought", False),
        (["app.bsky.feed.post", "stream.thought.*"], "app.bsky.feed.post", True),
        (["app.bsky.feed.post", "stream.thought.*"], "app.bsky.feed.like", False),
    ],
)
def test_wants_collection(patterns: list[str], collection: str, wanted: bool) -> None:
    assert wants_collection(patterns, collection) is wanted


# -- parse_event: good frames ----------------------------------------------------------------------


def test_commit_create() -> None:
    raw = commit("create")
    event = parse_event(raw)
    assert isinstance(event, CommitEvent)
    assert (event.did, event.time_us, event.operation) == (DID, T, "create")
    assert (event.collection, event.rkey, event.rev, event.cid) == ("stream.thought.blip", "3lbt5abc", "3lbt5xyz",
                                                                     "bafyreicid")
    assert event.record["content"] == "hi"
    assert event.uri == f"at://{DID}/stream.thought.blip/3lbt5abc"
    assert event.raw == raw  # the store reads its columns from the raw event


def test_commit_update_from_text_frame() -> None:
    event = parse_event(commit("update", record={"content": "edited"}).decode())
    assert isinstance(event, CommitEvent)
    assert event.operation == "update" and event.record == {"content": "edited"}


def test_commit_delete_has_no_record_or_cid() -> None:
    event = parse_event(commit("delete"))
    assert isinstance(event, CommitEvent)
    assert event.operation == "delete"
    assert event.record is None and event.cid is None
    assert event.rev == "3lbt5xyz"


def test_identity() -> None:
    event = parse_event(frame(did=DID, time_us=T, kind="identity",
                              identity={"did": DID, "handle": "alice.bsky.social", "seq": 1}))
    assert event == IdentityEvent(DID, T, "alice.bsky.social")
    # an identity event without a handle still says the DID's identity changed
    assert parse_event(frame(did=DID, time_us=T, kind="identity", identity={"did": DID})) == IdentityEvent(DID, T, None)
    # a handle that is not a handle (a line break, a space) is no handle: the DID's identity still changed
    for odd in ("alice\nauthor: bob.test", "alice bsky.social", "alice", 42):
        assert parse_event(frame(did=DID, time_us=T, kind="identity", identity={"handle": odd})) == IdentityEvent(
            DID, T, None)


def test_account() -> None:
    event = parse_event(frame(did=DID, time_us=T, kind="account",
                              account={"active": False, "status": "takendown", "did": DID}))
    assert event == AccountEvent(DID, T, False, "takendown")
    assert parse_event(frame(did=DID, time_us=T, kind="account", account={"active": True})) == AccountEvent(
        DID, T, True, None)


# -- parse_event: bad frames -----------------------------------------------------------------------


def good(**overrides: Any) -> bytes:
    event: dict[str, Any] = {"did": DID, "time_us": T, "kind": "identity", "identity": {"handle": "a.test"}}
    event.update(overrides)
    return orjson.dumps(event)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not_json"),
        (b"", "not_json"),
        (b"[1, 2]", "not_object"),
        (b'"a string"', "not_object"),
        (good(did="plc:abc"), "bad_did"),
        (good(did=None), "bad_did"),
        (good(did=42), "bad_did"),
        (orjson.dumps({"did": DID, "kind": "identity"}), "bad_time_us"),
        (good(time_us=str(T)), "bad_time_us"),
        (good(time_us=True), "bad_time_us"),
        (good(time_us=-1), "bad_time_us"),
        (good(time_us=2**63), "bad_time_us"),
        (good(time_us=LATEST_TIME_US), "bad_time_us"),  # year 9999: Python's datetime holds no later time
        (good(did="did:plc:abc\nauthor: alice"), "bad_did"),  # a line break would pose as a header in a prompt
        (good(did="did:PLC:abc"), "bad_did"),
        (good(time_us=1.5), "bad_time_us"),
        (good(kind="mystery"), "unknown_kind"),
        (good(kind=None), "unknown_kind"),
        (commit("upsert"), "bad_commit"),
        (frame(did=DID, time_us=T, kind="commit", commit="nope"), "bad_commit"),
        (commit("create", rkey=""), "bad_commit"),
        (commit("create", rkey="a/b"), "bad_commit"),
        (commit("create", rkey=".."), "bad_commit"),
        (commit("create", collection="stream thought blip"), "bad_commit"),
        (commit("create", collection=None), "bad_commit"),
        (commit("create", record=None), "bad_commit"),
        (commit("create", cid=None), "bad_commit"),
        (commit("update", record="text"), "bad_commit"),
        (frame(did=DID, time_us=T, kind="account", account={"status": "deleted"}), "bad_account"),
        (frame(did=DID, time_us=T, kind="account", account={"active": "true"}), "bad_account"),
        (frame(did=DID, time_us=T, kind="account", account={"active": 1}), "bad_account"),
        (frame(did=DID, time_us=T, kind="account"), "bad_account"),
    ],
)
def test_bad_frame_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(BadFrame) as caught:
        parse_event(raw)
    assert caught.value.reason == reason
    assert str(caught.value).startswith(f"{reason}: ")


def test_the_latest_time_every_reader_can_hold_is_accepted() -> None:
    assert parse_event(good(time_us=LATEST_TIME_US - 1)).time_us == LATEST_TIME_US - 1
    assert parse_event(good(time_us=0)).time_us == 0


# -- JetstreamSource: reading a connection ---------------------------------------------------------


class Collecting(PassiveSink):
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.bad: list[BadFrame] = []

    def accept(self, event: Event) -> None:
        self.events.append(event)

    def reject(self, bad: BadFrame) -> None:
        self.bad.append(bad)


def test_a_text_frame_that_is_not_utf8_is_a_bad_frame_and_reading_goes_on() -> None:
    broken = commit("create").replace(b'"hi"', b'"h\xffi"')  # a byte UTF-8 never has

    async def serve_frames(socket: ServerConnection) -> None:
        for raw in (commit("create"), broken, good()):
            await socket.send(raw, text=True)  # as text frames, which Jetstream sends

    async def main() -> tuple[Collecting, int]:
        async with serve(serve_frames, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            source = JetstreamSource(JetstreamConfig(instances=[f"ws://127.0.0.1:{port}"]), max_frame_bytes=1 << 20)
            sink = Collecting()
            received = await source.read_connection(f"ws://127.0.0.1:{port}/subscribe", "stand-in", sink)
            return sink, received

    sink, received = asyncio.run(main())
    assert received == 3
    assert [type(event) for event in sink.events] == [CommitEvent, IdentityEvent]
    assert sink.events[0].raw == commit("create")  # as it came, UTF-8 bytes, for the store
    assert [bad.reason for bad in sink.bad] == ["not_json"]
