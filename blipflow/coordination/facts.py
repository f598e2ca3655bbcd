"""The facts a decision needs about one blip: the control plane's facts of its record (thread, mentions
and tags from facets, content) with what coordination adds — the author's kind, mentions and tags in
plain text, the words skills are matched against, and the agent-only chain it ends.

Chain depth counts every agent we know of, ours and others': an outside agent ping-ponging with ours
deepens the chain like one of our own would.
"""

from __future__ import annotations

from dataclasses import dataclass

from blipflow.control.facts import BlipFacts as StoredFacts
from blipflow.control.facts import facts_of
from blipflow.coordination.participants import AuthorKind, Roster
from blipflow.coordination.richtext import facet_tags, plain_text_names


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


def blip_facts(
    stored: StoredFacts, *, at: float, roster: Roster, parent_depth: int | None = None, room: str | None = None,
) -> BlipFacts:
    """The facts of a blip as the control plane read its record; `parent_depth` is the chain depth of the
    blip it answers, if known."""
    content = stored.content or ""
    text = plain_text_names(content)
    kind = roster.kind_of(stored.did)
    parent = stored.parent_uri
    return BlipFacts(
        uri=stored.uri, author_did=stored.did, author_kind=kind, author_agent=roster.by_did.get(stored.did), at=at,
        root=stored.root_uri or parent or stored.uri, parent=parent, mentioned_dids=frozenset(stored.mentions),
        mentioned_handles=text.mentioned_handles, tags=text.tags | facet_tags(stored.tags), words=text.words,
        content=content, chain_depth=chain_depth(kind, parent_depth), room=room,
    )


def record_facts(uri: str, did: str, record: object, *, at: float, roster: Roster,
                 parent_depth: int | None = None) -> BlipFacts:
    """The facts of a `stream.thought.blip` record as the network sent it (read by blipflow.control.facts)."""
    return blip_facts(facts_of(uri, did, int(at * 1_000_000), None, record), at=at, roster=roster,
                      parent_depth=parent_depth)
