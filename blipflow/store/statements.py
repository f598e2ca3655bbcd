"""The SQL the history store runs that is worth building once: how ingest writes a batch of events, and
which columns a blip is read from."""

from __future__ import annotations

from blipflow.model.blip import BLIP_COLLECTION, CREATED_AT_PATTERN
from blipflow.model.events import (
    CID_PATTERN,
    EARLIEST_DATE,
    LATEST_DATE,
    RECORD_URI_PATTERN,
)


def readable_date(moment: str) -> str:
    """SQL: the TIMESTAMPTZ `moment` when every reader can hold it (see events.py), else NULL."""
    earliest, latest = (f"TIMESTAMPTZ '{date.isoformat()}'" for date in (EARLIEST_DATE, LATEST_DATE))
    return f"CASE WHEN {moment} BETWEEN {earliest} AND {latest} THEN {moment} END"


def strong_ref(ref: str) -> str:
    """SQL: whether `ref`, a struct of JSON `uri` and `cid`, is a strong reference: the text at-uri of a record
    and the text of a cid (JSON strings, never a number or a list that would read as text)."""
    return (f"(json_type({ref}.uri) = 'VARCHAR' AND regexp_full_match({ref}.uri->>'$', '{RECORD_URI_PATTERN}') "
            f"AND json_type({ref}.cid) = 'VARCHAR' AND regexp_full_match({ref}.cid->>'$', '{CID_PATTERN}'))")


# What the store reads of an event and of its record, each parsed once (reading fields one by one with `->`
# parsed the record again for every one of them: most of the write's time). A field of another type reads as
# NULL where a struct is expected, and as its JSON text where text is: the patterns below refuse that text.
EVENT_FIELDS = ('{"did": "VARCHAR", "commit": {"rev": "VARCHAR", "operation": "VARCHAR", "collection": "VARCHAR", '
                '"rkey": "VARCHAR", "cid": "VARCHAR", "record": "JSON"}}')
STRONG_REF_FIELDS = '{"uri": "JSON", "cid": "JSON"}'
RECORD_FIELDS = (f'{{"content": "VARCHAR", "createdAt": "VARCHAR", '
                 f'"reply": {{"root": {STRONG_REF_FIELDS}, "parent": {STRONG_REF_FIELDS}}}}}')

# Columns come out of the event JSON here, rather than in Python (off the GIL, so the socket is read
# meanwhile). A value of the wrong type or shape is stored as NULL, never as something readers trip on: a
# createdAt that is not a date every reader can hold (see blip.py), a reply reference that is not an at-uri
# with a cid (either part missing or malformed drops the reference; a reply that names no valid parent is
# just a blip). A blip's content, always text (see blip_row), is kept once, in `content`, and the rest of its
# record in `record` (see RECORD_AS_SENT); another collection's record, whose content may be anything, whole.
# `which` picks the incoming rows.
def insert_blips(which: str) -> str:
    return f"""
INSERT INTO blips (uri, did, collection, rkey, cid, rev, time_us, operation, deleted, created_at, content,
                   reply_root_uri, reply_root_cid, reply_parent_uri, reply_parent_cid, record)
SELECT uri, did, c.collection, c.rkey, c.cid, c.rev, time_us, c.operation, c.operation = 'delete',
       {readable_date("moment")}, r.content,
       CASE WHEN root_ok THEN r.reply.root.uri->>'$' END, CASE WHEN root_ok THEN r.reply.root.cid->>'$' END,
       CASE WHEN parent_ok THEN r.reply.parent.uri->>'$' END, CASE WHEN parent_ok THEN r.reply.parent.cid->>'$' END,
       CASE WHEN c.collection = '{BLIP_COLLECTION}' THEN json_remove(c.record, '$.content') ELSE c.record END
FROM (SELECT *, {strong_ref("r.reply.root")} AS root_ok, {strong_ref("r.reply.parent")} AS parent_ok,
             TRY_CAST(CASE WHEN regexp_full_match(r.createdAt, '{CREATED_AT_PATTERN}') THEN r.createdAt END
                      AS TIMESTAMPTZ) AS moment
      FROM (SELECT uri, time_us, e.did, e.commit AS c, from_json(e.commit.record, '{RECORD_FIELDS}') AS r
            FROM (SELECT uri, time_us, from_json(event, '{EVENT_FIELDS}') AS e FROM incoming {which})))
"""


# Later operations win; replaying an operation already applied changes nothing.
LATER_WINS = """
ON CONFLICT (uri) DO UPDATE SET
    cid = excluded.cid, rev = excluded.rev, time_us = excluded.time_us, operation = excluded.operation,
    deleted = excluded.deleted,
    created_at = CASE WHEN excluded.deleted THEN blips.created_at ELSE excluded.created_at END,
    content = excluded.content,
    reply_root_uri = excluded.reply_root_uri, reply_root_cid = excluded.reply_root_cid,
    reply_parent_uri = excluded.reply_parent_uri, reply_parent_cid = excluded.reply_parent_cid,
    record = excluded.record, updated_at = now()
WHERE excluded.time_us > blips.time_us
"""
UPSERT_BLIPS = insert_blips("") + LATER_WINS

# The same in two parts, for a batch in which every created blip is new to the store (as on a live stream):
# a plain insert of the creates costs a third of an upsert's (DuckDB checks each row of an ON CONFLICT
# against the index one by one), and only updates and deletes go through the upsert. A create the store
# already holds (a replay after a restart) fails the insert, and the batch is written as UPSERT_BLIPS.
INSERT_CREATED_BLIPS = insert_blips("WHERE operation = 'create'")
UPSERT_CHANGED_BLIPS = insert_blips("WHERE operation <> 'create'") + LATER_WINS

# A stored operation's record as the network sent it (NULL for a deletion): `record` with its text content put
# back. A store written before kept the content in `record` too, where inserting it changes nothing.
RECORD_AS_SENT = """CASE WHEN b.deleted THEN NULL WHEN b.content IS NULL THEN b.record
     ELSE json_insert(b.record, '$.content', to_json(b.content)) END"""

# A blip an agent may be sent: a live blip with content (not another collection, not a tombstone).
CANDIDATE_BLIP = "b.collection = 'stream.thought.blip' AND NOT b.deleted AND b.content IS NOT NULL"

# The columns a `Blip` and a `dispatch.Window` are read from, in their field order. A store written before
# ingest checked dates may hold ones Python cannot (year 99999, say): those read as no date.
BLIP_FIELDS = (f"b.uri, b.did, i.handle, i.display_name, b.time_us, {readable_date('b.created_at')} AS created_at, "
               "b.content, b.reply_parent_uri")
