"""Ingest end to end: `blipflow run` as a real process, fed by the Jetstream stand-in (or the PDS firehose)
of a real local PDS, writing a real DuckDB file, under a real Prefect server."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from blipflow.store.history import Store
from tests.support.ingest_process import (
    PROJECT_ROOT,
    BlipflowProcess,
    wait_for,
    write_config,
)


def stored(store_path: Path, where: str = "true", params: list | None = None) -> dict[str, tuple]:
    """uri → (did, content, deleted, cid, reply_parent_uri) for blips matching `where`."""
    rows = Store(store_path).query_all(
        f"SELECT uri, did, content, deleted, cid, reply_parent_uri FROM blips WHERE {where}", params or []
    )
    return {row[0]: row[1:] for row in rows}


def counters(store_path: Path) -> dict[str, int]:
    return Store(store_path).counters()


@pytest.fixture(scope="module")
def running_ingest(tmp_path_factory, atproto_network, jetstream, prefect_server):
    """One `blipflow run` for the tests that only need it running."""
    folder = tmp_path_factory.mktemp("ingest")
    store_path = folder / "blips.duckdb"
    config = write_config(folder / "config.yaml", network=atproto_network, jetstream_url=jetstream.url, store_path=store_path)
    process = BlipflowProcess(config, ["run"], prefect_server.env(), folder / "ingest.log")
    try:
        process.wait_for_log("ingest connected to")
        yield process, store_path
    finally:
        process.stop()


def test_a_blip_created_on_the_pds_arrives_in_duckdb(running_ingest, atproto_network):
    _, store_path = running_ingest
    alice = atproto_network.create_account("alice")
    uri, cid = atproto_network.post_blip(alice, "hello, agents")
    reply_uri, _ = atproto_network.post_blip(
        alice, "answering myself", reply={"root": {"uri": uri, "cid": cid}, "parent": {"uri": uri, "cid": cid}}
    )
    blips = wait_for(lambda: (found := stored(store_path, "did = ?", [alice.did])) and len(found) == 2 and found,
                     20, "both blips in the store")
    assert blips[uri] == (alice.did, "hello, agents", False, cid, None)
    assert blips[reply_uri][1] == "answering myself"
    assert blips[reply_uri][4] == uri  # the thread reference is kept


def test_updates_and_deletes_are_applied(running_ingest, atproto_network):
    _, store_path = running_ingest
    bob = atproto_network.create_account("bob")
    client = atproto_network.client_for(bob)
    uri, _ = atproto_network.post_blip(client, "first draft")
    rkey = uri.rsplit("/", 1)[1]
    wait_for(lambda: uri in stored(store_path), 20, "the blip")
    client.com.atproto.repo.put_record(
        {"repo": bob.did, "collection": "stream.thought.blip", "rkey": rkey,
         "record": {"$type": "stream.thought.blip", "content": "edited", "createdAt": "2026-01-01T00:00:00.000Z"}}
    )
    wait_for(lambda: stored(store_path).get(uri, (None, None))[1] == "edited", 20, "the edit")
    client.com.atproto.repo.delete_record({"repo": bob.did, "collection": "stream.thought.blip", "rkey": rkey})
    wait_for(lambda: stored(store_path)[uri][2] is True, 20, "the delete")
    assert stored(store_path)[uri][1] is None  # a deleted blip keeps no content


def test_bad_frames_are_counted_and_skipped_and_the_stream_goes_on(running_ingest, atproto_network, jetstream):
    process, store_path = running_ingest
    carol = atproto_network.create_account("carol")
    before, _ = atproto_network.post_blip(carol, "before the garbage")
    wait_for(lambda: before in stored(store_path), 20, "the blip before")
    garbage = [
        "this is not json",
        "[1, 2, 3]",
        '{"did": "did:plc:x", "time_us": "soon", "kind": "commit"}',
        '{"did": "did:plc:x", "time_us": 1, "kind": "mystery"}',
        '{"did": "did:plc:x", "time_us": 1, "kind": "commit", "commit": {"operation": "create", '
        '"collection": "stream.thought.blip", "rkey": "r", "cid": "c", "record": {"content": 42}}}',
    ]
    for frame in garbage:
        assert jetstream.inject(frame) >= 1
    after, _ = atproto_network.post_blip(carol, "after the garbage")
    wait_for(lambda: after in stored(store_path), 20, "the blip after")
    totals = wait_for(
        lambda: (c := counters(store_path)) and sum(v for k, v in c.items() if k.startswith("ingest.bad.")) >= 5 and c,
        20, "bad frames counted",
    )
    for reason in ("not_json", "not_object", "bad_time_us", "unknown_kind", "bad_record"):
        assert totals[f"ingest.bad.{reason}"] >= 1, reason
    log = process.log()
    assert "skipped a bad event, not_json" in log
    assert "Traceback" not in log


def test_a_dropped_connection_resumes_without_loss(running_ingest, atproto_network, jetstream):
    process, store_path = running_ingest
    dave = atproto_network.create_account("dave")
    connects = process.log().count("ingest connected to")
    first, _ = atproto_network.post_blip(dave, "one")
    wait_for(lambda: first in stored(store_path), 20, "the first blip")
    assert jetstream.disconnect_all() >= 1
    # posted while the ingest may still be reconnecting: the cursor replay brings it in
    second, _ = atproto_network.post_blip(dave, "two")
    process.wait_for_log("ingest connected to", count=connects + 1)
    third, _ = atproto_network.post_blip(dave, "three")
    blips = wait_for(lambda: (found := stored(store_path, "did = ?", [dave.did])) and len(found) == 3 and found,
                     20, "all three blips")
    assert {content for _, content, *_ in blips.values()} == {"one", "two", "three"}


def test_another_process_reads_and_writes_the_store_while_ingest_runs(running_ingest, atproto_network):
    """DuckDB lets one process open the file at a time; short-lived connections make them take turns."""
    _, store_path = running_ingest
    erin = atproto_network.create_account("erin")
    script = (
        "import sys\n"
        "from blipflow.store.history import Store\n"
        "store = Store(sys.argv[1], lock_timeout=30)\n"
        "for i in range(40):\n"
        "    store.add_counters({'test.concurrent_writes': 1})\n"
        "    store.blip_count()\n"
        "print('ok')\n"
    )
    other = subprocess.Popen([sys.executable, "-c", script, str(store_path)], cwd=PROJECT_ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    posted = [atproto_network.post_blip(erin, f"while sharing {i}")[0] for i in range(15)]
    out, err = other.communicate(timeout=120)
    assert other.returncode == 0, err
    assert out.strip() == "ok"
    wait_for(lambda: set(posted) <= set(stored(store_path, "did = ?", [erin.did])), 20, "every blip posted meanwhile")
    assert counters(store_path)["test.concurrent_writes"] == 40


def test_history_and_sigterm_flush(tmp_path, atproto_network, jetstream, prefect_server):
    """SIGTERM (how a Prefect worker cancels a run) stops ingest after storing everything it received."""
    store_path = tmp_path / "blips.duckdb"
    config = write_config(tmp_path / "config.yaml", network=atproto_network, jetstream_url=jetstream.url,
                          store_path=store_path, ingest={"flush_interval": 30})
    frank = atproto_network.create_account("frank")
    process = BlipflowProcess(config, ["run"], prefect_server.env(), tmp_path / "ingest.log")
    try:
        process.wait_for_log("ingest connected to")
        uri, _ = atproto_network.post_blip(frank, "held in memory until the end")
        # with a 30 s flush interval the blip sits in memory; SIGTERM must write it out
        time.sleep(1.5)
        assert uri not in stored(store_path)
        process.signal(signal.SIGTERM)
        process.wait(60)
        assert stored(store_path)[uri][1] == "held in memory until the end"
        assert "ingest stopped: 1 events received, 1 stored, 0 bad" in process.log()
    finally:
        process.stop()
    history = subprocess.run([sys.executable, "-m", "cli", "-c", str(config), "history", "--dids", frank.did],
                             cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert history.returncode == 0, history.stderr
    assert f"author: {frank.handle}" in history.stdout
    assert "held in memory until the end" in history.stdout


def test_killing_ingest_at_any_moment_loses_and_duplicates_nothing(tmp_path, atproto_network, jetstream, prefect_server):
    store_path = tmp_path / "blips.duckdb"
    config = write_config(tmp_path / "config.yaml", network=atproto_network, jetstream_url=jetstream.url,
                          store_path=store_path)
    grace = atproto_network.create_account("grace")
    posted: list[str] = []
    stop_posting = threading.Event()

    def keep_posting() -> None:
        client = atproto_network.client_for(grace)
        while not stop_posting.is_set():
            posted.append(atproto_network.post_blip(client, f"blip {len(posted)}")[0])
            time.sleep(0.05)

    poster = threading.Thread(target=keep_posting)
    first = BlipflowProcess(config, ["run"], prefect_server.env(), tmp_path / "first.log")
    second = None
    try:
        first.wait_for_log("ingest connected to")
        poster.start()
        wait_for(lambda: len(stored(store_path, "did = ?", [grace.did])) >= 5, 30, "some blips stored")
        first.process.send_signal(signal.SIGKILL)  # no chance to flush
        first.wait(10)
        time.sleep(1.0)  # blips keep coming while nothing listens
        second = BlipflowProcess(config, ["run"], prefect_server.env(), tmp_path / "second.log")
        second.wait_for_log("ingest connected to")
        time.sleep(1.0)
        stop_posting.set()
        poster.join(30)
        blips = wait_for(
            lambda: (found := stored(store_path, "did = ?", [grace.did])) and len(found) >= len(posted) and found,
            30, "every posted blip",
        )
        assert set(blips) == set(posted)
        rows = Store(store_path).query_all("SELECT count(*), count(DISTINCT uri) FROM blips WHERE did = ?", [grace.did])
        assert rows[0] == (len(posted), len(posted))
        assert "ingest starting at the live end" not in second.log()  # it resumed from the cursor
    finally:
        stop_posting.set()
        first.stop()
        if second is not None:
            second.stop()


def test_firehose_source_reads_the_pds_directly(tmp_path, atproto_network, jetstream, prefect_server):
    store_path = tmp_path / "blips.duckdb"
    config = write_config(tmp_path / "config.yaml", network=atproto_network, jetstream_url=jetstream.url,
                          store_path=store_path)
    heidi = atproto_network.create_account("heidi")
    earlier, _ = atproto_network.post_blip(heidi, "before ingest started")
    process = BlipflowProcess(config, ["run", "--source", "firehose"], prefect_server.env(), tmp_path / "ingest.log")
    try:
        process.wait_for_log("ingest connected to")
        later, cid = atproto_network.post_blip(heidi, "while ingest runs")
        blips = wait_for(lambda: (found := stored(store_path, "did = ?", [heidi.did])) and len(found) == 2 and found,
                         30, "both blips")
        assert blips[earlier][1] == "before ingest started"  # the firehose replays the PDS's history
        assert blips[later] == (heidi.did, "while ingest runs", False, cid, None)
        handles = Store(store_path).query_all("SELECT handle FROM identities WHERE did = ?", [heidi.did])
        assert handles == [(heidi.handle,)]  # from the #identity event
    finally:
        process.stop()


def test_an_unreachable_jetstream_is_one_clear_line(tmp_path, atproto_network, prefect_server):
    from tests.support.prefect_server import free_port

    dead = f"ws://127.0.0.1:{free_port()}"
    config = write_config(tmp_path / "config.yaml", network=atproto_network, jetstream_url=dead,
                          store_path=tmp_path / "blips.duckdb",
                          jetstream={"max_reconnect_attempts": 2, "reconnect_delay": 0.1})
    result = subprocess.run([sys.executable, "-m", "cli", "-c", str(config), "run"], cwd=PROJECT_ROOT,
                            env=prefect_server.env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"blipflow: jetstream: no instance could be read after 2 attempts (tried {dead})"
    assert "Traceback" not in result.stderr
