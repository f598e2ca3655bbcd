"""What a reply goes out as: record keys, parts of a long reply, and the threaded record."""

from __future__ import annotations

import re

import pytest

from blipflow.model.refs import AnsweredBlip, Ref
from blipflow.model.tids import tid
from blipflow.model.times import iso_time
from blipflow.publish.records import MAX_PARTS, blip_record, record_key, split_content

TID_SHAPE = re.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")  # the atproto TID syntax
NOW_US = 1_763_790_000_123_456


def test_tids_have_the_atproto_shape_and_sort_in_time_order():
    assert tid(0, 0) == "2222222222222"
    assert tid((1 << 53) - 1, 1023) == "bzzzzzzzzzzzz"
    keys = [tid(NOW_US + step, 5) for step in (0, 1, 999, 1000, 10**6)]
    assert all(TID_SHAPE.match(key) for key in keys)
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    with pytest.raises(ValueError):
        tid(1 << 53, 0)


def test_record_keys_are_the_same_every_time_and_distinct_per_part_and_reply():
    assert record_key("w1:0", NOW_US, 0, 0) == record_key("w1:0", NOW_US, 0, 0)
    keys = {record_key(f"w1:{position}", NOW_US, position, part) for position in range(3) for part in range(5)}
    assert len(keys) == 15  # one window's replies share a time, their parts never share a key
    assert record_key("w1:0", NOW_US, 0, 0) != record_key("w2:0", NOW_US, 0, 0)  # same microsecond, other reply
    assert all(TID_SHAPE.match(key) for key in keys)
    with pytest.raises(ValueError, match="parts a reply may have"):
        record_key("w1:0", NOW_US, 0, MAX_PARTS)


def test_a_short_reply_is_one_part():
    assert split_content("  hello there  ", 50) == ["hello there"]


def test_a_long_reply_is_split_at_breaks_and_loses_nothing():
    paragraph = "First thought, stated at some length. " * 3
    text = f"{paragraph.strip()}\n\nSecond thought follows here! And a third one? Yes."
    parts = split_content(text, 60)
    assert all(0 < len(part) <= 60 for part in parts)
    assert len(parts) >= 3
    assert " ".join(" ".join(parts).split()) == " ".join(text.split())  # every word, in order
    assert parts[0].endswith(".")  # a sentence ends a part where one is near the limit


def test_a_word_longer_than_the_limit_is_cut_inside():
    parts = split_content("a" * 45 + " end", 20)
    assert parts == ["a" * 20, "a" * 20, "aaaaa end"]


def test_a_record_answering_a_window_threads_to_its_newest_blip():
    first = AnsweredBlip("at://did:plc:h/stream.thought.blip/1", "c1")
    newest = AnsweredBlip("at://did:plc:h/stream.thought.blip/2", "c2", "at://did:plc:r/stream.thought.blip/0", "c0")
    record = blip_record("hi", "2025-11-22T05:00:00.123Z", parent=newest.ref, root=newest.thread_root,
                         answers=[first.ref, newest.ref])
    assert record == {
        "$type": "stream.thought.blip", "content": "hi", "createdAt": "2025-11-22T05:00:00.123Z",
        "reply": {"root": {"uri": "at://did:plc:r/stream.thought.blip/0", "cid": "c0"},
                  "parent": {"uri": "at://did:plc:h/stream.thought.blip/2", "cid": "c2"}},
        "answers": [{"uri": first.uri, "cid": "c1"}, {"uri": newest.uri, "cid": "c2"}],
    }
    alone = blip_record("hi", "2025-11-22T05:00:00.123Z", parent=first.ref, answers=[first.ref])
    assert alone["reply"] == {"root": first.ref.as_record(), "parent": first.ref.as_record()}  # a thread's start
    assert "answers" not in alone
    assert "reply" not in blip_record("hi", "2025-11-22T05:00:00.123Z")


def test_record_times_are_utc_milliseconds():
    assert iso_time(NOW_US) == "2025-11-22T05:40:00.123Z"
    assert Ref("at://x", "c").as_record() == {"uri": "at://x", "cid": "c"}
