"""Tests of the firehose-to-Jetstream-v1 translation core (blipflow/firehose_events.py).

Pure: hand-built firehose messages (tests/support/repo_builders.py) in, v1 event dicts out; no network.
The JSON text of an event is what the Jetstream stand-in's `encode_event` sends, so the byte-level
checks (blob field order, the production corpus) go through it.
"""

from __future__ import annotations

import base64
import json
import os
import struct
from pathlib import Path

import pytest

from blipflow.ingest import firehose_events as fe
from tests.support.jetstream_standin import encode_event
from tests.support.repo_builders import (
    BLIP,
    DID_A,
    DID_B,
    NOW,
    L,
    account_message,
    blip_record,
    car,
    cbor,
    cid_bytes,
    cid_of,
    commit_message,
    identity_message,
    sdk_message,
    varint,
)

# ---------------------------------------------------------------------------------------------------
# Record decoding
# ---------------------------------------------------------------------------------------------------

LINK = "bafyreidwaivazkwu67xztlmuobx35hs2lnfh3kolmgfmucldvhd3sgzcqi"
RAW_LINK = "bafkreias7oxbr6swsuggccmtnqpoeami4jza5x4w3urltn6gzhqf4k6k2e"


def test_record_links_bytes_blobs_and_key_order():
    record = {
        "$type": BLIP,
        "zeta": 1,
        "alpha": {"link": L(LINK), "bytes": b"\x00\x01\xfehello"},
        "image": {"$type": "blob", "ref": L(RAW_LINK), "mimeType": "image/jpeg", "size": 119635},
        "list": [L(LINK), L(LINK)],
        "nothing": None,
        "neg": -5,
    }
    decoded = fe.decode_record(cbor(record))
    assert decoded["alpha"]["link"] == {"$link": LINK}
    # $bytes is unpadded standard base64 (Go's base64.RawStdEncoding)
    assert decoded["alpha"]["bytes"] == {"$bytes": base64.b64encode(b"\x00\x01\xfehello").decode().rstrip("=")}
    assert "=" not in decoded["alpha"]["bytes"]["$bytes"]
    assert decoded["list"] == [{"$link": LINK}, {"$link": LINK}]
    assert decoded["nothing"] is None and decoded["neg"] == -5
    # Go marshals maps with sorted keys; blobs in struct order: $type, ref, mimeType, size
    assert list(decoded) == sorted(decoded)
    assert list(decoded["image"]) == ["$type", "ref", "mimeType", "size"]
    assert decoded["image"]["ref"] == {"$link": RAW_LINK}
    text = encode_event({"did": DID_A, "time_us": 1, "kind": "commit", "commit": {"record": decoded}})
    assert '"image":{"$type":"blob","ref":{"$link":"' + RAW_LINK + '"},"mimeType":"image/jpeg","size":119635}' in text


def test_record_bytes_that_look_like_a_cid_stay_bytes():
    # libipld would call these a link; Jetstream (indigo) keeps CBOR byte strings as $bytes.
    raw = cid_bytes(b"looks like a cid")
    decoded = fe.decode_record(cbor({"$type": BLIP, "b": raw}))
    assert decoded["b"] == {"$bytes": base64.b64encode(raw).decode().rstrip("=")}


@pytest.mark.parametrize(
    "record",
    [
        {"$type": BLIP, "f": 1.5},  # non-integral float
        {"$type": BLIP, "mixed": [1, "a"]},  # non-homogenous array
        {"$type": ""},  # empty $type
        {"$type": 5},  # non-string $type
        {"$type": BLIP, "img": {"$type": "blob", "ref": L(LINK), "mimeType": "x/y"}},  # blob without size
        {"$type": BLIP, "l": {"$link": "not-a-cid"}},
    ],
)
def test_records_jetstream_cannot_decode_are_rejected(record):
    with pytest.raises(fe.RecordDecodeError):
        fe.decode_record(cbor(record))


