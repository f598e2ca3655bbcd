"""`blipflow why <at-uri>`: how one blip was decided for each agent, and why — from the ledger, and from
coordination's state for a blip still waiting on a thread's floor."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from blipflow.control.blips import Blips
from blipflow.control.coordination import Coordination
from blipflow.control.engine import ControlPlane
from blipflow.control.ledger import DecisionRecord, Ledger
from blipflow.coordination.state import state_from_dict


class UnknownBlip(Exception):
    """The blip is not in the control plane: one line naming it."""


@dataclass(frozen=True)
class Verdict:
    agent: str
    outcome: str  # handed | skipped | waiting | undecided
    reason: str  # the ledger's word: mentioned, selected, not_selected, own_blip, … or why nothing is decided yet
    strategy: str | None = None
    detail: str | None = None
    decided_at: str | None = None
    window: str | None = None
    window_state: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def why(plane: ControlPlane, uri: str, agents: list[str]) -> list[Verdict]:
    """A verdict for each of `agents` (and any other agent the ledger decided the blip for)."""
    blip = Blips(plane).facts(uri)
    if blip is None:
        raise UnknownBlip(f"blip {uri} is not in the control plane (not ingested yet, or not a stream.thought.blip)")
    decided = {record.agent: record for record in Ledger(plane).decisions_of(uri)}
    position = Coordination(plane).position(datetime.now(timezone.utc))
    waiting = waiting_on_floors(position.state or {}, uri)
    verdicts = []
    for agent in [*agents, *sorted(set(decided) - set(agents))]:
        record = decided.get(agent)
        if record is not None:
            verdicts.append(verdict_of(record))
        elif agent in waiting:
            verdicts.append(Verdict(agent, "waiting", "queued", detail=f"next in line on the floor opened by {waiting[agent]}"))
        elif blip.deleted or blip.content is None:
            verdicts.append(Verdict(agent, "undecided", "nothing to hand: deleted, or not text"))
        elif position.version == 0 or (blip.seq is not None and blip.seq > position.through_seq):
            verdicts.append(Verdict(agent, "undecided", "not coordinated yet (dispatch decides it in its next round)"))
        else:
            verdicts.append(Verdict(agent, "undecided", "coordinated before the agent took part"))
    return verdicts


def verdict_of(record: DecisionRecord) -> Verdict:
    outcome, reason = ("skipped", record.skip_reason) if record.skip_reason else ("handed", record.handed_for or "sent")
    return Verdict(record.agent, outcome, reason, record.strategy, record.detail,
                   record.decided_at.isoformat(timespec="seconds"), record.window_id, record.window_state)


def waiting_on_floors(state: dict, uri: str) -> dict[str, str]:
    """agent → the blip that opened the floor on which it waits to be handed `uri`."""
    if not state:
        return {}
    found = {}
    for thread in state_from_dict(state).threads.values():
        if thread.floor is not None:
            for agent, uris in thread.floor.waiting.items():
                if uri in uris:
                    found[agent] = thread.floor.about
    return found


def render(uri: str, verdicts: list[Verdict]) -> str:
    lines = [uri]
    for verdict in verdicts:
        line = f"  {verdict.agent}: {verdict.outcome} ({verdict.reason}"
        line += f", by {verdict.strategy})" if verdict.strategy else ")"
        if verdict.detail:
            line += f": {verdict.detail}"
        if verdict.window:
            line += f"; window {verdict.window} {verdict.window_state}"
        lines.append(line)
    return "\n".join(lines)
