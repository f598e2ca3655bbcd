"""The DuckDB store, on real files: columns, idempotent upserts, tombstones, cursors, counters,
identities, reading, and sharing the file with another process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from blipflow.ingest.jetstream import parse_event
from blipflow.ingest.simulator import simulate_frames
from blipflow.model.blip import BLIP_COLLECTION, blip_row
from blipflow.model.events import BadFrame, CommitEvent
from blipflow.store.history import Identity, IngestBatch, Store, StoreBusy, StoreError
from tests.support.frames import ALICE, BOB, T0, batch, blips, commit_frame, uri

EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)  # written since then: every blip


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "s.duckdb", lock_timeout=5)


def row(store: Store, blip_uri: str) -> dict[str, Any] | None:
    with store.connect() as db:
        cursor = db.execute("SELECT * FROM blips WHERE uri = ?", [blip_uri])
        names = [d[0] for d in cursor.description]
        found = cursor.fetchall()
    assert len(found) <= 1
    return dict(zip(names, found[0])) if found else None


def blip_total(store: Store) -> int:
    return store.query_all("SELECT count(*) FROM blips")[0][0]


# -- columns ---------------------------------------------------------------------------------------


def test_stored_columns(store: Store) -> None:
    reply = {"root": {"uri": uri(BOB, "root1"), "cid": "bafyroot"},
             "parent": {"uri": uri(BOB, "parent1"), "cid": "bafyparent"}}
    raw = commit_frame(ALICE, "k1", T0, content="hi there ✨", created_at="2025-10-09T08:53:20.123Z", reply=reply)
    store.apply(batch(raw))

    stored = row(store, uri(ALICE, "k1"))
    assert stored is not None
    assert (stored["did"], stored["collection"], stored["rkey"]) == (ALICE, BLIP_COLLECTION, "k1")
    assert (stored["cid"], stored["rev"], stored["time_us"], stored["operation"]) == ("bafyreicid", f"rev{T0}", T0,
                                                                                       "create")
    assert stored["deleted"] is False
    assert stored["content"] == "hi there ✨"
    assert stored["created_at"] == datetime(2025, 10, 9, 8, 53, 20, 123000, tzinfo=timezone.utc)
    assert (stored["reply_root_uri"], stored["reply_root_cid"]) == (uri(BOB, "root1"), "bafyroot")
    assert (stored["reply_parent_uri"], stored["reply_parent_cid"]) == (uri(BOB, "parent1"), "bafyparent")
    sent = orjson.loads(raw)["commit"]["record"]
    assert json.loads(stored["record"]) == {key: sent[key] for key in sent if key != "content"}  # the text once
    assert [orjson.loads(op.record) for op in store.blips_written_since(EARLIEST, None, 10)] == [sent]


def test_records_read_back_as_sent_whether_stored_now_or_by_an_earlier_version(store: Store) -> None:
    event = orjson.loads(commit_frame(ALICE, "k1", T0, content='say "hi" \\ ✨\n'))
    event["commit"]["record"]["facets"] = [{"index": {"byteStart": 0, "byteEnd": 3},
                                            "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": "hi"}]}]
    other = orjson.loads(commit_frame(ALICE, "k2", T0 + 1))  # another collection's record, content not text
    other["commit"].update(collection="app.bsky.feed.like", record={"$type": "app.bsky.feed.like", "content": [42]})
    store.apply(batch(orjson.dumps(event), commit_frame(BOB, "k3", T0 + 2), commit_frame(BOB, "k4", T0 + 3)))
    store.apply(IngestBatch(blips=blips(orjson.dumps(other)) | blips(commit_frame(BOB, "k4", T0 + 4, "delete"))))
    with store.connect() as db:  # as the store kept records before it kept their text once: whole
        whole = {"$type": BLIP_COLLECTION, "content": "earlier", "createdAt": "2025-10-09T08:53:20Z"}
        db.execute("UPDATE blips SET record = ? WHERE uri = ?", [orjson.dumps(whole).decode(), uri(BOB, "k3")])
        db.execute("UPDATE blips SET content = 'earlier' WHERE uri = ?", [uri(BOB, "k3")])

    read = {op.uri: op.record and orjson.loads(op.record) for op in store.blips_written_since(EARLIEST, None, 10)}
    assert read == {
        uri(ALICE, "k1"): event["commit"]["record"],
        uri(BOB, "k3"): {"$type": BLIP_COLLECTION, "content": "earlier", "createdAt": "2025-10-09T08:53:20Z"},
        uri(BOB, "k4"): None,  # deleted
    }
    kept = row(store, f"at://{ALICE}/app.bsky.feed.like/k2")
    assert kept is not None and json.loads(kept["record"]) == other["commit"]["record"]


def test_blip_without_reply_has_null_reply_columns(store: Store) -> None:
    store.apply(batch(commit_frame(ALICE, "k1", T0)))
    stored = row(store, uri(ALICE, "k1"))
    assert stored["reply_root_uri"] is None and stored["reply_parent_uri"] is None


def test_malformed_created_at_is_null_but_blip_is_kept(store: Store) -> None:
    store.apply(batch(commit_frame(ALICE, "k1", T0, created_at="last tuesday"),
                      commit_frame(ALICE, "k2", T0 + 1, created_at=None)))
    for rkey in ("k1", "k2"):
        stored = row(store, uri(ALICE, rkey))
        assert stored["created_at"] is None
        assert stored["content"] == "hello" and stored["deleted"] is False
    assert [b.created_at for b in store.latest_blips()] == [None, None]


def test_blip_row_refuses_unusable_records() -> None:
    big = parse_event(commit_frame(ALICE, "k1", T0, content="é" * 600))  # 1200 bytes
    with pytest.raises(BadFrame) as caught:
        blip_row(big, max_content_bytes=1000)
    assert caught.value.reason == "oversized"
    assert blip_row(big, max_content_bytes=1200)[0] == uri(ALICE, "k1")
    with pytest.raises(BadFrame) as caught:
        blip_row(parse_event(commit_frame(ALICE, "k1", T0, content=42)), max_content_bytes=1000)
    assert caught.value.reason == "bad_record"


# -- upsert order ----------------------------------------------------------------------------------


def test_same_batch_twice_stores_one_unchanged_row(store: Store) -> None:
    one = batch(commit_frame(ALICE, "k1", T0), commit_frame(BOB, "k1", T0 + 5))
    store.apply(one)
    before = store.query_all("SELECT * FROM blips ORDER BY uri")
    store.apply(one)
    assert store.query_all("SELECT * FROM blips ORDER BY uri") == before
    assert blip_total(store) == 2


def test_a_replayed_create_among_new_ones_writes_the_batch_once(store: Store) -> None:
    """Creates go in as plain inserts; one the store already holds sends the whole batch through the upsert,
    and what the first attempt wrote (blips, counters, cursor) is rolled back, not counted twice."""
    store.apply(batch(commit_frame(ALICE, "k1", T0, content="first")))
    store.apply(batch(commit_frame(ALICE, "k1", T0, content="first"), commit_frame(BOB, "k2", T0 + 1),
                      commit_frame(ALICE, "k3", T0 + 2, operation="update", content="edited"),
                      counters={"ingest.events": 3}, cursor_key="jetstream", cursor=T0 + 2))
    assert store.counters() == {"ingest.events": 3}
    assert store.cursor("jetstream") == T0 + 2
    assert store.query_all("SELECT uri, content FROM blips ORDER BY uri") == [
        (uri(ALICE, "k1"), "first"), (uri(ALICE, "k3"), "edited"), (uri(BOB, "k2"), "hello")]


def test_later_update_wins_and_older_replay_does_not(store: Store) -> None:
    create = commit_frame(ALICE, "k1", T0, content="first", cid="bafy1")
    update = commit_frame(ALICE, "k1", T0 + 100, operation="update", content="second", cid="bafy2",
                          created_at="2025-10-10T00:00:00Z")
    store.apply(batch(create))
    store.apply(batch(update))
    stored = row(store, uri(ALICE, "k1"))
    assert (stored["content"], stored["cid"], stored["operation"], stored["time_us"]) == ("second", "bafy2", "update",
                                                                                          T0 + 100)
    assert stored["created_at"] == datetime(2025, 10, 10, tzinfo=timezone.utc)
    seq = stored["seq"]

    store.apply(batch(create))  # a replay after reconnecting with a rewound cursor
    stored = row(store, uri(ALICE, "k1"))
    assert (stored["content"], stored["time_us"], stored["seq"]) == ("second", T0 + 100, seq)
    assert blip_total(store) == 1


def test_delete_leaves_a_tombstone_that_replays_do_not_resurrect(store: Store) -> None:
    create = commit_frame(ALICE, "k1", T0, content="regret")
    store.apply(batch(create))
    store.apply(batch(commit_frame(ALICE, "k1", T0 + 50, operation="delete")))
    stored = row(store, uri(ALICE, "k1"))
    assert stored["deleted"] is True and stored["operation"] == "delete"
    assert stored["content"] is None and stored["record"] is None

    store.apply(batch(create))
    stored = row(store, uri(ALICE, "k1"))
    assert stored["deleted"] is True and stored["content"] is None
    assert store.blip_count() == 0
    assert store.latest_blips() == []


def test_delete_seen_before_its_create(store: Store) -> None:
    store.apply(batch(commit_frame(ALICE, "k1", T0 + 50, operation="delete")))
    store.apply(batch(commit_frame(ALICE, "k1", T0, content="too late")))
    stored = row(store, uri(ALICE, "k1"))
    assert stored["deleted"] is True and stored["content"] is None


def test_simulated_stream_matches_a_replay_in_other_batches(tmp_path: Path) -> None:
    frames = simulate_frames(2000, seed=11, authors=40)
    expected: dict[str, str | None] = {}  # uri -> content, None once deleted
    for raw in frames:
        event = parse_event(raw)
        if isinstance(event, CommitEvent):
            expected[event.uri] = None if event.operation == "delete" else event.record["content"]

    def ingest(store: Store, size: int) -> None:
        for start in range(0, len(frames), size):
            rows = {}
            for raw in frames[start:start + size]:
                event = parse_event(raw)
                if isinstance(event, CommitEvent):
                    rows[event.uri] = blip_row(event, max_content_bytes=30_000)  # the later operation wins
            store.apply(IngestBatch(blips=rows))

    first, second = Store(tmp_path / "a.duckdb"), Store(tmp_path / "b.duckdb")
    ingest(first, 700)
    ingest(second, 333)
    ingest(second, 2000)  # and the whole stream again, replayed
    query = "SELECT uri, deleted, content FROM blips ORDER BY uri"
    stored = first.query_all(query)
    assert stored == second.query_all(query)
    assert {u: c for u, _, c in stored} == expected
    assert all(deleted == (content is None) for _, deleted, content in stored)
    assert first.blip_count() == sum(1 for c in expected.values() if c is not None)
    assert any(c is None for c in expected.values())  # the stream did exercise deletes


# -- cursor and counters ---------------------------------------------------------------------------


def test_cursor_only_moves_forward(store: Store) -> None:
    assert store.cursor("jetstream") is None
    store.apply(IngestBatch(cursor_key="jetstream", cursor=T0 + 100))
    store.apply(IngestBatch(cursor_key="jetstream", cursor=T0 + 50))
    assert store.cursor("jetstream") == T0 + 100
    store.apply(IngestBatch(cursor_key="jetstream", cursor=T0 + 200))
    store.apply(IngestBatch(cursor_key="firehose", cursor=7))
    assert store.cursor("jetstream") == T0 + 200
    assert store.cursor("firehose") == 7


def test_cursor_and_blips_are_written_together(store: Store) -> None:
    store.apply(batch(commit_frame(ALICE, "k1", T0), cursor_key="jetstream", cursor=T0))
    assert store.cursor("jetstream") == T0 and blip_total(store) == 1


def test_counters_add_up(store: Store) -> None:
    store.apply(IngestBatch(counters={"ingest.events": 3, "ingest.bad.not_json": 1}))
    store.apply(IngestBatch(counters={"ingest.events": 4}))
    store.add_counters({"ingest.bad.not_json": 2, "ingest.connects": 1})
    assert store.counters() == {"ingest.bad.not_json": 3, "ingest.connects": 1, "ingest.events": 7}


# -- identities ------------------------------------------------------------------------------------


def test_identities_from_batches_and_resolution(store: Store) -> None:
    store.apply(IngestBatch(handles={ALICE: "alice.test"}, accounts={BOB: (False, "takendown")}))
    found = store.identities([ALICE, BOB, "did:plc:nobody"])
    assert set(found) == {ALICE, BOB}
    assert found[ALICE].handle == "alice.test"
    assert found[BOB].handle is None
    assert store.query_all("SELECT active, status FROM identities WHERE did = ?", [BOB]) == [(False, "takendown")]

    fetched = datetime(2025, 1, 1, tzinfo=timezone.utc)
    store.save_identities([
        Identity(ALICE, "alice.test", "Alice", "http://127.0.0.1:2583", fetched),
        Identity(BOB, "bob.test", None, None, None),
    ])
    # a later handle change from the stream keeps the resolved display name; account state is kept too
    store.apply(IngestBatch(handles={ALICE: "alice2.test"}, accounts={ALICE: (True, None)}))
    found = store.identities([ALICE, BOB])
    assert (found[ALICE].handle, found[ALICE].display_name, found[ALICE].pds) == ("alice2.test", "Alice",
                                                                                  "http://127.0.0.1:2583")
    assert found[ALICE].fetched_at == fetched
    assert found[BOB].handle == "bob.test" and found[BOB].fetched_at is not None  # stamped when saved
    assert store.query_all("SELECT did, active FROM identities ORDER BY did") == [(ALICE, True), (BOB, False)]


# -- reading ---------------------------------------------------------------------------------------


def test_latest_blips(store: Store) -> None:
    frames = [commit_frame(ALICE if i % 2 else BOB, f"k{i}", T0 + i * 10, content=f"blip {i}") for i in range(6)]
    store.apply(batch(*reversed(frames)))  # arrival order does not decide reading order; time_us does
    store.apply(batch(commit_frame(BOB, "k4", T0 + 1000, operation="delete")))
    store.apply(IngestBatch(handles={ALICE: "alice.test"}))

    assert [b.content for b in store.latest_blips()] == ["blip 0", "blip 1", "blip 2", "blip 3", "blip 5"]
    assert [b.content for b in store.latest_blips(limit=3)] == ["blip 2", "blip 3", "blip 5"]
    assert [b.content for b in store.latest_blips(dids=[BOB])] == ["blip 0", "blip 2"]
    assert [b.content for b in store.latest_blips(limit=1, dids=[ALICE])] == ["blip 5"]
    newest = store.latest_blips(limit=1)[0]
    assert (newest.uri, newest.did, newest.handle, newest.author, newest.time_us) == (
        uri(ALICE, "k5"), ALICE, "alice.test", "alice.test", T0 + 50)
    assert store.latest_blips(limit=1, dids=[BOB])[0].author == BOB  # no handle known yet
    assert store.blip_count() == 5


def test_latest_blips_carries_reply_parent(store: Store) -> None:
    reply = {"root": {"uri": uri(BOB, "r"), "cid": "c"}, "parent": {"uri": uri(BOB, "p"), "cid": "c"}}
    store.apply(batch(commit_frame(ALICE, "k1", T0, reply=reply)))
    assert store.latest_blips()[0].reply_parent_uri == uri(BOB, "p")


# -- the file --------------------------------------------------------------------------------------


def test_missing_folder_is_created(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "s.duckdb"
    store = Store(path)
    store.apply(batch(commit_frame(ALICE, "k1", T0)))
    assert path.is_file()
    assert Store(path).blip_count() == 1  # and a fresh Store on the same file reads it back


def test_directory_path_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    with pytest.raises(StoreError) as caught:
        Store(tmp_path / "adir", lock_timeout=1).blip_count()
    assert not isinstance(caught.value, StoreBusy)
    assert str(tmp_path / "adir") in str(caught.value)


HOLD_SCRIPT = """
import sys, time, duckdb
db = duckdb.connect(sys.argv[1])
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
db.close()
"""


def hold(path: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process with the DuckDB file open, returned once it has the lock."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT, str(path), str(seconds)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    return holder


@pytest.mark.process
def test_connect_waits_for_another_process(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    holder = hold(path, 1.5)
    try:
        started = time.monotonic()
        with Store(path, lock_timeout=20).connect() as db:
            waited = time.monotonic() - started
            assert db.execute("SELECT count(*) FROM blips").fetchone() == (0,)
        assert waited >= 1.0
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.process
def test_busy_store_names_file_and_holder(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    holder = hold(path, 1.5)
    try:
        started = time.monotonic()
        with pytest.raises(StoreBusy) as caught:
            with Store(path, lock_timeout=0.5).connect():
                pass
        assert 0.5 <= time.monotonic() - started < 1.4
        message = str(caught.value)
        assert str(path) in message
        assert f"process {holder.pid}" in message
    finally:
        holder.kill()
        holder.wait()


HELD_SCRIPT = """
import sys, time
from blipflow.store.history import IngestBatch, Store
from tests.support.frames import ALICE, T0, batch, commit_frame
store = Store(sys.argv[1])
polls = sys.argv[2] == "polls"
with store.held():
    store.apply(batch(commit_frame(ALICE, "k1", T0, content="held")))
    print("holding", flush=True)
    if polls:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            store.let_go_if_awaited()
            time.sleep(0.01)
    else:
        sys.stdin.readline()
    store.apply(batch(commit_frame(ALICE, "k2", T0 + 1, content="after")))
