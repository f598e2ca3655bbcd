"""Addressing: which of our agents a blip speaks to — those it mentions, and the one whose blip it answers.

Addressing wins over every strategy: an addressed agent is handed the blip unless it is its own or a
hard bound (termination, chain depth) says no.
"""

from __future__ import annotations

from enum import Enum

from blipflow.coordination.facts import BlipFacts
from blipflow.coordination.participants import Roster


class Address(str, Enum):
    MENTIONED = "mentioned"
    ANSWERED = "answered"  # the blip replies to one of the agent's blips


def addressed_agents(facts: BlipFacts, roster: Roster) -> dict[str, Address]:
    """Agent name → how the blip addresses it; a mention counts over an answer. The author is left out."""
    addressed: dict[str, Address] = {}
    answered = roster.by_did.get(facts.parent_did) if facts.parent_did else None
    if answered is not None:
        addressed[answered] = Address.ANSWERED
    for did in facts.mentioned_dids:
        if did in roster.by_did:
            addressed[roster.by_did[did]] = Address.MENTIONED
    for handle in facts.mentioned_handles:
        if handle in roster.by_handle:
            addressed[roster.by_handle[handle]] = Address.MENTIONED
    addressed.pop(facts.author_agent or "", None)
    return addressed
