"""Coordination's place in the control plane: how far it has decided, the state it carries on with, the
blips it has yet to decide, and its decisions written into the ledger.

Coordination decides each blip for every agent at once, in the order blips were fed (`seq`). Its position
and state are one row, written in the transaction that writes the decisions they led to, and only if
nobody wrote that row since it was read: when two dispatch processes coordinate the same blips, the
second finds the row changed and keeps nothing of its round.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import String, bindparam, func, select, text, update
from sqlalchemy.exc import IntegrityError

from blipflow.control import tables
from blipflow.control.engine import ControlPlane, duplicate_key
from blipflow.control.facts import BlipFacts
from blipflow.control.tables import now

NAME = "default"
# Chains are followed only this far back; the policy's limits are far below it.
MAX_CHAIN_DEPTH_SEEN = 32

# Each new blip with the agent-only chain it ends: agents are the authors in `agents`, ours and others.
CHAINS = text("""
WITH RECURSIVE fresh AS (
    SELECT b.seq, b.uri, b.did, b.parent_uri FROM blips b
    WHERE b.seq > :after AND NOT b.deleted AND b.content IS NOT NULL
    ORDER BY b.seq LIMIT :limit
),
chain(uri, parent, depth) AS (
    SELECT uri, parent_uri, 1 FROM fresh WHERE did IN :agents
    UNION ALL
    SELECT chain.uri, parent.parent_uri, chain.depth + 1
    FROM chain JOIN blips parent ON parent.uri = chain.parent
    WHERE parent.did IN :agents AND chain.depth < :deepest
)
SELECT fresh.seq, coalesce(max(chain.depth), 0) AS chain_depth
FROM fresh LEFT JOIN chain ON chain.uri = fresh.uri
GROUP BY fresh.seq
""").bindparams(bindparam("agents", expanding=True, type_=String()))


@dataclass(frozen=True)
class Position:
    through_seq: int  # every blip up to it is decided, or waits on a thread's floor (in `state`)
    version: int  # 0: not stored yet
    state: dict | None  # coordination's state, as `CoordinationState.as_dict` makes it; None: as last read


@dataclass(frozen=True)
class NewBlip:
    seq: int
    facts: BlipFacts
    stored_at: datetime  # its arrival, as coordination weighs it
    chain_depth: int  # agents' blips in a row ending here, this one included


@dataclass(frozen=True)
class Decided:
    """One final decision for the ledger: handed (with `handed_for`) or skipped (with `skip_reason`)."""

    agent: str
    blip_uri: str
    handed_for: str | None
    skip_reason: str | None
    strategy: str
    detail: str


class Coordination:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    def position(self, start_before: datetime, known_version: int | None = None) -> Position:
        """Where coordination stands; the first time, just before the blips stored from `start_before` on
        (or, after a takeover, just after the lowest point the previous layout's agents had decided to).
        The state is read only when its version is not `known_version` (it grows with the conversation)."""
        position = tables.CoordinationPosition
        with self.plane.reading() as session:
            row = session.execute(select(position.through_seq, position.version)
                                  .where(position.name == NAME)).first()
            if row is not None:
                state = None if row.version == known_version else session.execute(
                    select(position.state).where(position.name == NAME)).scalar_one()
                return Position(row.through_seq, row.version, state)
            taken_over = session.execute(select(func.min(tables.AgentProgress.decided_through))).scalar_one()
            if taken_over is None:
                blip = tables.Blip
                taken_over = session.execute(select(func.coalesce(func.max(blip.seq), 0))
                                             .where(blip.stored_at < start_before)).scalar_one()
        return Position(taken_over, 0, {})

    def new_blips(self, after_seq: int, agent_dids: Sequence[str], limit: int) -> list[NewBlip]:
        """The blips fed after `after_seq` that there is something to hand (not deleted, with text), in order."""
        with self.plane.reading() as session:
            depths = dict(session.execute(CHAINS, {"after": after_seq, "limit": limit, "agents": list(agent_dids),
                                                   "deepest": MAX_CHAIN_DEPTH_SEEN}).all())
            if not depths:
                return []
            rows = session.scalars(select(tables.Blip).where(tables.Blip.seq.in_(depths))
                                   .order_by(tables.Blip.seq)).all()
        return [NewBlip(row.seq, facts_of_row(row), row.stored_at, depths[row.seq]) for row in rows]

    def pending(self, through_seq: int) -> int:
        """Blips fed that coordination has yet to decide (a blip waiting on a floor is decided already)."""
        blip = tables.Blip
        with self.plane.reading() as session:
            return session.execute(select(func.count()).where(blip.seq > through_seq, blip.deleted.is_(False),
                                                              blip.content.is_not(None))).scalar_one()

    def record(self, decided: Sequence[Decided], read: Position, through_seq: int, state: dict) -> bool:
        """Write the decisions and the position they lead to, unless another process moved the position
        since `read` was read (then nothing is written and False is returned). A pair the ledger decided
        already (before coordination, in a takeover) keeps that decision."""
        moment = now()
        try:
            with self.plane.writing() as session:
                position = tables.CoordinationPosition
                if read.version == 0:
                    write = (self.plane.upsert(position)
                             .values(name=NAME, through_seq=through_seq, version=1, state=state, updated_at=moment)
                             .on_conflict_do_nothing(index_elements=["name"]))
                else:
                    write = (update(position).where(position.name == NAME, position.version == read.version)
                             .values(through_seq=through_seq, version=read.version + 1, state=state,
                                     updated_at=moment))
                if session.execute(write.returning(position.name)).first() is None:
                    raise LostRace
                if decided:
                    insert = self.plane.upsert(tables.Delivery).on_conflict_do_nothing(index_elements=["agent", "blip_uri"])
                    session.execute(insert, [
                        {"agent": row.agent, "blip_uri": row.blip_uri, "handed_for": row.handed_for,
                         "skip_reason": row.skip_reason, "strategy": row.strategy, "detail": row.detail or None,
                         "decided_at": moment} for row in decided])
        except LostRace:
            return False
        except IntegrityError as error:
            if not duplicate_key(error):
                raise
            return False
        return True


class LostRace(Exception):
    """Another process wrote coordination's position first: this round's writes are rolled back."""


def facts_of_row(row: tables.Blip) -> BlipFacts:
    return BlipFacts(row.uri, row.did, row.time_us, row.cid, row.deleted, row.created_at, row.content, row.root_uri,
                     row.root_cid, row.parent_uri, row.parent_cid, tuple(row.mentions), tuple(row.tags),
                     tuple(row.refs))
