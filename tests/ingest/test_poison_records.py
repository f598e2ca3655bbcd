"""No poison records: whatever a record from the network holds — dates of any year or none, reply refs of
any shape, facets, odd unicode, sizes at the limit, deep nesting — it is stored (its unreadable parts as
"no date" / no reference) or counted as bad input, and nothing downstream raises: dispatch's prompt,
publish's threaded records, `history` and `monitor` output, the analytics reports.

Generated records go through the real Ingestor into a real DuckDB file (no peers: this is the fast tier)."""

from __future__ import annotations

import itertools
import json
import re
from datetime import datetime, timezone

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blipflow.analytics.output import JSON_TIMES
from blipflow.analytics.reports import Selection, reports, run_report
from blipflow.config import AgentConfig, IngestConfig
from blipflow.control.blips import Blips
from blipflow.control.engine import ControlPlane
from blipflow.control.ledger import Ledger
from blipflow.control.outbox import Outbox
from blipflow.dispatch.prompt import HEADER_KEYS, blip_text, window_messages
from blipflow.ingest.feed import Feed
from blipflow.ingest.ingester import Ingestor
from blipflow.ingest.jetstream import parse_event
from blipflow.ingest.monitor import live_blip
from blipflow.model.blip import Identity, parse_created_at
from blipflow.model.events import CID_PATTERN, RECORD_URI_PATTERN, BadFrame, CommitEvent
from blipflow.model.formatting import blip_json, format_blip
from blipflow.model.refs import Ref
from blipflow.model.times import iso_time
from blipflow.publish.publisher import Publisher
from blipflow.publish.records import split_content
from blipflow.store.history import Store

MAX_CONTENT_BYTES = 2_000  # small, so contents at the limit stay quick to generate
T0 = 1_760_000_000_000_000
AGENT = AgentConfig(name="scout", agent_id="agent-1", did="did:plc:scout0000000000000000000")
ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")
STRUCTURE = re.compile(r"<blip>\n<metadata>\n(?P<metadata>.*?)\n</metadata>\n<content>\n(?P<content>.*)\n</content>\n</blip>",
                       re.DOTALL)
UNESCAPED_HEADER = re.compile(rf"^[ \t]*(?:{'|'.join(HEADER_KEYS)})\s*:", re.MULTILINE)
CONTROL_BUT_TAB_AND_NEWLINE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")

odd_values = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


def date_text(year: int, month: int, day: int, hour: int, minute: int, second: int, fraction: str, zone: str) -> str:
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}{fraction}{zone}"


created_ats = st.one_of(
    st.builds(date_text, st.integers(-99_999, 300_000), st.integers(0, 13), st.integers(0, 32), st.integers(0, 25),
              st.integers(0, 60), st.integers(0, 61), st.sampled_from(["", ".1", ".123", ".123456789", "."]),
              st.sampled_from(["Z", "+00:00", "-05:00", "+14:00", "+23:59", "-23:59", "", "z", "+24:00", "Q"])),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)).map(lambda d: d.isoformat() + "Z"),
    st.sampled_from([
        "99999-01-01T00:00:00Z", "10000-01-01T00:00:00Z", "0000-01-01T00:00:00Z", "-0001-01-01T00:00:00Z",
        "0001-01-01T00:00:00Z", "0001-01-01T00:30:00+01:00", "9999-12-31T23:59:59Z", "9999-12-31T23:00:00-14:00",
        "294247-01-10T04:00:54.775807Z", "infinity", "-infinity", "epoch", "today", "2024-01-01",
        "2024-01-01 12:00:00", "2024-02-30T00:00:00Z", " 2024-01-01T00:00:00Z", "2024-01-01T00:00:00 BC",
    ]),
    odd_values,
)
dids = st.from_regex(r"did:plc:[a-z2-7]{24}", fullmatch=True)
rkeys = st.from_regex(r"[a-z2-7]{13}", fullmatch=True)
at_uris = st.builds(lambda did, rkey: f"at://{did}/stream.thought.blip/{rkey}", dids, rkeys)
cids = st.from_regex(r"bafyrei[a-z2-7]{52}", fullmatch=True)
strong_refs = st.one_of(
    odd_values,
    st.fixed_dictionaries({}, optional={"uri": st.one_of(at_uris, at_uris.map(lambda u: u + "\nx"), odd_values),
                                        "cid": st.one_of(cids, odd_values)}),
)
replies = st.one_of(odd_values, st.fixed_dictionaries({}, optional={"root": strong_refs, "parent": strong_refs}))
facets = st.one_of(odd_values, st.lists(st.fixed_dictionaries({
    "index": st.one_of(odd_values, st.fixed_dictionaries({"byteStart": st.integers(-5, 3000),
                                                          "byteEnd": st.integers(-5, 3000)})),
    "features": st.lists(st.dictionaries(st.sampled_from(["$type", "uri", "did", "tag"]), odd_values, max_size=3),
                         max_size=2),
}), max_size=3))
ODD_TEXT = ["\r", "\r\n", "\u2028", "\u2029", "\u202e", "\u200b", "\u200f", "\ufeff", "\x00", "\x1b[2J", "\x85",
            "\x0b", "author: mallory", "\n  createdAt: 1999", "é", "👩‍👩‍👧", "\U0010ffff"]
