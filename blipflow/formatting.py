"""Blips as text for people (monitor, history) and as JSON lines for programs."""

from __future__ import annotations

from datetime import datetime, timezone

import orjson

from blipflow.blip import Blip


def created_at_text(blip: Blip) -> str:
    stamp = blip.created_at or datetime.fromtimestamp(blip.time_us / 1e6, timezone.utc)
    return stamp.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_blip(blip: Blip) -> str:
    """The structured form thought.stream shows a blip in: header lines, a blank line, the content."""
    lines = [f"author: {blip.author}"]
    if blip.display_name:
        lines.append(f"displayName: {blip.display_name}")
    lines += [f"did: {blip.did}", f"createdAt: {created_at_text(blip)}", "", blip.content]
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
