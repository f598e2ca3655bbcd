"""Who and what a blip's text names: mentions and tags, from ATProto richtext facets and from plain text.

thought.stream clients write plain text; Bluesky-style clients add facets
(`app.bsky.richtext.facet#mention` with a DID, `#tag` with a tag). Both count. Values from the network
are taken only when they have the right shape (a DID, a handle, a short tag), never trusted further.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from blipflow.identifiers import HANDLE_PATTERN, is_did, is_handle

MENTION_FEATURE = "app.bsky.richtext.facet#mention"
TAG_FEATURE = "app.bsky.richtext.facet#tag"
MAX_TAG_LENGTH = 64

# `@handle` not inside a word or an email address; `#tag` not inside a word, and not only digits.
MENTION_TEXT = re.compile(rf"(?<![\w@.])@({HANDLE_PATTERN})")
TAG_TEXT = re.compile(r"(?<![\w#&])#(\w*[^\W\d_]\w*)")
WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True, slots=True)
class Richtext:
    mentioned_dids: frozenset[str]
    mentioned_handles: frozenset[str]  # lowercase
    tags: frozenset[str]  # lowercase, without '#'


def richtext(content: str, facets: object) -> Richtext:
    dids: set[str] = set()
    handles = {match.group(1).lower() for match in MENTION_TEXT.finditer(content)}
    tags = {match.group(1).lower() for match in TAG_TEXT.finditer(content) if len(match.group(1)) <= MAX_TAG_LENGTH}
    for feature in facet_features(facets):
        kind = feature.get("$type")
        if kind == MENTION_FEATURE and is_did(feature.get("did")):
            dids.add(feature["did"])
        elif kind == TAG_FEATURE and isinstance(feature.get("tag"), str):
            tag = feature["tag"].lstrip("#").lower()
            if 0 < len(tag) <= MAX_TAG_LENGTH and not any(char.isspace() for char in tag):
                tags.add(tag)
    return Richtext(frozenset(dids), frozenset(handle for handle in handles if is_handle(handle)), frozenset(tags))


def facet_features(facets: object) -> list[Mapping[str, object]]:
    """The features of well-formed facets; anything else in the list is ignored."""
    if not isinstance(facets, list):
        return []
    features = []
    for facet in facets:
        if isinstance(facet, Mapping) and isinstance(facet.get("features"), list):
            features += [feature for feature in facet["features"] if isinstance(feature, Mapping)]
    return features


def words(content: str) -> frozenset[str]:
    """The content's words, lowercase: what a skill named in plain text is matched against."""
    return frozenset(match.group().lower() for match in WORD.finditer(content))
