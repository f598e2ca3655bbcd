"""Jetstream v1 commit frames and store batches built by hand, for store and dispatch tests."""

from __future__ import annotations

from typing import Any

import orjson

from blipflow.ingest.jetstream import parse_event
from blipflow.model.blip import BLIP_COLLECTION, blip_row
from blipflow.model.events import CommitEvent
from blipflow.store.history import IngestBatch

ALICE = "did:plc:alice000000000000000000"
BOB = "did:plc:bob00000000000000000000"
T0 = 1_760_000_000_000_000


def commit_frame(
    did: str,
    rkey: str,
    time_us: int,
    operation: str = "create",
    content: Any = "hello",
    created_at: str | None = "2025-10-09T08:53:20.123Z",
    reply: dict | None = None,
    cid: str = "bafyreicid",
) -> bytes:
    body: dict[str, Any] = {"rev": f"rev{time_us}", "operation": operation, "collection": BLIP_COLLECTION,
                            "rkey": rkey}
    if operation != "delete":
        record: dict[str, Any] = {"$type": BLIP_COLLECTION, "content": content}
        if created_at is not None:
            record["createdAt"] = created_at
        if reply is not None:
            record["reply"] = reply
        body.update(record=record, cid=cid)
    return orjson.dumps({"did": did, "time_us": time_us, "kind": "commit", "commit": body})


def uri(did: str, rkey: str) -> str:
    return f"at://{did}/{BLIP_COLLECTION}/{rkey}"


def blips(*frames: bytes, max_content_bytes: int = 30_000) -> dict[str, tuple]:
    rows = {}
    for raw in frames:
        event = parse_event(raw)
        assert isinstance(event, CommitEvent)
        rows[event.uri] = blip_row(event, max_content_bytes=max_content_bytes)
    return rows


def batch(*frames: bytes, **fields: Any) -> IngestBatch:
    return IngestBatch(blips=blips(*frames), **fields)
