"""Tests of the Jetstream v1 stand-in (tests/support/jetstream_standin.py).

The translation of firehose messages into v1 events lives in blipflow/firehose_events.py and is tested in
tests/ingest/test_firehose_events.py; the message builders are shared from tests/support/repo_builders.py.

Layers here:
- the pure core (event log, filtering, cursor replay) with hand-built firehose messages;
- the websocket server in-process, fed through `StandinServer.ingest` (no PDS needed);
- the stand-in process in replay mode (``--events-file``), and against a scripted firehose;
- the stand-in process against the real local PDS (fixtures `atproto_network` and `jetstream`).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import libipld
import orjson
import pytest
import websockets
from websockets.asyncio.client import connect as aconnect
from websockets.sync.client import connect as sconnect

from blipflow.ingest.firehose_events import translate_message
from blipflow.ingest.simulator import simulate_events
from tests.support import jetstream_standin as js
from tests.support.repo_builders import (
    BLIP,
    DID_A,
    DID_B,
    L,
    account_message,
    blip_record,
    cbor,
    cid_of,
    commit_message,
    identity_message,
)

# ---------------------------------------------------------------------------------------------------
# Pure core: encoding and the event log
# ---------------------------------------------------------------------------------------------------


def test_encode_event_escapes_html_like_go():
    text = js.encode_event({"did": DID_A, "time_us": 1, "kind": "commit", "commit": {"record": {"t": "<a&b>\u2028"}}})
    assert "\\u003ca\\u0026b\\u003e\\u2028" in text
    assert json.loads(text)["commit"]["record"]["t"] == "<a&b>\u2028"


def test_log_frames_have_go_field_order_and_increasing_time_us():
    frozen = js.MonotonicClock(now_us=lambda: 1_000)
    log = js.EventLog(frozen)
    first = log.append(translate_message(identity_message(DID_A, 1))[0])
    second = log.append(translate_message(commit_message(DID_A, "3l3", [("delete", BLIP, "k", None)]))[0])
    assert (first.time_us, second.time_us) == (1_000, 1_001)  # strictly increasing even when the clock stalls
    assert first.frame.startswith('{"did":"%s","time_us":1000,"kind":"identity","identity":{' % DID_A)
    assert second.frame == (
        '{"did":"%s","time_us":1001,"kind":"commit","commit":'
        '{"rev":"3l3","operation":"delete","collection":"%s","rkey":"k"}}' % (DID_A, BLIP)
    )
    assert second.collection == BLIP and first.collection == ""


# ---------------------------------------------------------------------------------------------------
# Pure core: options, filtering, cursor replay
# ---------------------------------------------------------------------------------------------------


def _log_with(*messages: dict) -> js.EventLog:
    log = js.EventLog(js.MonotonicClock(now_us=lambda: 100))
    for message in messages:
        for event in translate_message(message):
            log.append(event)
    return log


def _mixed_log() -> js.EventLog:
    return _log_with(
        commit_message(DID_A, "3l1", [("create", BLIP, "a1", blip_record("a1"))]),  # 100
        commit_message(DID_A, "3l2", [("create", "app.bsky.feed.post", "a2", {"$type": "app.bsky.feed.post"})]),
        commit_message(DID_B, "3l3", [("create", "app.bsky.feed.like", "b1", {"$type": "app.bsky.feed.like"})]),
        identity_message(DID_B, 4),  # 103
        account_message(DID_A, 5),  # 104
        commit_message(DID_B, "3l4", [("delete", BLIP, "b2", None)]),  # 105
    )


def _names(frames: list) -> list[str]:
    out = []
    for frame in frames:
        event = json.loads(frame)
        out.append(event["commit"]["rkey"] if event["kind"] == "commit" else f"{event['kind']}:{event['did'][-1]}")
    return out


def _replay(log: js.EventLog, **options: Any) -> list[str]:
    return _names(js.Subscription(log, js.SubscriberOptions.parse(**options)).take())


def test_filter_exact_and_prefix_collections_with_identity_account_bypass():
    log = _mixed_log()
    everything = ["a1", "a2", "b1", "identity:b", "account:a", "b2"]
    assert _replay(log, cursor=0) == everything
    assert _replay(log, wanted_collections=[BLIP], cursor=0) == ["a1", "identity:b", "account:a", "b2"]
    assert _replay(log, wanted_collections=["app.bsky.*"], cursor=0) == ["a2", "b1", "identity:b", "account:a"]
    assert _replay(log, wanted_collections=["app.bsky.feed.like", BLIP], cursor=0) == [
        "a1",
        "b1",
        "identity:b",
        "account:a",
        "b2",
    ]
    # prefixes match the text before '*', dot included: "stream.*" matches stream.thought.blip
    assert _replay(log, wanted_collections=["stream.*"], cursor=0) == ["a1", "identity:b", "account:a", "b2"]


def test_filter_dids_apply_to_every_kind():
    log = _mixed_log()
    assert _replay(log, wanted_dids=[DID_B], cursor=0) == ["b1", "identity:b", "b2"]
    assert _replay(log, wanted_dids=[DID_A], wanted_collections=[BLIP], cursor=0) == ["a1", "account:a"]
    assert _replay(log, wanted_dids=[DID_A, DID_B], cursor=0) == _replay(log, cursor=0)


def test_cursor_is_inclusive():
    log = _mixed_log()
    times = [entry.time_us for entry in log.entries]
    assert times == list(range(100, 106))
    assert _replay(log, cursor=103) == ["identity:b", "account:a", "b2"]  # starts AT the event with time_us 103
    assert _replay(log, cursor=102) == ["b1", "identity:b", "account:a", "b2"]
    assert _replay(log, cursor=105) == ["b2"]
    assert _replay(log, cursor=106) == []
    assert _replay(log, cursor=-5) == _replay(log, cursor=0)
    assert _replay(log) == []  # no cursor: live only


def test_seam_between_replay_and_live_has_no_gap_or_duplicate():
    log = js.EventLog(js.MonotonicClock(now_us=lambda: 0))
    for i in range(10):
        log.append(translate_message(commit_message(DID_A, "3l", [("delete", BLIP, f"k{i}", None)]))[0])
    sub = js.Subscription(log, js.SubscriberOptions.parse(cursor=log.entries[4].time_us))
    live_only = js.Subscription(log, js.SubscriberOptions.parse())
    seen = _names(sub.take(limit=3))  # partway through the replay...
    for i in range(10, 13):  # ...new live events arrive
        log.append(translate_message(commit_message(DID_A, "3l", [("delete", BLIP, f"k{i}", None)]))[0])
    seen += _names(sub.take(limit=2))
    seen += _names(sub.take())
    log.append(translate_message(commit_message(DID_A, "3l", [("delete", BLIP, "k13", None)]))[0])
    seen += _names(sub.take())
    assert seen == [f"k{i}" for i in range(4, 14)]
    assert _names(live_only.take()) == ["k10", "k11", "k12", "k13"]
    assert sub.take() == [] and live_only.take() == []


def test_injected_frames_wait_for_their_place_in_the_replay():
    log = _mixed_log()
    behind = js.Subscription(log, js.SubscriberOptions.parse(cursor=0))
    caught_up = js.Subscription(log, js.SubscriberOptions.parse())
    for sub in (behind, caught_up):
        sub.inject("not json")
    assert caught_up.take() == ["not json"]
    frames = behind.take()
    assert frames[-1] == "not json" and len(frames) == 7


@pytest.mark.parametrize(
    "collections, dids, message",
    [
        (["not an nsid"], [], "invalid collection: not an nsid"),
        ([""], [], "invalid collection"),
        (["*"], [], "invalid collection"),
        ([], ["alice"], "invalid subscriber options"),
        ([f"com.example.c{i}" for i in range(101)], [], "too many wanted collections"),
        ([], [f"did:plc:{i:024d}" for i in range(10_001)], "too many wanted DIDs"),
    ],
)
def test_invalid_options_are_rejected(collections, dids, message):
    with pytest.raises(js.InvalidOptions, match=message):
        js.SubscriberOptions.parse(collections, dids)


def test_options_from_query():
    options = js.SubscriberOptions.from_query(
        f"wantedCollections={BLIP}&wantedCollections=app.bsky.*&wantedDids={DID_A}&cursor=123&maxMessageSizeBytes=-4",
        now_us=1_000,
    )
    assert options.collection_paths == {BLIP} and options.collection_prefixes == ("app.bsky.",)
    assert options.dids == {DID_A} and options.cursor == 123 and options.max_message_size_bytes == 0
    assert js.SubscriberOptions.from_query("cursor=5000", now_us=1_000).cursor is None  # future: live tail
    assert js.SubscriberOptions.from_query("", now_us=1_000).cursor is None
    with pytest.raises(js.InvalidOptions, match="invalid cursor: abc"):
        js.SubscriberOptions.from_query("cursor=abc")
    with pytest.raises(js.InvalidOptions, match="compression"):
        js.SubscriberOptions.from_query("compress=true")
    updated = options.with_update({"wantedCollections": ["app.bsky.feed.like"], "wantedDids": []})
    assert updated.cursor == 123 and updated.collection_paths == {"app.bsky.feed.like"} and not updated.dids


def test_max_message_size_skips_big_events():
    log = _log_with(
        commit_message(DID_A, "3l1", [("create", BLIP, "small", blip_record("x"))]),
        commit_message(DID_A, "3l2", [("create", BLIP, "big", blip_record("x" * 2000))]),
    )
    assert _replay(log, cursor=0, max_message_size_bytes=1000) == ["small"]


# ---------------------------------------------------------------------------------------------------
# The server in-process (no PDS): wiring of /subscribe and the test controls
# ---------------------------------------------------------------------------------------------------


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


async def _recv_json(ws, timeout: float = 5.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def _no_more(ws, timeout: float = 0.2) -> bool:
    try:
        await asyncio.wait_for(ws.recv(), timeout)
    except asyncio.TimeoutError:
        return True
    return False


async def _started() -> js.StandinServer:
    server = js.StandinServer(None)
    await server.start()
    return server


def _blip_commit(did: str, rkey: str, text: str = "hi") -> dict:
    return commit_message(did, "3l3qo2vutsw2b", [("create", BLIP, rkey, blip_record(text))])


def test_server_live_and_replay():
    async def scenario():
        server = await _started()
        try:
            server.ingest(_blip_commit(DID_A, "before"))
            cursor = server.log.entries[0].time_us
            async with aconnect(f"{server.url}/subscribe?wantedCollections={BLIP}", compression=None) as live:
                async with aconnect(f"{server.url}/subscribe?cursor={cursor}", compression=None) as replay:
                    await asyncio.sleep(0.05)  # let both register
                    server.ingest(_blip_commit(DID_A, "after"))
                    server.ingest(identity_message(DID_B, 2))
                    got_live = [await _recv_json(live), await _recv_json(live)]
                    got_replay = [await _recv_json(replay) for _ in range(3)]
                    assert await _no_more(live) and await _no_more(replay)
            assert [e.get("commit", {}).get("rkey", e["kind"]) for e in got_live] == ["after", "identity"]
            assert [e.get("commit", {}).get("rkey", e["kind"]) for e in got_replay] == ["before", "after", "identity"]
            assert got_replay[0]["time_us"] == cursor
            assert got_replay[0]["commit"]["record"] == blip_record("hi")
        finally:
            await server.stop()

    run(scenario())


def test_server_rejects_bad_options_before_upgrade():
    async def scenario():
        server = await _started()
        try:
            for query in ("wantedCollections=bad%20nsid", "wantedDids=nope", "cursor=xyz", "compress=true"):
                with pytest.raises(websockets.exceptions.InvalidStatus) as info:
                    async with aconnect(f"{server.url}/subscribe?{query}", compression=None):
                        pass
                assert info.value.response.status_code == 400
            with pytest.raises(websockets.exceptions.InvalidStatus) as info:
                async with aconnect(f"{server.url}/nope"):
                    pass
            assert info.value.response.status_code == 404
        finally:
            await server.stop()

    run(scenario())


def test_server_options_update_and_require_hello():
    async def scenario():
        server = await _started()
        try:
            async with aconnect(f"{server.url}/subscribe?requireHello=true", compression=None) as ws:
                await asyncio.sleep(0.05)
                server.ingest(_blip_commit(DID_A, "one"))
                assert await _no_more(ws)  # nothing until the hello
                update = {"type": "options_update", "payload": {"wantedCollections": [BLIP], "wantedDids": [DID_B]}}
                await ws.send(json.dumps(update))
                await asyncio.sleep(0.05)
                server.ingest(_blip_commit(DID_B, "two"))
                assert (await _recv_json(ws))["commit"]["rkey"] == "two"  # "one" is DID_A: filtered out
                await ws.send("this is not json")
                with pytest.raises(websockets.exceptions.ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 5)
                assert ws.close_code == 1000 and "failed to unmarshal" in ws.close_reason
        finally:
            await server.stop()

    run(scenario())


def test_server_inject_and_disconnect_controls():
    async def scenario():
        server = await _started()
        loop = asyncio.get_running_loop()
        try:
            async with aconnect(f"{server.url}/subscribe", compression=None) as ws:
                await asyncio.sleep(0.05)
                async with aconnect(f"{server.url}/_inject", compression=None) as inject:
                    await inject.send("{not json")
                    assert json.loads(await inject.recv()) == {"queued": 1}
                assert await asyncio.wait_for(ws.recv(), 5) == "{not json"
                status = await loop.run_in_executor(None, _http_json, f"http://127.0.0.1:{server.port}/_status")
                assert status["subscribers"] == 1 and status["events"] == 0
                closed = await loop.run_in_executor(None, _http_json, f"http://127.0.0.1:{server.port}/_disconnect")
                assert closed == {"closed": 1}
                with pytest.raises(websockets.exceptions.ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 5)
                assert ws.close_code == 1001
            # injected frames are not stored: a replay from 0 does not see them
            async with aconnect(f"{server.url}/subscribe?cursor=0", compression=None) as ws:
                assert await _no_more(ws)
            async with aconnect(f"{server.url}/subscribe", compression=None) as ws:
                await asyncio.sleep(0.05)
                closed = await loop.run_in_executor(
                    None, _http_json, f"http://127.0.0.1:{server.port}/_disconnect?mode=abort"
                )
                assert closed == {"closed": 1}
                with pytest.raises(websockets.exceptions.ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 5)
                assert ws.close_code == 1006  # dropped without a close frame
        finally:
            await server.stop()

    run(scenario())


def _http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


# ---------------------------------------------------------------------------------------------------
# Replay mode (--events-file): a file of v1 events, time_us as given, as the whole log
# ---------------------------------------------------------------------------------------------------


def _write_events(path: Path, events: list[dict]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(event) + b"\n" for event in events))
    return path


@pytest.fixture(scope="module")
def replay_events() -> list[dict]:
    events = list(simulate_events(1_500, seed=11))  # more than one send burst
    # one record with characters Jetstream escapes, to check the frames are the Go encoding
    events[3]["commit"]["record"]["content"] = "<b>&\u2028</b>"
    return events


def test_event_log_keeps_stamped_events_as_given():
    log = js.EventLog(js.MonotonicClock(now_us=lambda: 5))
    events = list(simulate_events(3, seed=1))
    for event in events:
        log.append_stamped(event)
    assert [entry.time_us for entry in log.entries] == [event["time_us"] for event in events]
    assert [entry.frame for entry in log.entries] == [js.encode_event(event) for event in events]
    assert log.entries[0].collection == BLIP
    # events appended later (live) still come after the stamped ones
    later = log.append(translate_message(identity_message(DID_A, 1))[0])
    assert later.time_us == events[-1]["time_us"] + 1


@pytest.mark.parametrize(
    "event, message",
    [
        ([], "not a JSON object"),
        ({"did": DID_A, "time_us": 10, "kind": "post", "post": {}}, "kind must be one of"),
        ({"did": DID_A, "time_us": 10, "kind": "identity"}, "'identity' must be an object"),
        ({"did": DID_A, "time_us": 10, "kind": "identity", "identity": {}, "extra": 1}, "unexpected fields"),
        ({"did": "", "time_us": 10, "kind": "identity", "identity": {}}, "did must be"),
        ({"did": DID_A, "time_us": "10", "kind": "identity", "identity": {}}, "time_us must be a positive integer"),
        ({"did": DID_A, "time_us": True, "kind": "identity", "identity": {}}, "time_us must be a positive integer"),
        ({"did": DID_A, "time_us": 10, "kind": "commit", "commit": {"rkey": "x"}}, "commit.collection"),
        ({"did": DID_A, "time_us": 100, "kind": "identity", "identity": {}}, "time_us 100 does not increase"),
        ({"did": DID_A, "time_us": 99, "kind": "identity", "identity": {}}, "time_us 99 does not increase"),
    ],
)
def test_event_log_rejects_what_is_not_a_later_v1_event(event, message):
    log = js.EventLog()
    log.append_stamped({"did": DID_B, "time_us": 100, "kind": "identity", "identity": {"did": DID_B}})
    with pytest.raises(js.EventsFileError, match=message):
        log.append_stamped(event)
    assert len(log) == 1


def test_load_events_file_names_file_and_line(tmp_path):
    server = js.StandinServer(None)
    good = _write_events(tmp_path / "good.jsonl", list(simulate_events(5, seed=2)))
    good.write_bytes(good.read_bytes() + b"\n")  # a trailing blank line is fine
    assert server.load_events_file(good) == 5
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(good.read_bytes().replace(b"\n", b"\n{oops\n", 1))
    with pytest.raises(js.EventsFileError, match=r"bad\.jsonl:2: invalid JSON"):
        js.StandinServer(None).load_events_file(bad)
    with pytest.raises(js.EventsFileError, match=r"missing\.jsonl: cannot read"):
        js.StandinServer(None).load_events_file(tmp_path / "missing.jsonl")


@pytest.mark.process
def test_replay_process_serves_the_file_from_cursor_0(replay_events, tmp_path):
    path = _write_events(tmp_path / "events.jsonl", replay_events)
    standin = js.JetstreamStandin.start(events_file=path, log_path=tmp_path / "standin.log", timeout=20)
    try:
        assert standin.events == len(replay_events) and standin.firehose_url is None
        assert standin.status()["events"] == len(replay_events)
        expected = [js.encode_event(event) for event in replay_events]
        with sconnect(standin.subscribe_url(cursor=0), compression=None, open_timeout=10) as ws:
            frames = [ws.recv(10) for _ in replay_events]
            assert frames == expected  # every event, in order, byte for byte (time_us as given)
            with pytest.raises(TimeoutError):
                ws.recv(0.3)  # then the live tail, which is empty
        assert "\\u003cb\\u003e\\u0026\\u2028" in frames[3]
        # an inclusive cursor in the middle, and a filtered subscriber, get their part of the same log
        middle = replay_events[700]["time_us"]
        with sconnect(standin.subscribe_url(cursor=middle), compression=None, open_timeout=10) as ws:
            assert [ws.recv(10) for _ in replay_events[700:]] == expected[700:]
            with pytest.raises(TimeoutError):
                ws.recv(0.3)
        did = replay_events[0]["did"]
        mine = [frame for frame, event in zip(expected, replay_events) if event["did"] == did]
        with sconnect(standin.subscribe_url(wanted_dids=[did], cursor=0), compression=None, open_timeout=10) as ws:
            assert [ws.recv(10) for _ in mine] == mine
            with pytest.raises(TimeoutError):
                ws.recv(0.3)
        # without a cursor: live only, and there is no live traffic in replay mode
        with sconnect(standin.subscribe_url(), compression=None, open_timeout=10) as ws:
            with pytest.raises(TimeoutError):
                ws.recv(0.3)
    finally:
        code = standin.stop()
    assert code == 0 and not standin.alive()


@pytest.mark.process
def test_replay_process_refuses_a_file_out_of_order(tmp_path):
    events = list(simulate_events(3, seed=5))
    events[2]["time_us"] = events[1]["time_us"]  # equal is not strictly increasing
    path = _write_events(tmp_path / "events.jsonl", events)
    with pytest.raises(RuntimeError, match=r"exit code 2") as info:
        js.JetstreamStandin.start(events_file=path, log_path=tmp_path / "standin.log", timeout=20)
    assert f"events.jsonl:3: time_us {events[1]['time_us']} does not increase strictly" in str(info.value)


@pytest.mark.process
def test_replay_process_cli(tmp_path):
    import subprocess
    import sys

    path = _write_events(tmp_path / "events.jsonl", list(simulate_events(4, seed=6)))
    command = [sys.executable, "-m", "tests.support.jetstream_standin", "--events-file", str(path), "--port", "0"]
    process = subprocess.Popen(command, cwd=js._PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        line = js._readline_with_timeout(process, 20)
        assert line.startswith("READY ")
        ready = json.loads(line[len("READY ") :])
        assert ready["events"] == 4 and ready["url"].startswith("ws://127.0.0.1:")
    finally:
        assert js._terminate(process) == 0
    both = subprocess.run(
        [*command, "--firehose", "ws://127.0.0.1:9"], cwd=js._PROJECT_ROOT, capture_output=True, text=True, timeout=30
    )
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    with pytest.raises(ValueError, match="exactly one"):
        js.JetstreamStandin.start()
    with pytest.raises(ValueError, match="exactly one"):
        js.JetstreamStandin.start("ws://127.0.0.1:9", events_file=path)


# ---------------------------------------------------------------------------------------------------
# The stand-in process against a scripted firehose (no PDS): READY line, SDK client, reconnects, SIGTERM
# ---------------------------------------------------------------------------------------------------


class FakeFirehose:
    """A scripted com.atproto.sync.subscribeRepos server in a background thread.

    Serves its `messages` (firehose bodies with '$type' and 'seq') after the requested cursor, then waits
    for more; records each connection's cursor; can drop every connection (a PDS restart).
    """

    def __init__(self) -> None:
        import threading

        self.messages: list[dict] = []
        self.cursors: list[str | None] = []
        self.connections: set = set()
        self.loop = asyncio.new_event_loop()
        self.changed: asyncio.Event | None = None
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def _run(self, ready) -> None:
        from websockets.asyncio.server import serve

        async def main():
            self.changed = asyncio.Event()
            self.server = await serve(self._handler, "127.0.0.1", 0, compression=None)
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()
            await self.server.wait_closed()

        self.loop.run_until_complete(main())

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def _handler(self, ws) -> None:
        from urllib.parse import parse_qs, urlsplit

        cursor = parse_qs(urlsplit(ws.request.path).query).get("cursor", [None])[0]
        self.cursors.append(cursor)
        self.connections.add(ws)
        try:
            after = int(cursor) if cursor is not None else None
            if after is not None and self.messages and after > self.messages[-1]["seq"]:
                await ws.send(cbor({"op": -1}) + cbor({"error": "FutureCursor", "message": "Cursor in the future."}))
                await ws.close()
                return
            sent = 0 if after is not None else len(self.messages)
            while True:
                while sent < len(self.messages):
                    message = self.messages[sent]
                    sent += 1
                    if after is not None and message["seq"] <= after:
                        continue
                    body = {k: v for k, v in message.items() if k != "$type"}
                    await ws.send(cbor({"op": 1, "t": message["$type"]}) + cbor(body))
                self.changed.clear()
                changed = asyncio.ensure_future(self.changed.wait())
                closed = asyncio.ensure_future(ws.wait_closed())
                await asyncio.wait({changed, closed}, return_when=asyncio.FIRST_COMPLETED)
                changed.cancel()
                closed.cancel()
                if ws.state.name in ("CLOSING", "CLOSED"):
                    return
        finally:
            self.connections.discard(ws)

    def _call(self, fn) -> None:
        import concurrent.futures

        future: concurrent.futures.Future = concurrent.futures.Future()

        def wrapped():
            try:
                future.set_result(fn())
            except Exception as error:  # noqa: BLE001
                future.set_exception(error)

        self.loop.call_soon_threadsafe(wrapped)
        future.result(10)

    def add(self, *messages: dict) -> None:
        def do():
            self.messages.extend(messages)
            self.changed.set()

        self._call(do)

    def drop_connections(self) -> None:
        self._call(lambda: [ws.transport.abort() for ws in list(self.connections)])

    def reset(self, messages: list[dict]) -> None:
        """A fresh PDS: history starts over with lower seqs."""

        def do():
            self.messages = list(messages)
            for ws in list(self.connections):
                ws.transport.abort()

        self._call(do)

    def close(self) -> None:
        self._call(self.server.close)
        self.thread.join(10)


def _wire_commit(did: str, rkey: str, seq: int, text: str = "hi") -> dict:
    body = commit_message(did, "3l3qo2vutsw2b", [("create", BLIP, rkey, blip_record(text))], seq=seq)
    for op in body["ops"]:
        op["cid"] = L(libipld.encode_cid(op["cid"])) if op["cid"] else None
    return {**body, "blobs": [], "commit": L(cid_of(b"commit")), "rebase": False}


@pytest.fixture
def fake_firehose():
    firehose = FakeFirehose()
    yield firehose
    firehose.close()


@pytest.mark.process
def test_process_reads_firehose_reconnects_and_stops(fake_firehose, tmp_path):
    fake_firehose.add(identity_message(DID_A, 1), _wire_commit(DID_A, "r2", 2))
    standin = js.JetstreamStandin.start(fake_firehose.url, log_path=tmp_path / "standin.log", timeout=20)
    try:
        assert standin.url.startswith("ws://127.0.0.1:")
        assert fake_firehose.cursors[0] == "0"  # from the start of the PDS's history
        with Reader(standin.subscribe_url(cursor=0)) as reader:
            reader.until(_is_commit(DID_A, "r2", "create"))
            fake_firehose.drop_connections()  # the PDS goes away...
            fake_firehose.add(_wire_commit(DID_A, "r3", 3))  # ...and has more on its return
            reader.until(_is_commit(DID_A, "r3", "create"))
            standin.wait_for(lambda s: s["upstream_connections"] >= 2)
            assert fake_firehose.cursors[-1] == "2"  # resumed after the last seq taken in
            fake_firehose.reset([identity_message(DID_B, 1)])  # a fresh PDS: our cursor is now in its future
            reader.until(lambda e: e["kind"] == "identity" and e["did"] == DID_B)
            assert "0" in fake_firehose.cursors[2:]
            kinds = [(e["kind"], e.get("commit", {}).get("rkey")) for e in reader.events]
            assert kinds == [("identity", None), ("commit", "r2"), ("commit", "r3"), ("identity", None)]
            times = [e["time_us"] for e in reader.events]
            assert times == sorted(set(times))
    finally:
        code = standin.stop()
    assert code == 0 and not standin.alive()


@pytest.mark.process
def test_process_start_fails_without_firehose(tmp_path):
    with pytest.raises(RuntimeError, match="did not start"):
        js.JetstreamStandin.start("ws://127.0.0.1:9", log_path=tmp_path / "standin.log", timeout=1)


# ---------------------------------------------------------------------------------------------------
# The stand-in process against the real local PDS
# ---------------------------------------------------------------------------------------------------

NETWORK_MODULE = Path(__file__).resolve().parent.parent / "support" / "network.py"
requires_network = pytest.mark.skipif(not NETWORK_MODULE.exists(), reason="tests/support/network.py not written yet")


class Reader:
    """A synchronous /subscribe client collecting events until a predicate holds."""

    def __init__(self, url: str) -> None:
        self.ws = sconnect(url, compression=None, open_timeout=10)
        self.events: list[dict] = []

    def until(self, predicate, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if predicate(event):
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching event within {timeout}s; got {self.events[-5:]}")
            try:
                frame = self.ws.recv(remaining)
            except TimeoutError:
                continue
            self.events.append(json.loads(frame))

    def close(self) -> None:
        self.ws.close()

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _is_commit(did: str, rkey: str, operation: str):
    return lambda e: (
        e["kind"] == "commit"
        and e["did"] == did
        and e["commit"]["rkey"] == rkey
        and e["commit"]["operation"] == operation
    )


def _rkey(uri: str) -> str:
    return uri.rsplit("/", 1)[-1]


@requires_network
def test_pds_blip_create_update_delete(atproto_network, jetstream):
    account = atproto_network.create_account("jsblip")
    client = atproto_network.client_for(account)
    with Reader(jetstream.subscribe_url(wanted_collections=[BLIP], wanted_dids=[account.did])) as reader:
        time.sleep(0.2)
        uri, cid = atproto_network.post_blip(client, "hello from the stand-in test")
        rkey = _rkey(uri)
        created = reader.until(_is_commit(account.did, rkey, "create"))
        assert created["commit"]["collection"] == BLIP
        assert created["commit"]["cid"] == str(cid)
        assert created["commit"]["record"]["$type"] == BLIP
        assert created["commit"]["record"]["content"] == "hello from the stand-in test"
        assert isinstance(created["commit"]["rev"], str) and isinstance(created["time_us"], int)

        record = dict(created["commit"]["record"], content="edited")
        put = client.com.atproto.repo.put_record(
            {"repo": account.did, "collection": BLIP, "rkey": rkey, "record": record, "validate": False}
        )
        updated = reader.until(_is_commit(account.did, rkey, "update"))
        assert updated["commit"]["record"]["content"] == "edited"
        assert updated["commit"]["cid"] == str(put.cid)
        assert updated["time_us"] > created["time_us"]

        client.com.atproto.repo.delete_record({"repo": account.did, "collection": BLIP, "rkey": rkey})
        deleted = reader.until(_is_commit(account.did, rkey, "delete"))
        assert set(deleted["commit"]) == {"rev", "operation", "collection", "rkey"}
        # only what was asked for: this DID, this collection (plus identity/account of this DID)
        assert all(e["did"] == account.did for e in reader.events)
        assert all(e["commit"]["collection"] == BLIP for e in reader.events if e["kind"] == "commit")


@requires_network
def test_pds_identity_and_account_events_for_a_new_account(atproto_network, jetstream):
    with Reader(jetstream.subscribe_url(wanted_collections=[BLIP])) as reader:
        time.sleep(0.2)
        account = atproto_network.create_account("jsident")
        identity = reader.until(lambda e: e["kind"] == "identity" and e["did"] == account.did)
        assert identity["identity"]["did"] == account.did
        assert isinstance(identity["identity"]["seq"], int) and identity["identity"]["time"]
        if "handle" in identity["identity"]:
            assert identity["identity"]["handle"] == account.handle
        account_event = reader.until(lambda e: e["kind"] == "account" and e["did"] == account.did)
        assert account_event["account"]["active"] is True and account_event["account"]["did"] == account.did
        # the new repo's initial commit (if any) is not a blip, so the collection filter keeps it out
        assert not any(e["kind"] == "commit" and e["commit"]["collection"] != BLIP for e in reader.events)


@requires_network
def test_pds_cursor_replay(atproto_network, jetstream):
    account = atproto_network.create_account("jscursor")
    client = atproto_network.client_for(account)
    with Reader(jetstream.subscribe_url(wanted_dids=[account.did], wanted_collections=[BLIP])) as live:
        time.sleep(0.2)
        uris = [atproto_network.post_blip(client, f"blip {i}")[0] for i in range(3)]
        first = [live.until(_is_commit(account.did, _rkey(uri), "create")) for uri in uris]
    cursor = first[1]["time_us"]
    with Reader(jetstream.subscribe_url(wanted_dids=[account.did], wanted_collections=[BLIP], cursor=cursor)) as replay:
        replay.until(_is_commit(account.did, _rkey(uris[2]), "create"))
        uri4 = atproto_network.post_blip(client, "blip 3")[0]  # live after the replay, on the same socket
        replay.until(_is_commit(account.did, _rkey(uri4), "create"))
        commits = [e for e in replay.events if e["kind"] == "commit"]
        assert [e["commit"]["rkey"] for e in commits] == [_rkey(uris[1]), _rkey(uris[2]), _rkey(uri4)]
        assert commits[0] == first[1] and commits[1] == first[2]  # the same events, time_us included


@requires_network
def test_pds_backlog_from_before_the_standin_started(atproto_network, jetstream):
    # The stand-in reads the firehose from cursor 0, so events from its very start are replayable.
    status = jetstream.status()
    assert status["upstream_connected"] and status["events"] > 0
    with Reader(jetstream.subscribe_url(cursor=0)) as reader:
        first = reader.until(lambda e: True)
        assert first["kind"] in ("commit", "identity", "account")


@requires_network
def test_pds_inject_and_disconnect(atproto_network, jetstream):
    with Reader(jetstream.subscribe_url(wanted_collections=[BLIP])) as reader:
        jetstream.wait_for(lambda s: s["subscribers"] >= 1)
        assert jetstream.inject('{"did": "not-a-did"') >= 1
        while (frame := reader.ws.recv(10)) != '{"did": "not-a-did"':
            json.loads(frame)  # anything else before it is a real event
        assert jetstream.disconnect_all() >= 1
        with pytest.raises(websockets.exceptions.ConnectionClosed):
            reader.ws.recv(10)
    # and the stand-in still serves new connections
    account = atproto_network.create_account("jsafter")
    with Reader(jetstream.subscribe_url(wanted_dids=[account.did], cursor=0)) as reader:
        reader.until(lambda e: e["kind"] == "identity" and e["did"] == account.did)


@requires_network
def test_pds_restart_is_survived(atproto_network, jetstream):
    account = atproto_network.create_account("jsrestart")
    connections = jetstream.status()["upstream_connections"]
    atproto_network.restart()  # same port, same data
    with Reader(jetstream.subscribe_url(wanted_dids=[account.did])) as reader:
        time.sleep(0.2)
        uri, cid = atproto_network.post_blip(atproto_network.client_for(account), "after the restart")
        event = reader.until(_is_commit(account.did, _rkey(uri), "create"))
        assert event["commit"]["cid"] == str(cid)
    assert jetstream.status()["upstream_connections"] > connections
