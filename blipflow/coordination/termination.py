"""Termination per thread: the bounds that close a thread to agents or stop one agent in it.

Hard bounds hold even against addressing (a mention cannot reopen a closed thread); soft bounds
(no repeat speaker, cool-down) only keep an agent from being chosen by a strategy.
"""

from __future__ import annotations

from blipflow.coordination.decisions import Reason
from blipflow.coordination.facts import BlipFacts
from blipflow.coordination.participants import Participant
from blipflow.coordination.state import ThreadState
from blipflow.model.coordination_policy import CoordinationPolicy

Bound = tuple[Reason, str]  # the reason and a line for people


def thread_bound(policy: CoordinationPolicy, thread: ThreadState, agent: str) -> Bound | None:
    """What keeps `agent` from being handed anything more in this thread, if anything does."""
    if thread.closed is not None:
        return Reason.THREAD_CLOSED, thread.closed
    turns = thread.turns.get(agent, 0)
    if policy.max_turns_per_agent is not None and turns >= policy.max_turns_per_agent:
        return Reason.AGENT_TURNS_USED, f"{agent} spoke {turns} times in this thread (max {policy.max_turns_per_agent})"
    return None


def agent_bound(policy: CoordinationPolicy, facts: BlipFacts, agent: Participant) -> Bound | None:
    """What the agent's own settings and the policy's chain bound say against this blip, if anything."""
    if agent.wanted_dids and facts.author_did not in agent.wanted_dids:
        return Reason.AUTHOR_NOT_WANTED, f"{agent.name} listens only to {len(agent.wanted_dids)} authors"
    deepest = min(policy.max_chain_depth, agent.max_chain_depth or policy.max_chain_depth)
    if facts.chain_depth >= deepest:
        return Reason.CHAIN_TOO_DEEP, f"agent-only chain of {facts.chain_depth} (max {deepest})"
    return None


def soft_bound(policy: CoordinationPolicy, thread: ThreadState, agent: str, now: float) -> Bound | None:
    if not policy.allow_repeat_speaker and thread.last_agent_speaker == agent:
        return Reason.REPEAT_SPEAKER, f"{agent} was the last agent to speak in this thread"
    spoke = thread.spoke_at.get(agent)
    if policy.cooldown_seconds and spoke is not None and now - spoke < policy.cooldown_seconds:
        return Reason.COOLING_DOWN, f"{agent} spoke {now - spoke:.0f} s ago (cool-down {policy.cooldown_seconds:g} s)"
    return None


def after_blip(policy: CoordinationPolicy, thread: ThreadState, facts: BlipFacts) -> ThreadState:
    """The thread once this blip is in it: agents' turns counted, and closed when a bound is reached."""
    closed = thread.closed
    if closed is None and policy.termination_token and policy.termination_token in facts.content:
        closed = f"{facts.uri} said the termination token"
    active_at = max(thread.active_at, facts.at)
    if not facts.by_agent:
        return ThreadState(thread.root, thread.agent_turns, thread.turns, thread.spoke_at, thread.last_agent_speaker,
                           closed, thread.floor, active_at)
    agent_turns = thread.agent_turns + 1
    if closed is None and policy.max_agent_turns is not None and agent_turns >= policy.max_agent_turns:
        closed = f"{agent_turns} agent turns (max {policy.max_agent_turns})"
    speaker = facts.author_agent
    if speaker is None:  # another known agent: it counts, and it spoke last
        return ThreadState(thread.root, agent_turns, thread.turns, thread.spoke_at, None, closed, thread.floor, active_at)
    return ThreadState(thread.root, agent_turns, {**thread.turns, speaker: thread.turns.get(speaker, 0) + 1},
                       {**thread.spoke_at, speaker: facts.at}, speaker, closed, thread.floor, active_at)