def test_integral_floats_become_integers():
    assert fe.decode_record(cbor({"$type": BLIP, "n": 3.0}))["n"] == 3


# ---------------------------------------------------------------------------------------------------
# Translating firehose messages
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("via_sdk", [False, True], ids=["dict", "sdk-model"])
def test_translate_create_update_delete(via_sdk):
    created = blip_record("hello", reply={"root": {"cid": LINK, "uri": "at://x"}}, ref=L(LINK))
    updated = blip_record("hello, edited")
    body = commit_message(
        DID_A,
        "3l3qo2vutsw2b",
        [("create", BLIP, "3kaaa", created), ("update", BLIP, "3kbbb", updated), ("delete", BLIP, "3kccc", None)],
    )
    message = sdk_message(body) if via_sdk else body
    events = fe.translate_message(message)
    assert [e["commit"]["operation"] for e in events] == ["create", "update", "delete"]
    create, update, delete = events
    assert create["did"] == DID_A and create["kind"] == "commit"
    assert list(create["commit"]) == ["rev", "operation", "collection", "rkey", "record", "cid"]
    assert create["commit"]["rev"] == "3l3qo2vutsw2b"
    assert create["commit"]["collection"] == BLIP and create["commit"]["rkey"] == "3kaaa"
    assert create["commit"]["cid"] == cid_of(cbor(created))
    assert create["commit"]["record"]["ref"] == {"$link": LINK}  # CID -> $link
    assert create["commit"]["record"]["reply"]["root"]["cid"] == LINK  # a string stays a string
    assert update["commit"]["record"]["content"] == "hello, edited"
    assert update["commit"]["cid"] == cid_of(cbor(updated))
    assert delete["commit"] == {"rev": "3l3qo2vutsw2b", "operation": "delete", "collection": BLIP, "rkey": "3kccc"}


def test_translate_skips_what_jetstream_skips():
    good = blip_record("good")
    body = commit_message(DID_A, "3l3qo2vutsw2b", [("create", BLIP, "ok", good)])
    # an op whose block is missing from the CAR
    body["ops"].append({"action": "create", "path": f"{BLIP}/missing", "cid": cid_bytes(b"absent")})
    # an op whose record fails to decode
    bad = cbor({"$type": BLIP, "f": 0.5})
    body["ops"].append({"action": "create", "path": f"{BLIP}/badrec", "cid": cid_bytes(bad)})
    body["blocks"] = car(cid_bytes(b"c"), [cbor(good), bad])
    # an unknown action, a create without a cid, a path without an rkey
    body["ops"] += [
        {"action": "frob", "path": f"{BLIP}/x", "cid": None},
        {"action": "create", "path": f"{BLIP}/nocid", "cid": None},
        {"action": "delete", "path": BLIP, "cid": None},
    ]
    events = fe.translate_message(body)
    assert [e["commit"]["rkey"] for e in events] == ["ok"]
    assert fe.translate_message(commit_message(DID_A, "3l3", [("create", BLIP, "x", good)], too_big=True)) == []
    assert fe.translate_message({**body, "time": "yesterday"}) == []


def test_translate_detects_block_hash_mismatch():
    record = blip_record("x")
    body = commit_message(DID_A, "3l3qo2vutsw2b", [("create", BLIP, "r", record)])
    body["ops"][0]["cid"] = cid_bytes(b"something else")
    # the CAR carries the record under the wrong CID
    section = cid_bytes(b"something else") + cbor(record)
    body["blocks"] = car(cid_bytes(b"c"), []) + varint(len(section)) + section
    assert fe.translate_message(body) == []


