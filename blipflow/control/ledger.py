"""The delivery ledger: every (agent, blip) is decided once, either handed to the agent (and then sent in
exactly one window) or skipped, and every attempt at a window is counted on it. Coordination writes the
decisions (`blipflow.control.coordination`); dispatch opens windows of what was handed.

A window is recorded (with its blips) before it is sent, marked `sending` just before the call, and
finished with its replies — which go to the outbox in the same transaction — or failed, quarantined,
retried or dropped. Deciding is one transaction keyed by (agent, blip): when two processes decide the same
blip for the same agent, the database refuses the second, whose decision then leaves no trace at all.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Row, bindparam, case, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from blipflow.control import tables
from blipflow.control.blips import MESSAGE_COLUMNS, blip_of, blips_of_window
from blipflow.control.engine import ControlPlane, duplicate_key
from blipflow.control.outbox import REPLIES_SINCE
from blipflow.control.tables import now
from blipflow.model.blip import Blip, Candidate
from blipflow.model.ledger import Window, WindowRecord

log = logging.getLogger(__name__)

# A delivery handed to its agent and not yet in a window (the partial index ix_deliveries_unsent).
UNSENT = (tables.DELIVERIES.c.window_id.is_(None), tables.DELIVERIES.c.skip_reason.is_(None))


@dataclass(frozen=True)
class AgentFigures:
    """What the ledger holds of one agent's windows, for `blipflow status`."""

    answered: int = 0
    silent: int = 0
    failed: int = 0
    quarantined: int = 0
    waiting: int = 0  # pending or being sent
    calls: int = 0  # attempts that ended
    failed_calls: int = 0
    retries: int = 0  # attempts after a window's first
    letta_ms_p50: float | None = None  # over answered and silent windows
    letta_ms_p95: float | None = None
    last_finished_at: datetime | None = None




@dataclass(frozen=True)
class DecisionRecord:
    """How one blip was decided for one agent, as `blipflow why` shows it."""

    agent: str
    handed_for: str | None  # why it was handed (None with a window: decided before coordination kept reasons)
    skip_reason: str | None
    strategy: str | None
    detail: str | None
    decided_at: datetime
    window_id: str | None
    window_state: str | None


@dataclass(frozen=True)
class LaneState:
    """What an agent's lane needs to go on: the window it left under way, else the blips handed to it that no
    window holds yet (read together, in one transaction: a lane reads this before each window)."""

    under_way: Window | None
    handed: list[Candidate]
    blips: dict[str, Blip]  # the handed blips by URI, as messages are made of them
    replies_since: int  # the replies the agent gave since the moment asked for (none counted with a window under way)


@dataclass(frozen=True)
class LaneQuery:
    """What a lane asks before each window: `agent`'s oldest window in the states `under_way`, else up to
    `limit` blips handed to it unsent and how many replies it gave since `replies_since` (what dispatch's
    policy weighs)."""

    agent: str
    under_way: list[str]
    limit: int
    replies_since: datetime


@dataclass(frozen=True)
class Opened:
    """A window just opened, and why its blips were handed to its agent."""

    window: Window
    handed_for: str


@dataclass(frozen=True)
class WindowToSend:
    """A window as it is now, with its blips and why they were handed to its agent (`mentioned, selected`)."""

    window: Window
    blips: list[Blip]
    handed_for: str


