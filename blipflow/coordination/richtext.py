"""Who and what a blip's plain text names: `@handle` mentions, `#tags`, and its words.

Mentions and tags written as ATProto richtext facets are read with the record (blipflow.control.facts);
thought.stream clients mostly write plain text, which counts too. Values are taken only when they have the
right shape (a handle, a short tag).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from blipflow.model.identifiers import HANDLE_PATTERN, is_handle

MAX_TAG_LENGTH = 64

# `@handle` not inside a word or an email address; `#tag` not inside a word, and not only digits.
MENTION_TEXT = re.compile(rf"(?<![\w@.])@({HANDLE_PATTERN})")
TAG_TEXT = re.compile(r"(?<![\w#&])#(\w*[^\W\d_]\w*)")
WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True, slots=True)
class PlainText:
    mentioned_handles: frozenset[str]  # lowercase
    tags: frozenset[str]  # lowercase, without '#'
    words: frozenset[str]  # lowercase: what a skill named in plain text is matched against


def plain_text_names(content: str) -> PlainText:
    handles = {match.group(1).lower() for match in MENTION_TEXT.finditer(content)}
    tags = {match.group(1).lower() for match in TAG_TEXT.finditer(content) if len(match.group(1)) <= MAX_TAG_LENGTH}
    return PlainText(frozenset(handle for handle in handles if is_handle(handle)), frozenset(tags),
                     frozenset(match.group().lower() for match in WORD.finditer(content)))


def facet_tags(tags: tuple[str, ...]) -> frozenset[str]:
    """Tags from facets as plain-text tags are kept: lowercase, one word, not too long."""
    cleaned = (tag.lstrip("#").lower() for tag in tags)
    return frozenset(tag for tag in cleaned if 0 < len(tag) <= MAX_TAG_LENGTH and not any(c.isspace() for c in tag))
