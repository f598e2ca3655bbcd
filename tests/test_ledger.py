"""The delivery ledger in the store: every (agent, blip) decided once, windows and their outcomes, the outbox."""

from datetime import datetime, timedelta, timezone

import duckdb
import pytest

from blipflow.coordination.policy import OWN_BLIP
from blipflow.store.history import IngestBatch, Store
from tests.support.frames import T0, blips, commit_frame, uri

HUMAN = "did:plc:human0000000000000000000"
AGENT_A = "did:plc:agenta000000000000000000"
AGENT_B = "did:plc:agentb000000000000000000"


def reply_to(parent_did: str, parent_rkey: str) -> dict:
    ref = {"uri": uri(parent_did, parent_rkey), "cid": "bafyparent"}
    return {"root": ref, "parent": ref}


@pytest.fixture
def store(tmp_path) -> Store:
    store = Store(tmp_path / "s.duckdb")
    # a person, then agents answering each other: h1 ← a1 ← b1 ← a2
    frames = [
        commit_frame(HUMAN, "h1", T0, content="hello agents"),
        commit_frame(AGENT_A, "a1", T0 + 1, content="hi", reply=reply_to(HUMAN, "h1")),
        commit_frame(AGENT_B, "b1", T0 + 2, content="hi A", reply=reply_to(AGENT_A, "a1")),
        commit_frame(AGENT_A, "a2", T0 + 3, content="hi B", reply=reply_to(AGENT_B, "b1")),
        commit_frame(HUMAN, "h2", T0 + 4, content="gone", ),
        commit_frame(HUMAN, "h2", T0 + 5, operation="delete"),
    ]
    store.apply(IngestBatch(blips=blips(*frames[:5])))
    store.apply(IngestBatch(blips=blips(frames[5])))
    return store


def test_undelivered_blips_come_oldest_first_with_their_agent_chain_depth(store):
    found = store.undelivered("scout", [AGENT_A, AGENT_B], limit=100)
    assert [(c.uri.rsplit("/", 1)[1], c.chain_depth) for c in found] == [("h1", 0), ("a1", 1), ("b1", 2), ("a2", 3)]
    assert all(c.arrived.tzinfo is not None for c in found)  # the deleted h2 is not offered
    assert [c.uri for c in store.undelivered("scout", [AGENT_A, AGENT_B], limit=2)] == [uri(HUMAN, "h1"),
                                                                                      uri(AGENT_A, "a1")]


def test_decided_blips_are_not_offered_again_and_cannot_be_sent_twice(store):
    window_id = store.decide("scout", {uri(AGENT_A, "a1"): OWN_BLIP}, [uri(HUMAN, "h1")])
    assert window_id is not None
    assert [c.uri for c in store.undelivered("scout", [], limit=100)] == [uri(AGENT_B, "b1"), uri(AGENT_A, "a2")]
    assert [c.uri for c in store.undelivered("other", [], limit=100)][0] == uri(HUMAN, "h1")  # per agent
    with pytest.raises(duckdb.ConstraintException):
        store.decide("scout", {}, [uri(HUMAN, "h1")])
    assert store.windows_in(["pending"]) == [(window_id, "scout", "pending", 1, None, None, None)]


def test_a_window_carries_its_blips_and_its_outcome(store):
    window_id = store.decide("scout", {}, [uri(HUMAN, "h1"), uri(AGENT_A, "a1")])
    assert [b.content for b in store.window_blips(window_id)] == ["hello agents", "hi"]
    store.mark_sending(window_id)
    [(_, _, state, size, sent_at, _, _)] = store.windows_in(["sending"], agent="scout")
    assert (state, size) == ("sending", 2) and sent_at is not None
    store.finish_window(window_id, "scout", ["first thought", "second thought"], letta_ms=12.5)
    assert [row[:4] for row in store.windows_in(["answered"])] == [(window_id, "scout", "answered", 2)]
    replies = store.query_all("SELECT id, position, content, state FROM replies ORDER BY position")
    assert replies == [(f"{window_id}:0", 0, "first thought", "queued"), (f"{window_id}:1", 1, "second thought", "queued")]
    since = datetime.now(timezone.utc) - timedelta(minutes=1)
    assert store.replies_since("scout", since) == 2
    assert store.replies_since("other", since) == 0


def test_silence_and_failure_are_recorded(store):
    quiet = store.decide("scout", {}, [uri(HUMAN, "h1")])
    store.finish_window(quiet, "scout", [], letta_ms=3.0)
    broken = store.decide("scout", {}, [uri(AGENT_A, "a1")])
    store.fail_window(broken, "letta: 503 Service Unavailable", settled=True)
    states = {row[0]: row[2] for row in store.windows_in(["silent", "failed"])}
    assert states == {quiet: "silent", broken: "failed"}
    assert store.query_all("SELECT error FROM windows WHERE id = ?", [broken]) == [("letta: 503 Service Unavailable",)]