class Ledger:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    def decide(self, agent: str, skips: Mapping[str, str], window: list[str]) -> str | None:
        """Record skipped blips and, if `window` is not empty, open a pending window for it; one
        transaction, so a blip is never in two windows. Blips coordination handed the agent go into the
        window as they are; others are decided here. Returns the window's id — None also when another
        process decided one of these blips for this agent first (nothing of this decision is kept then)."""
        # Not durable: lost in a power cut, the window was never sent (marking it `sending` is durable, and
        # syncs this commit with it), and its blips are handed to the agent again.
        opened = self._open(agent, skips, window, sent_at=None)
        return None if opened is None else opened.window.id

    def open_sending(self, agent: str, window: list[str]) -> Opened | None:
        """A window of blips handed to `agent`, opened already marked `sending`, for a caller that has made its
        messages and sends it now: one durable write instead of two. None when another process opened one
        of these blips for this agent first."""
        return self._open(agent, {}, window, sent_at=now())

    def _open(self, agent: str, skips: Mapping[str, str], window: list[str], *, sent_at: datetime | None) -> Opened | None:
        window_id = str(uuid.uuid4()) if window else None
        decided = now()
        state = "pending" if sent_at is None else "sending"
        skipped = [{"agent": agent, "blip_uri": uri, "skip_reason": reason, "window_id": None, "decided_at": decided}
                   for uri, reason in skips.items()]

        def opened(connection: Connection) -> Opened | None:
            undecided, reasons = list(window), {}
            if window_id is not None:
                connection.execute(INSERT_WINDOW, {"id": window_id, "agent": agent, "state": state, "size": len(window),
                                                "created_at": decided, "sent_at": sent_at})
                reasons = dict(connection.execute(INTO_WINDOW, {"agent_": agent, "uris": window,
                                                             "window_id_": window_id}).tuples().all())
                undecided = [uri for uri in window if uri not in reasons]
            rows = skipped + [{"agent": agent, "blip_uri": uri, "skip_reason": None, "window_id": window_id,
                               "decided_at": decided} for uri in undecided]
            if rows:
                connection.execute(INSERT_DELIVERY, rows)
            if window_id is None:
                return None
            return Opened(Window(window_id, agent, state, len(window), sent_at),
                          told_reasons(reasons.get(uri) for uri in window))

        try:
            return self.plane.write_together(opened, durable=sent_at is not None)
        except IntegrityError as error:
            if not duplicate_key(error):
                raise
            log.info("agent %s: blips decided by another process meanwhile; deciding again", agent)
            return None

    def handed_unsent(self, agent: str, limit: int) -> list[Candidate]:
        """The blips coordination handed `agent` that no window holds yet, oldest first."""
        with self.plane.reading() as session:
            return handed_unsent(session, agent, limit)

    def lane_state(self, query: LaneQuery) -> LaneState:
        with self.plane.reading() as session:
            return lane_state(session.connection(), query)

    def window_to_send(self, window_id: str) -> WindowToSend | None:
        with self.plane.reading() as session:
            row = session.execute(WINDOW_BY_ID, {"window_id": window_id}).first()
            if row is None:
                return None
            reasons = session.scalars(HANDED_REASONS, {"window_id": window_id}).all()
            return WindowToSend(window_of(row), blips_of_window(session, window_id), told_reasons(reasons))

    def agents_handed_unsent(self) -> set[str]:
        """The agents coordination handed blips that no window holds yet: planning opens windows for these
        alone, with one look at the partial index instead of one per agent."""
        with self.plane.reading() as session:
            return set(session.scalars(select(tables.DELIVERIES.c.agent).where(*UNSENT).distinct()))

    def decisions_of(self, uri: str) -> list[DecisionRecord]:
        """How the blip was decided for each agent it was decided for, with the window it went in."""
        delivery, window = tables.Delivery, tables.Window
        query = (select(delivery, window.state).outerjoin(window, window.id == delivery.window_id)
                 .where(delivery.blip_uri == uri).order_by(delivery.agent))
        with self.plane.reading() as session:
            return [DecisionRecord(row.agent, row.handed_for, row.skip_reason, row.strategy, row.detail,
                                   row.decided_at, row.window_id, state)
                    for row, state in session.execute(query)]

    def decision_counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """Per agent, how many blips were handed to it and skipped, by reason: {agent: {handed|skipped: {reason: n}}}."""
        delivery = tables.Delivery
        query = (select(delivery.agent, delivery.handed_for, delivery.skip_reason, func.count())
                 .group_by(delivery.agent, delivery.handed_for, delivery.skip_reason))
        counts: dict[str, dict[str, dict[str, int]]] = {}
        with self.plane.reading() as session:
            for agent, handed_for, skip_reason, count in session.execute(query):
                outcome, reason = ("skipped", skip_reason) if skip_reason else ("handed", handed_for or "sent")
                counts.setdefault(agent, {"handed": {}, "skipped": {}})[outcome][reason] = count
        return counts

    def window(self, window_id: str) -> Window | None:
        with self.plane.reading() as session:
            row = session.execute(WINDOW_BY_ID, {"window_id": window_id}).first()
        return None if row is None else window_of(row)

    def windows_in(self, states: list[str], agent: str | None = None) -> list[Window]:
        """The windows in `states`, oldest first."""
        query, parameters = (WINDOWS_IN, {"states": states}) if agent is None else \
            (AGENT_WINDOWS_IN, {"states": states, "agent": agent})
        with self.plane.reading() as session:
            rows = session.execute(query, parameters).all()
        return [window_of(row) for row in rows]

    def mark_sending(self, window_id: str) -> None:
        sent_at = now()
        self.plane.write_together(
            lambda connection: connection.execute(MARK_SENDING, {"window_id_": window_id, "sent_at_": sent_at}))

    def finish_window(self, window_id: str, agent: str, replies: list[str], letta_ms: float, *,
                      then: LaneQuery | None = None) -> LaneState | None:
        """The agent answered (or chose silence): its replies go to the outbox with the window's outcome.
        With `then`, the lane's state as it is right after, read in the same transaction: a lane that
        finishes a window and takes its next waits for the control plane once for both."""
        finished = now()

        def finished_with(connection: Connection) -> LaneState | None:
            if replies:
                connection.execute(INSERT_REPLY, [
                    {"id": f"{window_id}:{position}", "window_id": window_id, "agent": agent, "position": position,
                     "content": content, "state": "queued", "created_at": finished}
                    for position, content in enumerate(replies)])
            connection.execute(FINISH_WINDOW, {"window_id_": window_id, "state_": "answered" if replies else "silent",
                                            "finished_at_": finished, "letta_ms_": letta_ms})
            return None if then is None else lane_state(connection, then)

        # Lost in a power cut, the window would still be `sending`: looked up at Letta, as after a crash.
        return self.plane.write_together(finished_with, durable=False)

    def fail_window(self, window_id: str, error: str, *, settled: bool, retry_at: datetime | None = None,
                    strike: bool = False) -> int:
        """A failed attempt: the window stays in the ledger to be sent again, not before `retry_at`. A
        `strike` is a failure of the window's own making; returns how many it has had."""
        window = tables.Window
        with self.plane.writing() as session:
            return session.execute(
                update(window).where(window.id == window_id).values(
                    state="failed", error=error, settled=settled, retry_at=retry_at, attempts=window.attempts + 1,
                    failures=window.failures + 1, strikes=window.strikes + int(strike))
                .returning(window.strikes)).scalar_one()

    def clear_retry_at(self, window_id: str) -> None:
        self._update(window_id, retry_at=None)

    def quarantine_window(self, window_id: str) -> None:
        """Set a failed window aside: its agent goes on with the next, and a person decides (retry or drop)."""
        self._update(window_id, state="quarantined", retry_at=None, finished_at=now())

    def window_records(self, states: list[str]) -> list[WindowRecord]:
        """The windows in `states`, oldest first, as a person reads them."""
        query = select(tables.Window).where(tables.Window.state.in_(states))
        with self.plane.reading() as session:
            rows = session.scalars(query.order_by(tables.Window.created_at, tables.Window.id)).all()
        return [record_of(row) for row in rows]

    def retry_or_drop_window(self, window_id: str, state: str) -> WindowRecord | None:
        """A failed or quarantined window put into `state` by hand: 'failed' to send it again now (with
        dispatch.quarantine_after attempts anew), 'dropped' never to send it. Returns the window as it was
        (one in another state is left alone), None when there is no such window."""
        with self.plane.writing() as session:
            row = session.get(tables.Window, window_id)
            if row is None:
                return None
            record = record_of(row)
            if record.state in ("failed", "quarantined"):
                row.state, row.retry_at, row.strikes = state, None, 0
            return record

    def figures(self) -> dict[str, AgentFigures]:
        """Every agent's figures, by agent name."""
        window = tables.Window

        def counted(*states: str) -> object:
            return func.sum(case((window.state.in_(states), 1), else_=0))

        totals = select(window.agent, counted("answered"), counted("silent"), counted("failed"),
                        counted("quarantined"), counted("pending", "sending"), func.sum(window.attempts),
                        func.sum(window.failures), func.sum(case((window.attempts > 1, window.attempts - 1), else_=0)),
                        func.max(window.finished_at)).group_by(window.agent)
        timed = (select(window.agent, window.letta_ms)
                 .where(window.state.in_(["answered", "silent"]), window.letta_ms.is_not(None)))
        with self.plane.reading() as session:
            rows = session.execute(totals).all()
            times: dict[str, list[float]] = defaultdict(list)
            for agent, letta_ms in session.execute(timed):
                times[agent].append(letta_ms)
        figures = {}
        for agent, answered, silent, failed, quarantined, waiting, calls, failed_calls, retries, last in rows:
            spent = sorted(times[agent])
            figures[agent] = AgentFigures(answered, silent, failed, quarantined, waiting, calls or 0, failed_calls or 0,
                                          retries or 0, quantile(spent, 0.5), quantile(spent, 0.95),
                                          None if last is None else tables.UtcDateTime().process_result_value(last, None))
        return figures

    def _update(self, window_id: str, **values: object) -> None:
        self.plane.write_together(
            lambda connection: connection.execute(update(tables.WINDOWS).where(tables.WINDOWS.c.id == window_id).values(**values)))


