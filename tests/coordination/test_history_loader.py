"""The replay's history read from a real DuckDB store, as ingest wrote it."""

import orjson

from blipflow.coordination.history_loader import recorded_history
from blipflow.coordination.participants import AuthorKind, Participant, Roster
from blipflow.coordination.replay import replay
from blipflow.model.blip import BLIP_COLLECTION
from blipflow.model.coordination_policy import CoordinationPolicy
from blipflow.store.history import IngestBatch, Store
from tests.support.frames import T0, blips, uri

PERSON, ADA, OUTSIDER = "did:plc:person", "did:plc:ada", "did:plc:outsider"
ROSTER = Roster.of([Participant("ada", ADA, "ada.test", frozenset({"postgres"}))], other_agent_dids=[OUTSIDER])


def frame(did: str, rkey: str, time_us: int, record: dict) -> bytes:
    return orjson.dumps({"did": did, "time_us": time_us, "kind": "commit", "commit": {
        "rev": f"r{time_us}", "operation": "create", "collection": BLIP_COLLECTION, "rkey": rkey, "cid": "bafyc",
        "record": {"$type": BLIP_COLLECTION, "createdAt": "2025-10-09T08:53:20.123Z", **record}}})


def reply_to(did: str, rkey: str) -> dict:
    ref = {"uri": uri(did, rkey), "cid": "bafyreicid"}
    return {"root": {"uri": uri(PERSON, "q"), "cid": "bafyreicid"}, "parent": ref}


def test_the_history_comes_in_time_order_with_its_facts(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    store.apply(IngestBatch(blips=blips(
        frame(ADA, "a", T0 + 2_000_000, {"content": "use an index", "reply": reply_to(PERSON, "q")}),
        frame(PERSON, "q", T0, {"content": "hey, #postgres is slow", "facets": [
            {"index": {"byteStart": 0, "byteEnd": 3},
             "features": [{"$type": "app.bsky.richtext.facet#mention", "did": ADA}]}]}),
        frame(OUTSIDER, "o", T0 + 3_000_000, {"content": "beep", "reply": reply_to(ADA, "a")}),
        frame(PERSON, "later", T0 + 9_000_000, {"content": "another day"}),
    )))
    history = list(recorded_history(store, ROSTER, until_us=T0 + 5_000_000))
    assert [f.uri.rsplit("/", 1)[1] for f in history] == ["q", "a", "o"]
    question, answer, outsider = history
    assert (question.mentioned_dids, question.tags, question.at) == ({ADA}, {"postgres"}, T0 / 1e6)
    assert (answer.author_agent, answer.parent, answer.root, answer.chain_depth) == ("ada", question.uri, question.uri, 1)
    assert (outsider.author_kind, outsider.chain_depth) == (AuthorKind.OTHER_AGENT, 2)
    report = replay(history, ROSTER, CoordinationPolicy(strategy="relevance"))
    assert (report.human_blips, report.replies_kept, report.calls) == (1, 1, 2)  # the question, and the outsider's reply