print("done", flush=True)
"""


def held_by_another_process(path: Path, polls: bool) -> subprocess.Popen[str]:
    """Another process that keeps the store file open between its writes (as the ingester does), returned once
    it wrote one batch; with `polls`, it looks every 10 ms whether a process waits for the file."""
    holder = subprocess.Popen([sys.executable, "-c", HELD_SCRIPT, str(path), "polls" if polls else "still"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[2])
    assert holder.stdout.readline().strip() == "holding"
    return holder


@pytest.mark.process
def test_a_held_store_stays_open_between_its_units_of_work(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    holder = held_by_another_process(path, polls=False)
    try:
        with pytest.raises(StoreBusy):
            Store(path, lock_timeout=0.5).blip_count()
        holder.stdin.write("stop\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "done"  # closed once no longer held
        assert Store(path, lock_timeout=5).blip_count() == 2
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.process
def test_a_held_store_lets_go_as_soon_as_another_process_waits(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    holder = held_by_another_process(path, polls=True)
    try:
        started = time.monotonic()
        assert Store(path, lock_timeout=10).blip_count() == 1
        assert time.monotonic() - started < 5
    finally:
        holder.kill()
        holder.wait()


def test_saving_no_identities_is_nothing_to_do(store: Store) -> None:
    """Maintenance hands over what dispatch resolved, which on a new deployment is nothing."""
    store.save_identities([], only_newer=True)
    assert store.identities(["did:plc:anyone"]) == {}