# What dispatch reads of a window, as plain rows: planning reads every window under way each round, and
# loading them as ORM objects took half as long again (8.6 against 5.3 ms a round, a hundred agents).
WINDOW_COLUMNS = tuple(tables.WINDOWS.c[name] for name in ("id", "agent", "state", "size", "sent_at", "settled", "retry_at"))


# The reads a lane makes for every window, built once: building a statement costs more than running it.
_window, _blip, _delivery = tables.WINDOWS.c, tables.BLIPS.c, tables.DELIVERIES.c
WINDOW_BY_ID = select(*WINDOW_COLUMNS).where(_window.id == bindparam("window_id"))
WINDOWS_IN = (select(*WINDOW_COLUMNS).where(_window.state.in_(bindparam("states", expanding=True)))
              .order_by(_window.created_at, _window.id))
AGENT_WINDOWS_IN = WINDOWS_IN.where(_window.agent == bindparam("agent"))
HANDED_UNSENT = (select(*MESSAGE_COLUMNS, _blip.stored_at)
                 .join_from(tables.BLIPS, tables.DELIVERIES, _delivery.blip_uri == _blip.uri)
                 .where(_delivery.agent == bindparam("agent"), *UNSENT, _blip.deleted.is_(False),
                        _blip.content.is_not(None))
                 .order_by(_blip.time_us).limit(bindparam("limit")))
