"""What dispatch needs of a blip, read from its record: who wrote it and when, what it says, the thread
it is in, whom it mentions, its #tags and the records it embeds.

Records come from the network in any shape (see tests/ingest/test_poison_records.py): a value of the wrong type
or form is read as absent, never as something a reader trips on — the same rules the DuckDB store applies
in SQL (a reply reference is kept only as a valid at-uri with a cid; a createdAt only as a readable date).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from blipflow.model.blip import parse_created_at
from blipflow.model.events import CID_PATTERN, DID_PATTERN, RECORD_URI_PATTERN

MENTION = "app.bsky.richtext.facet#mention"
TAG = "app.bsky.richtext.facet#tag"
RECORD_URI = re.compile(RECORD_URI_PATTERN)
CID = re.compile(CID_PATTERN)
DID = re.compile(DID_PATTERN)


@dataclass(frozen=True)
class BlipFacts:
    """One stored operation on a blip, as the control plane keeps it (a later operation replaces it)."""

    uri: str
    did: str
    time_us: int  # source clock of the operation
    cid: str | None = None
    deleted: bool = False
    created_at: datetime | None = None
    content: str | None = None  # None: nothing to hand an agent (deleted, or not text)
    root_uri: str | None = None
    root_cid: str | None = None
    parent_uri: str | None = None
    parent_cid: str | None = None
    mentions: tuple[str, ...] = field(default_factory=tuple)  # DIDs, in the order mentioned
    tags: tuple[str, ...] = field(default_factory=tuple)
    refs: tuple[dict[str, str], ...] = field(default_factory=tuple)  # embedded records as {uri, cid}


def facts_of(uri: str, did: str, time_us: int, cid: str | None, record: Any) -> BlipFacts:
    """The facts of a create or update (`record` as the network sent it), or of a delete (`record` None)."""
    if not isinstance(record, dict):
        return BlipFacts(uri, did, time_us, cid, deleted=record is None)
    content = record.get("content")
    reply = record.get("reply") if isinstance(record.get("reply"), dict) else {}
    root, parent = strong_ref(reply.get("root")), strong_ref(reply.get("parent"))
    return BlipFacts(
        uri, did, time_us, cid,
        created_at=parse_created_at(record.get("createdAt")),
        content=content if isinstance(content, str) else None,
        root_uri=root and root["uri"], root_cid=root and root["cid"],
        parent_uri=parent and parent["uri"], parent_cid=parent and parent["cid"],
        mentions=unique(feature.get("did") for feature in features(record, MENTION)
                        if isinstance(feature.get("did"), str) and DID.fullmatch(feature["did"])),
        tags=unique(feature["tag"].lstrip("#") for feature in features(record, TAG)
                    if isinstance(feature.get("tag"), str) and feature["tag"].lstrip("#")),
        refs=embedded_refs(record.get("embed")),
    )


def strong_ref(value: Any) -> dict[str, str] | None:
    """{uri, cid} when `value` is a strong reference: the at-uri of a record and the text of a cid."""
    if not isinstance(value, dict):
        return None
    uri, cid = value.get("uri"), value.get("cid")
    if isinstance(uri, str) and isinstance(cid, str) and RECORD_URI.fullmatch(uri) and CID.fullmatch(cid):
        return {"uri": uri, "cid": cid}
    return None


def features(record: dict, kind: str) -> list[dict]:
    facets = record.get("facets")
    return [feature for facet in (facets if isinstance(facets, list) else []) if isinstance(facet, dict)
            for feature in (facet.get("features") if isinstance(facet.get("features"), list) else [])
            if isinstance(feature, dict) and feature.get("$type") == kind]


def embedded_refs(embed: Any) -> tuple[dict[str, str], ...]:
    """The records an embed quotes: `embed.record` (a record embed) or `embed.record.record` (with media)."""
    if not isinstance(embed, dict):
        return ()
    quoted = embed.get("record")
    ref = strong_ref(quoted) or (strong_ref(quoted.get("record")) if isinstance(quoted, dict) else None)
    return (ref,) if ref else ()


def unique(values: Any) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))
