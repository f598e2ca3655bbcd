"""What an agent was handed, read back: the content of a blip in thought.stream's `<blip>` structure."""

from __future__ import annotations


def content_of(text: str) -> str:
    """The content of the (last) blip in `text`, as the agent read it."""
    return text.rsplit("<content>\n", 1)[1].split("\n</content>", 1)[0].strip()