HANDED_REASONS = (select(_delivery.handed_for).where(_delivery.window_id == bindparam("window_id"))
                  .order_by(_delivery.decided_at))
# And its writes. A parameter named as a column the statement sets is taken for that column's value: those
# of the WHERE clause and of computed values end in `_`.
INSERT_WINDOW = insert(tables.WINDOWS)
INSERT_DELIVERY = insert(tables.DELIVERIES)
INSERT_REPLY = insert(tables.REPLIES)
INTO_WINDOW = (update(tables.DELIVERIES)
               .where(_delivery.agent == bindparam("agent_"), _delivery.blip_uri.in_(bindparam("uris", expanding=True)),
                      *UNSENT)
               .values(window_id=bindparam("window_id_")).returning(_delivery.blip_uri, _delivery.handed_for))
MARK_SENDING = (update(tables.WINDOWS).where(_window.id == bindparam("window_id_"))
                .values(state="sending", sent_at=bindparam("sent_at_")))
FINISH_WINDOW = (update(tables.WINDOWS).where(_window.id == bindparam("window_id_"))
                 .values(state=bindparam("state_"), finished_at=bindparam("finished_at_"), letta_ms=bindparam("letta_ms_"),
                         error=None, attempts=_window.attempts + 1, retry_at=None))


def lane_state(connection: Connection, query: LaneQuery) -> LaneState:
    row = connection.execute(AGENT_WINDOWS_IN, {"states": query.under_way, "agent": query.agent}).first()
    if row is not None:
        return LaneState(window_of(row), [], {}, 0)
    rows = connection.execute(HANDED_UNSENT, {"agent": query.agent, "limit": query.limit}).all()
    replied = (connection.execute(REPLIES_SINCE, {"agent": query.agent, "since": query.replies_since}).scalar_one()
               if rows else 0)
    return LaneState(None, [candidate_of(row) for row in rows], {row.uri: blip_of(row) for row in rows}, replied)


def handed_unsent(session: Session, agent: str, limit: int) -> list[Candidate]:
    return [candidate_of(row) for row in session.execute(HANDED_UNSENT, {"agent": agent, "limit": limit})]


def candidate_of(row: Row) -> Candidate:
    return Candidate(row.uri, row.did, row.stored_at)


def told_reasons(reasons: Iterable[str | None]) -> str:
    """Why a window's blips were handed to its agent, each reason once, as `mentioned, selected`."""
    return ", ".join(dict.fromkeys(reason for reason in reasons if reason))


def window_of(row: Row) -> Window:
    """A window from a row of WINDOW_COLUMNS."""
    return Window(row.id, row.agent, row.state, row.size, row.sent_at, row.settled, row.retry_at)


def record_of(row: tables.Window) -> WindowRecord:
    return WindowRecord(row.id, row.agent, row.state, row.size, row.created_at, row.attempts, row.failures, row.error,
                        row.retry_at)


def quantile(ordered: list[float], fraction: float) -> float | None:
    """The value at `fraction` of the way through `ordered`, interpolated between neighbours (as
    DuckDB's quantile_cont and PostgreSQL's percentile_cont compute it)."""
    if not ordered:
        return None
    position = (len(ordered) - 1) * fraction
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)
