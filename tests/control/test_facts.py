"""What the control plane reads from a blip's record for dispatch: mentions and #tags from richtext facets,
the thread, embedded records — and nothing it trips on, whatever shape the network sends."""

from __future__ import annotations

from datetime import datetime, timezone

from hypothesis import given
from hypothesis import strategies as st

from blipflow.control.facts import BlipFacts, facts_of

URI = "at://did:plc:ann/stream.thought.blip/3kabc"
PARENT = {"uri": "at://did:plc:bob/stream.thought.blip/3kpar", "cid": "bafypar"}
ROOT = {"uri": "at://did:plc:cat/stream.thought.blip/3kroot", "cid": "bafyroot"}


def mention(did: object) -> dict:
    return {"index": {"byteStart": 0, "byteEnd": 4}, "features": [{"$type": "app.bsky.richtext.facet#mention", "did": did}]}


def tag(name: object) -> dict:
    return {"index": {"byteStart": 5, "byteEnd": 9}, "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": name}]}


def test_a_reply_that_mentions_and_tags_and_quotes() -> None:
    record = {"$type": "stream.thought.blip", "content": "@bob #python what now?", "createdAt": "2026-12-06T10:00:00.5Z",
              "reply": {"root": ROOT, "parent": PARENT},
              "facets": [mention("did:plc:bob"), tag("#python"), tag("rust"), mention("did:plc:bob")],
              "embed": {"$type": "app.bsky.embed.recordWithMedia", "record": {"record": PARENT}}}
    assert facts_of(URI, "did:plc:ann", 7, "bafyme", record) == BlipFacts(
        URI, "did:plc:ann", 7, "bafyme", content="@bob #python what now?",
        created_at=datetime(2026, 12, 6, 10, 0, 0, 500000, tzinfo=timezone.utc),
        root_uri=ROOT["uri"], root_cid=ROOT["cid"], parent_uri=PARENT["uri"], parent_cid=PARENT["cid"],
        mentions=("did:plc:bob",), tags=("python", "rust"), refs=(PARENT,))


def test_malformed_parts_read_as_absent() -> None:
    record = {"content": 42, "createdAt": "yesterday", "reply": {"root": {"uri": "not a uri", "cid": "x"},
                                                                  "parent": {"uri": PARENT["uri"]}},
              "facets": [mention("bob"), mention(None), tag(""), tag(["x"]), {"features": "no"}, "junk",
                         {"features": [{"$type": "app.bsky.richtext.facet#link", "uri": "https://x"}]}],
              "embed": {"record": {"uri": PARENT["uri"], "cid": "not a cid!"}}}
    assert facts_of(URI, "did:plc:ann", 7, None, record) == BlipFacts(URI, "did:plc:ann", 7)


def test_a_deletion_has_no_record() -> None:
    assert facts_of(URI, "did:plc:ann", 9, None, None) == BlipFacts(URI, "did:plc:ann", 9, deleted=True)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                               st.sampled_from(["content", "createdAt", "reply", "root", "parent", "uri", "cid",
                                                "facets", "features", "$type", "did", "tag", "embed", "record"]),
                               inner, max_size=5), max_leaves=25)


@given(json_values)
def test_any_record_shape_reads_without_error(record: object) -> None:
    facts = facts_of(URI, "did:plc:ann", 1, None, record)
    assert facts.content is None or isinstance(facts.content, str)
    assert all(isinstance(did, str) and did.startswith("did:") for did in facts.mentions)
    assert all(isinstance(name, str) and name for name in facts.tags)
