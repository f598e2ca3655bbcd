"""A blip: a `stream.thought.blip` record, as ingest stores it and people read it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from blipflow.events import BadFrame, CommitEvent

BLIP_COLLECTION = "stream.thought.blip"

# Column order of a stored row; `store` loads rows in this order.
ROW_COLUMNS = (
    "uri",
    "did",
    "collection",
    "rkey",
    "cid",
    "rev",
    "time_us",
    "operation",
    "created_at",
    "content",
    "reply_root_uri",
    "reply_root_cid",
    "reply_parent_uri",
    "reply_parent_cid",
    "record",
)

BlipRow = tuple[Any, ...]


def blip_row(event: CommitEvent, *, max_content_bytes: int) -> BlipRow:
    """The store row for a commit; BadFrame if its record is not a usable blip.

    `createdAt` stays text here: the store casts a whole batch at once and keeps NULL where it is not a date.
    """
    record = event.record
    if record is None:
        return (event.uri, event.did, event.collection, event.rkey, None, event.rev, event.time_us,
                event.operation, None, None, None, None, None, None, None)
    content = record.get("content")
    if not isinstance(content, str):
        if event.collection == BLIP_COLLECTION:
            raise BadFrame("bad_record", f"{event.uri}: content is {type(content).__name__}, not text")
        content = None
    elif len(content) * 4 > max_content_bytes and len(content.encode()) > max_content_bytes:
        raise BadFrame("oversized", f"{event.uri}: content of {len(content.encode())} bytes")
    created_at = record.get("createdAt")
    if not isinstance(created_at, str):
        created_at = None
    root_uri, root_cid = strong_ref(record, "root")
    parent_uri, parent_cid = strong_ref(record, "parent")
    return (event.uri, event.did, event.collection, event.rkey, event.cid, event.rev, event.time_us,
            event.operation, created_at, content, root_uri, root_cid, parent_uri, parent_cid,
            orjson.dumps(record).decode())


def strong_ref(record: dict[str, Any], which: str) -> tuple[str | None, str | None]:
    """`reply.root` / `reply.parent` as (uri, cid), the shape app.bsky.feed.post uses for threads."""
    reply = record.get("reply")
    ref = reply.get(which) if isinstance(reply, dict) else None
    if not isinstance(ref, dict):
        return None, None
    uri, cid = ref.get("uri"), ref.get("cid")
    return (uri if isinstance(uri, str) else None, cid if isinstance(cid, str) else None)


@dataclass(frozen=True, slots=True)
class Blip:
    """A stored blip with its author's identity, for reading."""

    uri: str
    did: str
    handle: str | None
    display_name: str | None
    time_us: int
    created_at: datetime | None
    content: str
    reply_parent_uri: str | None = None

    @property
    def author(self) -> str:
        return self.handle or self.did
