"""A window of blips as the messages a Letta agent receives.

Each blip is its own user message, in thought.stream's structure:

    <blip>
    <metadata>
    author: alice.bsky.social
    displayName: Alice
    did: did:plc:…
    createdAt: 2025-09-10T22:27:13.262Z
    inReplyTo: at://did:plc:…/stream.thought.blip/…      (a reply only: what it answers stays visible)
    </metadata>
    <content>
    …
    </content>
    </blip>

and the context instructions lead the first. Without metadata (`include_metadata: false`) a blip is the
agent's `prompt_template` alone. Content and names are data from the network: a tag of this structure
inside them is escaped (`&lt;content>`), and a content line that looks like a header line gains a
backslash, so no blip can close its own content or pose as another author inside the window.
"""

from __future__ import annotations

import re

from blipflow.config import AgentConfig
from blipflow.model.blip import Blip
from blipflow.model.formatting import created_at_text, one_line, plain_text

HEADER_KEYS = ("author", "displayName", "did", "createdAt", "inReplyTo")
STRUCTURE_TAGS = ("blip", "metadata", "content")
LOOKS_LIKE_HEADER = re.compile(rf"^([ \t]*)(\\*(?:{'|'.join(HEADER_KEYS)})\s*:)", re.MULTILINE)
LOOKS_LIKE_TAG = re.compile(rf"<(\s*/?\s*(?:{'|'.join(STRUCTURE_TAGS)})\b)", re.IGNORECASE)


def escape_tags(text: str) -> str:
    """`<content>`, `</blip>` and the like (any case, any spacing) lose their `<` to `&lt;`."""
    return LOOKS_LIKE_TAG.sub(r"&lt;\1", text)


def escape_content(content: str) -> str:
    r"""Tags of the structure are escaped, and `author: x` at the start of a content line (after any
    indentation) becomes `\author: x` — an already escaped one gains one more backslash — so only the
    metadata we write starts a line with a header key."""
    lines = plain_text(content)  # \r, U+2028 and the like break lines for readers too; NUL, ESC show as escapes
    return LOOKS_LIKE_HEADER.sub(lambda match: match.group(1) + "\\" + match.group(2), escape_tags(lines))


def shown(name: str) -> str:
    """A name as one line with no tag of the structure in it."""
    return escape_tags(one_line(name))


def blip_text(agent: AgentConfig, blip: Blip) -> str:
    author = shown(blip.author)
    content = escape_content(blip.content)
    if not agent.include_metadata:
        return agent.prompt_template.format(
            handle=author, display_name=shown(blip.display_name or blip.author), did=blip.did, content=content,
        )
    metadata = [f"author: {author}"]
    if blip.display_name:
        metadata.append(f"displayName: {shown(blip.display_name)}")
    metadata += [f"did: {blip.did}", f"createdAt: {created_at_text(blip)}"]
    if blip.reply_parent_uri:
        metadata.append(f"inReplyTo: {shown(blip.reply_parent_uri)}")
    return "\n".join(["<blip>", "<metadata>", *metadata, "</metadata>", "<content>", content, "</content>", "</blip>"])


def window_messages(agent: AgentConfig, blips: list[Blip]) -> list[dict[str, str]]:
    """Letta `messages` for one call: one user message per blip, instructions leading the first."""
    texts = [blip_text(agent, blip) for blip in blips]
    if texts and agent.context_instructions:
        texts[0] = f"{agent.context_instructions}\n\n{texts[0]}"
    return [{"role": "user", "content": text} for text in texts]
