"""A blip: a `stream.thought.blip` record, as ingest stores it and people read it."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime

from blipflow.model.events import EARLIEST_DATE, LATEST_DATE, BadFrame, CommitEvent

BLIP_COLLECTION = "stream.thought.blip"

# A createdAt is a date only when it is written as ATProto writes dates (RFC 3339: date, 'T', time, zone)
# and names an instant every reader can hold (see events.py): DuckDB, left to itself, also takes
# "infinity", bare dates and years such as 99999 or 0, and hands those back as text. Anything else is
# "no date" (None, NULL in the store). The store applies the same rule in SQL.
CREATED_AT_PATTERN = (
    r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
)
CREATED_AT_SYNTAX = re.compile(CREATED_AT_PATTERN)

# A row as ingest hands it to the store: the store reads every other column out of the event's JSON
# (in DuckDB, off the GIL), which is what lets ingest keep up with the stream; the operation tells it which
# rows may be plain inserts (see statements.py).
ROW_COLUMNS = ("uri", "time_us", "operation", "event")

BlipRow = tuple[str, int, str, bytes]


def blip_row(event: CommitEvent, *, max_content_bytes: int) -> BlipRow:
    """The store row for a commit; BadFrame if its record is not a usable blip."""
    record = event.record
    if record is not None:
        content = record.get("content")
        if not isinstance(content, str):
            if event.collection == BLIP_COLLECTION:
                raise BadFrame("bad_record", f"{event.uri}: content is {type(content).__name__}, not text")
        elif len(content) * 4 > max_content_bytes and len(content.encode()) > max_content_bytes:
            raise BadFrame("oversized", f"{event.uri}: content of {len(content.encode())} bytes")
    return (event.uri, event.time_us, event.operation, event.raw)


def parse_created_at(value: object) -> datetime | None:
    """A record's createdAt as a date, or None when it is not one every reader can hold (see above)."""
    if not isinstance(value, str) or not CREATED_AT_SYNTAX.fullmatch(value):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:  # a day the month does not have
        return None
    return moment if EARLIEST_DATE <= moment <= LATEST_DATE else None


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a DID is, as far as we know: handle and display name, and when they were resolved."""

    did: str
    handle: str | None
    display_name: str | None
    pds: str | None
    fetched_at: datetime | None


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


def with_identity(blip: Blip, identity: Identity) -> Blip:
    """The blip with its author's handle and display name as resolved now (they may have changed)."""
    return replace(blip, handle=identity.handle or blip.handle, display_name=identity.display_name or blip.display_name)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A blip handed to a given agent and not yet sent, as dispatch weighs when to send it."""

    uri: str
    did: str
    arrived: datetime  # when ingest stored it
