"""Blips as text for people (monitor, history) and as JSON lines for programs."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import orjson

from blipflow.model.blip import Blip

# What is left to hide once line breaks are newlines: C0 controls but tab and newline, DEL, C1 controls.
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def counted(number: int, thing: str) -> str:
    """`1 blip`, `2 blips`, `1 reply`, `3 replies`."""
    if number == 1:
        return f"1 {thing}"
    return f"{number} {thing[:-1]}ies" if thing.endswith("y") else f"{number} {thing}s"


def created_at_text(blip: Blip) -> str:
    """The blip's createdAt as ATProto writes dates; a blip without one (its date could not be read) shows
    when the stream saw it."""
    stamp = blip.created_at or datetime.fromtimestamp(blip.time_us / 1e6, timezone.utc)
    return stamp.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def plain_text(text: str) -> str:
    r"""Text from the network as lines a terminal or an agent can take: every kind of line break (\r,
    U+2028 and the like) becomes a newline, and any other control character (NUL, ESC, …) shows as an
    escape such as `\x1b` instead of acting on the terminal (or, for NUL, breaking Letta's database)."""
    lines = "\n".join(text.splitlines())
    return CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", lines)


def one_line(text: str) -> str:
    """Names are their owners' to choose: they may not start a line of their own."""
    return " ".join(plain_text(text).split())


def format_blip(blip: Blip) -> str:
    """The structured form thought.stream shows a blip in: header lines, a blank line, the content."""
    lines = [f"author: {one_line(blip.author)}"]
    if blip.display_name:
        lines.append(f"displayName: {one_line(blip.display_name)}")
    lines += [f"did: {blip.did}", f"createdAt: {created_at_text(blip)}", "", plain_text(blip.content)]
    return "\n".join(lines)


def blip_json(blip: Blip) -> str:
    return orjson.dumps(
        {
            "uri": blip.uri,
            "did": blip.did,
            "handle": blip.handle,
            "displayName": blip.display_name,
            "createdAt": created_at_text(blip),
            "time_us": blip.time_us,
            "content": blip.content,
            "replyTo": blip.reply_parent_uri,
        }
    ).decode()
