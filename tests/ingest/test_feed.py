"""Ingest feeds the control plane from what it stored: each batch once the history store has it, and on a
restart whatever was stored but not yet fed — killed between the two stores, nothing is lost or doubled.
On SQLite and a real PostgreSQL."""

from __future__ import annotations

import random
import signal
import threading
import time
from datetime import datetime, timezone

import orjson
from sqlalchemy import text

from blipflow.control.blips import Blips
from blipflow.control.engine import ControlPlane
from blipflow.ingest.feed import Feed
from blipflow.store.history import IngestBatch, Store
from tests.support.fed_stores import control_rows
from tests.support.frames import ALICE, BOB, T0, blips, commit_frame, uri
from tests.support.ingest_process import BlipflowProcess, wait_for, write_config


def with_facets(frame: bytes, *features: dict) -> bytes:
    event = orjson.loads(frame)
    event["commit"]["record"]["facets"] = [{"index": {"byteStart": 0, "byteEnd": 4}, "features": list(features)}]
    return orjson.dumps(event)


def test_a_batch_is_fed_with_what_dispatch_needs_of_each_blip(tmp_path, control: ControlPlane):
    store = Store(tmp_path / "s.duckdb")
    parent = {"uri": uri(BOB, "k0"), "cid": "bafyparent"}
    answer = with_facets(commit_frame(ALICE, "k1", T0 + 1, content="@bob hi", reply={"root": parent, "parent": parent}),
                         {"$type": "app.bsky.richtext.facet#mention", "did": BOB},
                         {"$type": "app.bsky.richtext.facet#tag", "tag": "#hi"})
    batch = IngestBatch(blips=blips(commit_frame(BOB, "k0", T0, content="hello"), answer))
    began_at = datetime.now(timezone.utc)
    store.apply(batch)
    Feed(control, store).stored(batch.blips.values(), began_at)

    facts = Blips(control).facts(uri(ALICE, "k1"))
    assert (facts.did, facts.content, facts.parent_uri, facts.root_uri) == (ALICE, "@bob hi", parent["uri"], parent["uri"])
    assert (facts.mentions, facts.tags, facts.stored_at) == ([BOB], ["hi"], began_at)
    assert Feed(control, store).position() == began_at


def test_what_was_stored_but_not_fed_is_fed_on_the_next_start_once(tmp_path, control: ControlPlane):
    store = Store(tmp_path / "s.duckdb")
    fed_first = IngestBatch(blips=blips(commit_frame(ALICE, "k1", T0, content="fed")))
    began_at = datetime.now(timezone.utc)
    store.apply(fed_first)
    Feed(control, store).stored(fed_first.blips.values(), began_at)
    # the process dies after the store took these, before they were fed
    store.apply(IngestBatch(blips=blips(commit_frame(ALICE, "k2", T0 + 1, content="not fed"),
                                        commit_frame(ALICE, "k1", T0 + 2, content="edited, not fed"))))
    store.apply(IngestBatch(blips=blips(commit_frame(ALICE, "k3", T0 + 3, operation="delete"))))

    restarted = Feed(control, store)
    assert restarted.catch_up() >= 3
    assert restarted.catch_up() >= 0  # again: changes nothing
    assert sorted(control_rows(control, "SELECT uri, content, deleted FROM blips")) == [
        (uri(ALICE, "k1"), "edited, not fed", False), (uri(ALICE, "k2"), "not fed", False),
        (uri(ALICE, "k3"), None, True)]


def test_a_feed_the_control_plane_refused_is_caught_up_with_the_next_batch(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    url = f"sqlite:///{tmp_path / 'control.sqlite'}"
    feed, other = Feed(ControlPlane(url, busy_timeout=0.5), store), ControlPlane(url)
    first = IngestBatch(blips=blips(commit_frame(ALICE, "k1", T0, content="while the plane was busy")))
    store.apply(first)
    with other.writing() as session:  # another process keeps the plane's write lock past the feed's patience
        session.execute(text("DELETE FROM feed_positions WHERE name = 'nobody'"))
        feed.stored(first.blips.values(), datetime.now(timezone.utc))
    assert feed.behind_since is not None and control_rows(other, "SELECT count(*) FROM blips") == [(0,)]
    second = IngestBatch(blips=blips(commit_frame(ALICE, "k2", T0 + 1, content="after")))
    store.apply(second)
    feed.stored(second.blips.values(), datetime.now(timezone.utc))
    assert feed.behind_since is None
    assert sorted(control_rows(other, "SELECT content FROM blips")) == [("after",), ("while the plane was busy",)]


def test_killing_ingest_at_random_moments_loses_and_doubles_nothing_in_the_control_plane(
        tmp_path, control_url, atproto_network, jetstream, prefect_server):
    store_path = tmp_path / "blips.duckdb"
    config = write_config(tmp_path / "config.yaml", network=atproto_network, jetstream_url=jetstream.url,
                          store_path=store_path, control={"url": control_url})
    author = atproto_network.create_account(f"feeder{random.randrange(10**6)}")
    posted: list[str] = []
    stop_posting = threading.Event()

    def keep_posting() -> None:
        client = atproto_network.client_for(author)
        while not stop_posting.is_set():
            posted.append(atproto_network.post_blip(client, f"blip {len(posted)}")[0])
            time.sleep(0.02)

    plane = ControlPlane(control_url)

    def fed() -> list[tuple]:
        return control_rows(plane, "SELECT uri FROM blips WHERE did = :did", did=author.did)

    poster = threading.Thread(target=keep_posting)
    processes = []
    try:
        for run in range(5):
            process = BlipflowProcess(config, ["run"], prefect_server.env(), tmp_path / f"ingest-{run}.log")
            processes.append(process)
            process.wait_for_log("ingest connected to")
            if run == 0:
                poster.start()
                wait_for(lambda: len(fed()) >= 3, 30, "some blips fed")
            time.sleep(random.uniform(0.1, 1.5))  # a random moment: often between the two stores
            process.signal(signal.SIGKILL)
            process.wait(10)
        last = BlipflowProcess(config, ["run"], prefect_server.env(), tmp_path / "ingest-last.log")
        processes.append(last)
        last.wait_for_log("ingest connected to")
        time.sleep(0.5)
        stop_posting.set()
        poster.join(30)
        wait_for(lambda: len(fed()) >= len(posted), 60, "every posted blip fed")
    finally:
        stop_posting.set()
        for process in processes:
            process.stop()
        plane.dispose()
    in_history = Store(store_path).query_all("SELECT uri FROM blips WHERE did = ?", [author.did])
    assert sorted(uri for (uri,) in fed()) == sorted(uri for (uri,) in in_history) == sorted(posted)
    assert control_rows(ControlPlane(control_url), "SELECT count(*), count(DISTINCT uri) FROM blips WHERE did = :did",
                        did=author.did) == [(len(posted), len(posted))]
