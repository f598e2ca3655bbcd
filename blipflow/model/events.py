"""Repository events, as every source (Jetstream, a PDS/relay firehose) hands them to ingest.

The shapes follow Jetstream v1: one event per repository operation, stamped with the source's
`time_us` clock, plus identity and account events.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from blipflow.model.identifiers import DID_PATTERN, HANDLE_PATTERN

Operation = Literal["create", "update", "delete"]

# ATProto's syntax for the names an event carries (https://atproto.com/specs): whatever does not match is
# not an event, so no DID, collection or record key with a line break or a slash in it reaches a prompt,
# a record or an at-uri. The patterns are RE2- and Python-compatible (the store matches them in SQL too).
# DIDs and handles name accounts, which identity resolution checks too: they live in identifiers.py.
NSID_PATTERN = r"[a-zA-Z][a-zA-Z0-9-]{0,62}(\.[a-zA-Z0-9-]{1,63}){2,}"
RKEY_PATTERN = r"[A-Za-z0-9._~:-]{1,512}"
RECORD_URI_PATTERN = rf"at://({DID_PATTERN}|{HANDLE_PATTERN})/{NSID_PATTERN}/{RKEY_PATTERN}"
CID_PATTERN = r"[A-Za-z0-9_-]{1,256}"  # the string form of a CID (multibase base32, base58 or base64url)

# The instants every reader can hold, in any time zone: Python's datetime holds years 1 to 9999 only.
EARLIEST_DATE = datetime(1, 1, 2, tzinfo=timezone.utc)
LATEST_DATE = datetime(9999, 12, 30, tzinfo=timezone.utc)
LATEST_TIME_US = (LATEST_DATE - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)

NSID_SYNTAX, RKEY_SYNTAX = re.compile(NSID_PATTERN), re.compile(RKEY_PATTERN)


@dataclass(slots=True, frozen=True)
class CommitEvent:
    did: str
    time_us: int
    operation: Operation
    collection: str
    rkey: str
    rev: str | None
    cid: str | None
    record: dict[str, Any] | None  # None for deletes
    raw: bytes = b""  # the event as Jetstream v1 JSON (UTF-8); the store reads its columns from it

    @property
    def uri(self) -> str:
        return f"at://{self.did}/{self.collection}/{self.rkey}"


@dataclass(slots=True, frozen=True)
class IdentityEvent:
    did: str
    time_us: int
    handle: str | None


@dataclass(slots=True, frozen=True)
class AccountEvent:
    did: str
    time_us: int
    active: bool
    status: str | None


Event = CommitEvent | IdentityEvent | AccountEvent


class BadFrame(Exception):
    """A frame that is not a usable event. `reason` is a short stable word used as a counter name."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
