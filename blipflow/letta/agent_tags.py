"""An agent's topics from its tags at Letta (`letta_tags: true`): the same tags Letta's own
`send_message_to_agents_matching_tags` routes by, so one set of tags serves both."""

from __future__ import annotations

import logging

from blipflow.config import AgentConfig
from blipflow.letta.gateway import AgentCallFailed, LettaGateway

log = logging.getLogger(__name__)


def with_letta_tags(agents: list[AgentConfig], gateway: LettaGateway) -> list[AgentConfig]:
    """The agents, each that asks for it with its Letta tags added to its `tags` (as topics: lowercase,
    without '#', spaces as '-'). A Letta that cannot say leaves the configured tags, with a warning."""
    tagged = []
    for agent in agents:
        if agent.letta_tags:
            try:
                found = gateway.tags_of(agent.name, agent.agent_id)
            except AgentCallFailed as failure:
                log.warning("agent %s: its tags at Letta could not be read (%s); using the configured ones",
                            agent.name, failure.reason)
                found = []
            topics = [topic for topic in (as_topic(tag) for tag in found) if topic]
            agent = agent.model_copy(update={"tags": list(dict.fromkeys([*agent.tags, *topics]))})
        tagged.append(agent)
    return tagged


def as_topic(tag: str) -> str:
    return "-".join(tag.strip().lstrip("#").lower().split())
