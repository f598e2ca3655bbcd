"""The facts a decision needs about one blip, read once from its record.

Chain depth counts every agent we know of, ours and others': an outside agent ping-ponging with ours
deepens the chain like one of our own would.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from blipflow.coordination.participants import AuthorKind, Roster
from blipflow.coordination.richtext import richtext, words


@dataclass(frozen=True, slots=True)
class BlipFacts:
    uri: str
    author_did: str
    author_kind: AuthorKind
    author_agent: str | None  # the name of our agent that wrote it, if one did
    at: float  # when it arrived, seconds since the epoch (the caller's clock)
    root: str  # the thread it belongs to: its root's uri (its own when it starts one)
    parent: str | None  # the blip it answers
    mentioned_dids: frozenset[str]
    mentioned_handles: frozenset[str]
    tags: frozenset[str]
    words: frozenset[str]
    content: str
    chain_depth: int  # agents' blips in a row ending here, this one included (0: not an agent's)
    room: str | None = None  # filled once rooms exist

    @property
    def by_agent(self) -> bool:
        return self.author_kind is not AuthorKind.PERSON

    @property
    def parent_did(self) -> str | None:
        return did_of(self.parent) if self.parent else None


def did_of(uri: str) -> str | None:
    """The author of an at-uri's record: its authority, when that is a DID."""
    if not uri.startswith("at://did:"):
        return None
    return uri[5:].split("/", 1)[0]


def chain_depth(kind: AuthorKind, parent_depth: int | None) -> int:
    """An agent's blip continues the agent-only chain its parent ends; a person's blip ends any chain."""
    if kind is AuthorKind.PERSON:
        return 0
    return 1 + (parent_depth or 0)


def reply_uri(record: Mapping[str, object], part: str) -> str | None:
    reply = record.get("reply")
    ref = reply.get(part) if isinstance(reply, Mapping) else None
    uri = ref.get("uri") if isinstance(ref, Mapping) else None
    return uri if isinstance(uri, str) and uri.startswith("at://") else None


def blip_facts(
    uri: str, did: str, record: Mapping[str, object], *, at: float, roster: Roster,
    parent_depth: int | None = None, room: str | None = None,
) -> BlipFacts:
    """Facts of a `stream.thought.blip` record; `parent_depth` is the chain depth of the blip it answers, if known."""
    content = record.get("content")
    content = content if isinstance(content, str) else ""
    parent = reply_uri(record, "parent")
    root = reply_uri(record, "root") or parent or uri
    text = richtext(content, record.get("facets"))
    kind = roster.kind_of(did)
    return BlipFacts(
        uri=uri, author_did=did, author_kind=kind, author_agent=roster.by_did.get(did), at=at, root=root,
        parent=parent, mentioned_dids=text.mentioned_dids, mentioned_handles=text.mentioned_handles, tags=text.tags,
        words=words(content), content=content, chain_depth=chain_depth(kind, parent_depth), room=room,
    )
