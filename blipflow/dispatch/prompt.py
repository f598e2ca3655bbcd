"""A window of blips as the messages a Letta agent receives.

Each blip is its own user message, in the structured form thought.stream uses (header lines, a blank
line, the content through the agent's prompt template); the context instructions lead the first.
Content is data from the network: a content line that looks like one of our header lines is escaped,
so no blip can pose as another author inside the window.
"""

from __future__ import annotations

import re

from blipflow.config import AgentConfig
from blipflow.model.blip import Blip
from blipflow.model.formatting import created_at_text, one_line, plain_text

HEADER_KEYS = ("author", "displayName", "did", "createdAt")
LOOKS_LIKE_HEADER = re.compile(rf"^([ \t]*)(\\*(?:{'|'.join(HEADER_KEYS)})\s*:)", re.MULTILINE)


def escape_content(content: str) -> str:
    r"""`author: x` at the start of a content line (after any indentation) becomes `\author: x`, and
    an already escaped one gains one more backslash, so only the header we write starts a line with a
    header key."""
    lines = plain_text(content)  # \r, U+2028 and the like break lines for readers too; NUL, ESC show as escapes
    return LOOKS_LIKE_HEADER.sub(lambda match: match.group(1) + "\\" + match.group(2), lines)


def blip_text(agent: AgentConfig, blip: Blip) -> str:
    author = one_line(blip.author)
    body = agent.prompt_template.format(
        handle=author, display_name=one_line(blip.display_name or blip.author), did=blip.did,
        content=escape_content(blip.content),
    )
    if not agent.include_metadata:
        return body
    header = [f"author: {author}"]
    if blip.display_name:
        header.append(f"displayName: {one_line(blip.display_name)}")
    header += [f"did: {blip.did}", f"createdAt: {created_at_text(blip)}"]
    return "\n".join(header) + "\n\n" + body


def window_messages(agent: AgentConfig, blips: list[Blip]) -> list[dict[str, str]]:
    """Letta `messages` for one call: one user message per blip, instructions leading the first."""
    texts = [blip_text(agent, blip) for blip in blips]
    if texts and agent.context_instructions:
        texts[0] = f"{agent.context_instructions}\n\n{texts[0]}"
    return [{"role": "user", "content": text} for text in texts]