@pytest.mark.parametrize("via_sdk", [False, True], ids=["dict", "sdk-model"])
def test_translate_identity_and_account(via_sdk):
    convert = sdk_message if via_sdk else (lambda body: body)
    (identity,) = fe.translate_message(convert(identity_message(DID_A, 7)))
    assert identity == {
        "did": DID_A,
        "kind": "identity",
        "identity": {"did": DID_A, "handle": "alice.test", "seq": 7, "time": NOW},
    }
    assert list(identity["identity"]) == ["did", "handle", "seq", "time"]
    (no_handle,) = fe.translate_message(convert(identity_message(DID_A, 8, handle=None)))
    assert "handle" not in no_handle["identity"]
    (account,) = fe.translate_message(convert(account_message(DID_B, 9, active=False, status="deactivated")))
    assert account["account"] == {"active": False, "did": DID_B, "seq": 9, "status": "deactivated", "time": NOW}
    assert list(account["account"]) == ["active", "did", "seq", "status", "time"]
    (active,) = fe.translate_message(convert(account_message(DID_B, 10)))
    assert active["account"] == {"active": True, "did": DID_B, "seq": 10, "time": NOW}


def test_sync_and_info_messages_produce_nothing():
    assert fe.translate_message({"$type": "#sync", "did": DID_A, "seq": 1, "time": NOW}) == []
    assert fe.translate_message({"$type": "#info", "name": "OutdatedCursor"}) == []


# ---------------------------------------------------------------------------------------------------
# Against production Jetstream's own corpus (kept beside the checkout in ../shared, not vendored)
# ---------------------------------------------------------------------------------------------------

SHARED_CORPUS = Path(__file__).resolve().parents[3] / "shared" / "jetstream-corpus"
CORPUS = Path(os.environ.get("JETSTREAM_V1_CORPUS") or SHARED_CORPUS)


@pytest.fixture(scope="module")
def corpus() -> Path:
    """The corpus folder; CI always has it beside the checkout, so there a missing one fails instead of skipping."""
    if not (CORPUS / "expected_v1.jsonl").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"Jetstream corpus missing at {CORPUS} (CI lays shared/ beside the checkout)")
        pytest.skip(f"no Jetstream corpus at {CORPUS}; set JETSTREAM_V1_CORPUS to it")
    return CORPUS


def test_against_production_jetstream_corpus(corpus: Path):
    """Relay frames vs what production Jetstream v1 served for them, byte for byte apart from time_us."""
    import re

    import zstandard
    from atproto_firehose import parse_subscribe_repos_message
    from atproto_subscription.frames import Frame

    raw = zstandard.ZstdDecompressor().stream_reader(open(corpus / "frames.bin.zst", "rb")).read()
    ours, pos = {}, 0
    while pos < len(raw):
        (size,) = struct.unpack("<I", raw[pos : pos + 4])
        frame = Frame.from_bytes(raw[pos + 4 : pos + 4 + size])
        pos += 4 + size
        for event in fe.translate_message(parse_subscribe_repos_message(frame)):
            text = encode_event({"did": event["did"], "time_us": 0, "kind": event["kind"], **event})
            ours[_corpus_key(text)] = text
    expected = {}
    for line in (corpus / "expected_v1.jsonl").read_text().splitlines():
        text = re.sub(r'"time_us":\d+', '"time_us":0', line, count=1)
        expected[_corpus_key(text)] = text
    assert len(expected) == 152  # the manifest's v1_events: the whole corpus was read
    assert ours == expected


def test_every_production_jetstream_event_is_accepted(corpus: Path):
    """What production Jetstream serves is never bad input to our client's checks (names, times, records)."""
    from blipflow.ingest.jetstream import parse_event

    lines = (corpus / "expected_v1.jsonl").read_text().splitlines()
    kinds = {type(parse_event(line)).__name__ for line in lines}  # BadFrame would raise
    assert len(lines) == 152 and {"CommitEvent", "IdentityEvent", "AccountEvent"} <= kinds


def _corpus_key(text: str) -> tuple:
    event = json.loads(text)
    if event["kind"] == "commit":
        c = event["commit"]
        return (event["did"], c.get("rev"), c["collection"], c["rkey"], c["operation"])
    return (event["did"], event[event["kind"]]["seq"])
