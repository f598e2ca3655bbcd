"""Relevance: how fit an agent is to answer a blip — addressed > answered > skills/tags match > took part
in the thread > recency — as a key to sort candidates by (best first), and whether it is relevant at all."""

from __future__ import annotations

from blipflow.coordination.addressing import Address
from blipflow.coordination.facts import BlipFacts
from blipflow.coordination.participants import Participant
from blipflow.coordination.state import AgentState, ThreadState

MENTIONED, ANSWERED, MATCHES_SKILLS, TOOK_PART, UNRELATED = range(5)


def skill_matches(agent: Participant, facts: BlipFacts) -> int:
    """Skills and tags of the agent the blip names: as a tag, or in its words (every part of a
    multi-word skill such as `machine-learning`)."""
    count = 0
    for topic in agent.topics:
        if topic in facts.tags:
            count += 1
        else:
            parts = topic.replace("_", "-").replace(" ", "-").split("-")
            if all(part in facts.words for part in parts if part):
                count += 1
    return count


def fit(agent: Participant, position: int, facts: BlipFacts, address: Address | None, thread: ThreadState,
        history: AgentState) -> tuple:
    """The sort key, best first: tier (MENTIONED … UNRELATED), more matching skills, spoke later in the thread,
    chosen less recently, roster position."""
    matches = skill_matches(agent, facts) if agent.topics else 0
    if address is Address.MENTIONED:
        tier = MENTIONED
    elif address is Address.ANSWERED:
        tier = ANSWERED
    elif matches:
        tier = MATCHES_SKILLS
    elif agent.name in thread.spoke_at:
        tier = TOOK_PART
    else:
        tier = UNRELATED
    spoke = thread.spoke_at.get(agent.name, float("-inf"))
    return (tier, -matches, -spoke, history.selected_at, position)