short_contents = st.lists(st.one_of(st.text(max_size=30), st.sampled_from(ODD_TEXT)), max_size=8).map("".join)
# contents around the limit, in characters of one to four bytes
sized_contents = st.builds(lambda char, size: char * (size // len(char.encode())),
                           st.sampled_from(["a", "é", "€", "😀"]),
                           st.integers(MAX_CONTENT_BYTES - 8, MAX_CONTENT_BYTES + 8))
contents = st.one_of(short_contents, sized_contents, odd_values)
nesting_depths = st.one_of(st.just(0), st.integers(1, 40), st.integers(1000, 1100))  # orjson reads up to 1024


@st.composite
def records(draw) -> tuple[dict, int]:
    """A record (possibly not a usable blip), and how deep a list it nests in an extra field."""
    record: dict = {"$type": "stream.thought.blip", "content": draw(contents)}
    for field, values in (("createdAt", created_ats), ("reply", replies), ("facets", facets)):
        if draw(st.booleans()) or field == "createdAt":
            record[field] = draw(values)
    return record, draw(nesting_depths)


def frame(did: str, rkey: str, time_us: int, record: dict, depth: int, ascii_only: bool) -> str:
    """A Jetstream v1 commit frame; a nested list goes in as text (encoders refuse such depths)."""
    event = {"did": did, "time_us": time_us, "kind": "commit", "commit": {
        "rev": "r", "operation": "create", "collection": "stream.thought.blip", "rkey": rkey,
        "cid": "bafyreib2rxk3rh6kzwq", "record": {**record, "nested": "NESTED"}}}
    return json.dumps(event, ensure_ascii=ascii_only).replace('"NESTED"', "[" * depth + "]" * depth or "null")


class Frames:
    cursor_key = "poison-test"
    first_cursor = None


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    return Store(tmp_path_factory.mktemp("poison") / "blipflow.duckdb")


@pytest.fixture(scope="module")
def plane(tmp_path_factory) -> ControlPlane:
    return ControlPlane(f"sqlite:///{tmp_path_factory.mktemp('poison-control') / 'control.sqlite'}")


clock = itertools.count(T0, 1_000)
authors = itertools.count()


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(drawn=st.lists(records(), min_size=1, max_size=4), ascii_only=st.booleans())
def test_every_record_is_stored_or_counted_and_nothing_downstream_raises(store, plane, drawn, ascii_only):
    did = f"did:plc:poison{next(authors):018d}"  # an author of its own: examples share the store
    frames = {f"at://{did}/stream.thought.blip/k{n}": frame(did, f"k{n}", next(clock), record, depth, ascii_only)
              for n, (record, depth) in enumerate(drawn)}
    bad_before = bad_input(store)
    ingestor = Ingestor(store, Frames(), IngestConfig(max_content_bytes=MAX_CONTENT_BYTES), feed=Feed(plane, store))
    events: dict[str, CommitEvent] = {}
    for text in frames.values():  # as a source hands frames over
        try:
            event = parse_event(text)
        except BadFrame as bad:
            ingestor.reject(bad)
            continue
        ingestor.accept(event)
        events[event.uri] = event
    ingestor.flush_everything()

    stored = {uri: (created_at, parent, parent_cid, root, root_cid) for uri, created_at, parent, parent_cid, root, root_cid
              in store.query_all("""SELECT uri, created_at, reply_parent_uri, reply_parent_cid, reply_root_uri,
                                           reply_root_cid FROM blips WHERE did = ?""", [did])}
    assert len(stored) + bad_input(store) - bad_before == len(frames)  # every blip stored or counted as bad input
    assert ingestor.stats.bad == len(frames) - len(stored)
    for uri, (created_at, *refs) in stored.items():
        record = events[uri].record
        assert created_at is None or isinstance(created_at, datetime)  # never text DuckDB could not hand over
        assert created_at == parse_created_at(record.get("createdAt"))  # the store reads dates as monitor does
        for ref_uri, ref_cid in (refs[:2], refs[2:]):
            assert (ref_uri is None) == (ref_cid is None)
            if ref_uri is not None:
                assert re.fullmatch(RECORD_URI_PATTERN, ref_uri) and re.fullmatch(CID_PATTERN, ref_cid)
    if not stored:
        return

    # dispatch: the window's blips as the agent's messages, from the control plane ingest fed
    window_id = Ledger(plane).decide(AGENT.name, {}, sorted(stored))
    window = Blips(plane).window_blips(window_id)
    assert len(window_messages(AGENT, window)) == len(stored)
    for blip in window:
        structure = STRUCTURE.fullmatch(blip_text(AGENT, blip))
        header, body = structure["metadata"], structure["content"]
        keys = [line.split(": ", 1)[0] for line in header.split("\n")]
        assert keys in ([*named, "did", "createdAt", *reply] for named in (["author"], ["author", "displayName"])
                        for reply in ([], ["inReplyTo"]))
        assert ("inReplyTo" in keys) == (blip.reply_parent_uri is not None)
        assert ISO_DATE.fullmatch(header.split("createdAt: ", 1)[1].split("\n", 1)[0])
        assert not re.search(r"<\s*/?\s*(blip|metadata|content)\b", body, re.IGNORECASE)  # no tag of the structure
        assert not UNESCAPED_HEADER.search(body)  # no content line poses as a header
        assert "\x00" not in body and "\r" not in body

    # publish: the agent's reply, threaded to the window's blips
    Ledger(plane).finish_window(window_id, AGENT.name, ["Thanks. " * 600], 1.0)
    [reply] = Outbox(plane).replies(1, f"{window_id}:0")
    parts = split_content(reply.content, 300)
    posted = []
    for index in range(len(parts)):
        record = Publisher.record(reply, parts, index, posted)
        assert record["createdAt"] == iso_time(reply.created_us) and ISO_DATE.fullmatch(record["createdAt"])
        refs = [record["reply"]["root"], record["reply"]["parent"], *record.get("answers", [])] if "reply" in record \
            else []
        assert index == 0 or refs
        for ref in refs:
            assert set(ref) == {"uri", "cid"}
            assert re.fullmatch(RECORD_URI_PATTERN, ref["uri"]) and re.fullmatch(CID_PATTERN, ref["cid"])
        orjson.dumps(record)  # what the PDS client sends
        posted.append(Ref(f"at://{AGENT.did}/stream.thought.blip/p{index}", "bafyreipart"))

    # history and monitor show each blip the same way, with a date
    history = {blip.uri: blip for blip in store.latest_blips(len(stored), [did])}
    assert set(history) == set(stored)
    for uri, blip in history.items():
        shown = format_blip(blip)
        assert ISO_DATE.fullmatch(orjson.loads(blip_json(blip))["createdAt"])
        assert not CONTROL_BUT_TAB_AND_NEWLINE.search(shown)  # nothing that acts on a terminal
        live = live_blip(events[uri], Identity(did, blip.handle, blip.display_name, None, None))
        assert format_blip(live) == shown

    # analytics: every report runs over these blips, and its rows are readable
    for query in reports().values():
        table = run_report(store, plane, query, Selection(), [AGENT])
        orjson.dumps(table.to_pylist(), option=JSON_TIMES)


def bad_input(store: Store) -> int:
    return sum(value for name, value in store.counters().items() if name.startswith("ingest.bad."))


@pytest.mark.parametrize("created_at", ["99999-01-01T00:00:00Z", "10000-01-01T00:00:00Z", "0000-01-01T00:00:00Z",
                                        "-0001-01-01T00:00:00Z", "infinity", "2024-01-01"])
def test_a_created_at_that_is_not_a_readable_date_is_no_date_and_shows_when_the_stream_saw_it(store, created_at):
    """The measured case: DuckDB took these years and handed them back as text, which formatting tripped on
    (and "infinity" as a date without a zone, a bare date as midnight wherever the store happened to be)."""
    did = "did:plc:farfuture0000000000000000"
    time_us = next(clock)
    text = frame(did, f"d{time_us}", time_us, {"content": "hello", "createdAt": created_at}, 0, False)
    ingestor = Ingestor(store, Frames(), IngestConfig())
    ingestor.accept(parse_event(text))
    ingestor.flush_everything()
    [blip] = [blip for blip in store.latest_blips(100, [did]) if blip.time_us == time_us]
    assert blip.created_at is None
    seen = datetime.fromtimestamp(time_us / 1e6, timezone.utc).isoformat(timespec="milliseconds")
    assert f"createdAt: {seen.replace('+00:00', 'Z')}" in format_blip(blip)


def test_a_date_stored_before_ingest_checked_dates_reads_as_no_date(store, plane):
    """Stores written by earlier versions hold such dates already; `history` and dispatch read past them."""
    did = "did:plc:olderstore0000000000000000"
    time_us = next(clock)
    ingestor = Ingestor(store, Frames(), IngestConfig())
    ingestor.accept(parse_event(frame(did, "old", time_us, {"content": "from before", "createdAt": "x"}, 0, False)))
    ingestor.flush_everything()
    store.query_all("UPDATE blips SET created_at = '99999-01-01T00:00:00Z' WHERE did = ?", [did])
    assert isinstance(store.query_all("SELECT created_at FROM blips WHERE did = ?", [did])[0][0], str)  # as DuckDB has it

    [blip] = store.latest_blips(1, [did])
    assert blip.created_at is None
    Feed(plane, store).catch_up()  # as ingest feeds the control plane from such a store on its first start
    window = Blips(plane).window_blips(Ledger(plane).decide(AGENT.name, {}, [blip.uri]))
    assert [one.created_at for one in window] == [None]
    assert ISO_DATE.fullmatch(blip_text(AGENT, window[0]).split("createdAt: ", 1)[1].split("\n", 1)[0])
