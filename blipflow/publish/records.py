"""What a reply goes out as: its blip records, their record keys, and the parts of a long reply.

Everything here is a pure function of the reply as the outbox holds it, so posting it again after a
crash builds the very same records under the very same keys — which is what lets the PDS tell us
that a record is already there (see `blipflow.publish`).
"""

from __future__ import annotations

import hashlib
from typing import Any

from blipflow.model.blip import BLIP_COLLECTION
from blipflow.model.refs import Ref
from blipflow.model.tids import tid

# Parts of one reply and replies of one window get their own microseconds after the reply's time;
# a window's replies are this many microseconds apart, so that is also the most parts a reply may have.
MAX_PARTS = 1000


def record_key(reply_id: str, created_us: int, position: int, part: int) -> str:
    """The key of one part of a reply, the same every time it is computed.

    Its time is the reply's, plus the reply's position in its window (in milliseconds) and the part
    (in microseconds), so the parts of a window's replies never share a time; its clock id comes from
    the reply's id, so replies of the same account that happen to share a microsecond still differ."""
    if not 0 <= part < MAX_PARTS:
        raise ValueError(f"reply {reply_id}: part {part} is beyond the {MAX_PARTS} parts a reply may have")
    clock_id = int.from_bytes(hashlib.sha256(reply_id.encode()).digest()[:2], "big") % 1024
    return tid(created_us + position * MAX_PARTS + part, clock_id)


def split_content(content: str, max_length: int) -> list[str]:
    """The reply in parts of at most `max_length` characters, in order; nothing is left out.

    Parts end at a paragraph, line, sentence or word break where one is near the limit (the
    whitespace of that break is where one part ends and the next begins); a single word longer than
    the limit is cut inside."""
    text = content.strip()
    parts: list[str] = []
    while len(text) > max_length:
        cut = best_break(text, max_length)
        parts.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    parts.append(text)
    return parts


def best_break(text: str, max_length: int) -> int:
    window = text[: max_length + 1]  # a break right after the limit still lets the part end at it
    for separator in ("\n\n", "\n", ". ", "! ", "? ", " "):
        at = window.rfind(separator)
        if at >= max_length // 2:  # a part is not made much shorter than it may be
            return at + len(separator.rstrip())  # a sentence keeps its full stop
    return max_length


def blip_record(
    content: str, created_at: str, *, parent: Ref | None = None, root: Ref | None = None, answers: list[Ref] = ()
) -> dict[str, Any]:
    """A `stream.thought.blip` record; `reply` threads it (readers that do not know it ignore it), and
    `answers` lists every blip it answers when there is more than its parent."""
    record: dict[str, Any] = {"$type": BLIP_COLLECTION, "content": content, "createdAt": created_at}
    if parent is not None:
        record["reply"] = {"root": (root or parent).as_record(), "parent": parent.as_record()}
    if len(answers) > 1:
        record["answers"] = [ref.as_record() for ref in answers]
    return record

