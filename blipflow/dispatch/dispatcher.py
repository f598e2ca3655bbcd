"""Dispatch: each agent's windows of new blips, sent through Letta exactly once, replies to the outbox.

Planning and delivering are separate steps so that the Prefect layer can make each delivery a task
run with its own retries. Every step leaves the ledger consistent: a window is recorded (with its blips)
before it is sent, marked `sending` just before the call (a lane taking its next window does both in one
write, once the messages are made), and finished with its replies in one transaction. A window found
`sending` after a crash is first looked up at Letta by the ids its messages carried (so is a failed one:
a timeout may come after the agent got it), so it is finished from the answer already given instead of
being sent again.

Failures are counted once, in the ledger (each window's attempts and failures) and, when they are the
agent's, in its circuit breaker. A transient one (Letta away or busy) may be retried at once by Prefect
while the circuit stays closed; the failure that opens it is final, and so is one that shows the agent
cannot be reached at all (a refused key, an unknown agent: the circuit opens at once). A failure of the
window's own making (a bug, data the code cannot handle, a request Letta refuses) does not count against
the agent: after `quarantine_after` of them the window is quarantined and the agent goes on with its next.
A failed window is not planned again before its `retry_at`, the end of the cooldown.

Who is handed which blip is coordination's to decide (`coordinator`), for every agent at once, before
windows are opened from what each agent was handed. Everything dispatch reads and writes is in the
control plane (blips, the ledger, circuits, the outbox): several dispatch processes share it, each
serving the agents whose leases it holds (`shares`). The authors of a window's messages are named from
the control plane's identities too: dispatch never opens the history store (DuckDB), which one process
at a time may hold.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from blipflow.config import AgentConfig, DispatchConfig
from blipflow.control.blips import Blips
from blipflow.control.circuits import Circuits
from blipflow.control.engine import ControlPlane, ControlPlaneError
from blipflow.control.leases import Leases
from blipflow.control.ledger import LaneQuery, LaneState, Ledger, WindowToSend
from blipflow.control.outbox import Outbox
from blipflow.coordination.policy import candidates_needed, decide
from blipflow.dispatch.circuits import AgentCircuits
from blipflow.dispatch.coordinator import Coordinator
from blipflow.dispatch.prompt import window_messages
from blipflow.dispatch.shares import AgentShares
from blipflow.letta.gateway import AgentCallFailed, Answer, LettaGateway, StillAnswering
from blipflow.model.blip import Blip, Candidate, Identity, with_identity
from blipflow.model.coordination_policy import CoordinationPolicy
from blipflow.model.failures import Failure
from blipflow.model.ledger import Window
from blipflow.model.notices import Notify, nobody
from blipflow.network.identity import IdentityResolver

log = logging.getLogger(__name__)

REPLY_RATE_PER = timedelta(minutes=1)  # an agent's max_replies_per_minute counts its replies over this
IN_FLIGHT_MARGIN = 5.0  # seconds beyond the Letta timeout
RECHECK_SECONDS = 2.0  # between looks at Letta for a window that may still be answered there
REPLAN_EVERY = 1.0  # seconds: the longest a round is skipped for want of news in the control plane
UNDER_WAY = ["pending", "sending", "failed"]  # a window in these states is still to be sent (again)
OPENERS = 8  # threads opening agents' windows at once while planning


@dataclass(frozen=True)
class Delivery:
    window: str
    agent: str
    blips: int
    replies: int
    letta_ms: float
    # answered | silent | recovered | quarantined | in_flight (looked at again later) | handed_over (the
    # agent is another process's now, which sends the window)
    outcome: str
    reason: str | None = None  # why a window was quarantined
    handed_for: str = ""  # why its blips were handed to the agent: mentioned, selected, …


@dataclass(frozen=True)
class Prepared:
    """The messages of a window its lane opened `sending`, kept until the lane delivers it."""

    messages: list[dict]
    handed_for: str


@dataclass(frozen=True)
class Called:
    """What came of calling the agent with a window: its answer, and `recovered` when that was the answer
    given to an earlier call (looked up at Letta, not sent again)."""

    answer: Answer
    outcome: str | None
    handed_for: str


class WindowFailed(Failure):
    """An attempt failed for a reason of the window's own making, not the agent's: one line naming the
    window, the error and how many attempts it has had."""


class HandedOver(Exception):
    """The agent's lease is no longer this process's: the window is left to the process that has it."""


class Dispatcher:
    def __init__(
        self,
        plane: ControlPlane,
        gateway: LettaGateway,
        resolver: IdentityResolver,
        agents: list[AgentConfig],
        config: DispatchConfig,
        policy: CoordinationPolicy,
        *,
        letta_timeout: float,
        notify: Notify = nobody,
    ) -> None:
        self.plane = plane
        self.blips, self.ledger, self.outbox = Blips(plane), Ledger(plane), Outbox(plane)
        self.gateway = gateway
        self.resolver = resolver
        self.agents = {agent.name: agent for agent in agents}
        self.coordinator = Coordinator(plane, agents, policy, gateway)
        # Letta finishes a call even when its caller is gone, and records the messages only at the end:
        # a window sent this recently without a trace at Letta may still be answered there.
        self.in_flight_for = timedelta(seconds=letta_timeout + IN_FLIGHT_MARGIN)
        self.rechecks: dict[str, float] = {}  # window id → when to look at Letta again (monotonic)
        self.circuits = AgentCircuits(Circuits(plane), agents, config, notify)
        self.quarantine_after = config.quarantine_after
        self.shares = AgentShares(Leases(plane), self.agents, idle=self.idle)
        self.delivering: set[str] = set()  # agents with a window being delivered by this process now
        self.started = False
        self.held: dict[str, str | None] = {}
        self.prepared: dict[str, Prepared] = {}  # window id → its messages, made before it was opened `sending`
        # agent → its lane's state, read as its last window finished, for `next_window` right after
        self.looked_ahead: dict[str, LaneState | None] = {}
        self.looked_at: tuple | None = None  # what the last round of planning looked at
        self.replan_at = 0.0
        # Agents' windows are opened side by side: each is a few round trips to the control plane, which
        # readers share, and a hundred of them one after another would make planning the bottleneck.
        self.openers = concurrent.futures.ThreadPoolExecutor(OPENERS, thread_name_prefix="blipflow-plan")

    def plan(self, taking_their_own: Collection[str] = ()) -> list[Window]:
        """The windows to deliver now, at most one per agent so that each reads its windows in order: a
        window that a crash or a failure left behind (once the agent's circuit lets calls through again),
        else a new window if one is ready. New windows are opened only as they are about to be sent, so
        the policy decides with what it knows at that moment. Only the agents this process holds the
        leases of are planned for, and not those `taking_their_own` next windows (`next_window`) in a
        lane under way: opening theirs here would race the lane for the same window, at a hundred
        agents' cost each round.

        A round is skipped when nothing was written to the control plane since the last one and the same
        lanes take their own (a lane that stopped has left its agent's next window to planning), except
        once every REPLAN_EVERY seconds, when waits (max_wait, rate limits, cooldowns) end."""
        clock = time.monotonic()
        if not self.started:
            self.shares.start()
            self.started = True
        looking_at = (self.plane.version(), frozenset(taking_their_own))
        if looking_at == self.looked_at and clock < self.replan_at:
            return []
        self.looked_at, self.replan_at = looking_at, clock + REPLAN_EVERY
        now = datetime.now(timezone.utc)
        self.coordinator.step(now)
        held = self.shares.held()
        self.circuits.take_up(held, clock, now)
        planned: dict[str, Window] = {}
        allowed = {name for name in held - set(taking_their_own) if self.circuits.allows(name, clock)}
        if not allowed:  # every lane busy: nothing to look up (a round every poll interval, at full speed)
            return []
        waiting = self.ledger.windows_in(UNDER_WAY)
        for window in waiting:
            if window.agent in allowed:
                planned.setdefault(window.agent, window)
        busy = {window.agent for window in waiting}
        ready = sorted((allowed - busy) & self.ledger.agents_handed_unsent())
        opened = self.openers.map(lambda name: self.open_for(self.agents[name], now), ready)
        for name, window in zip(ready, opened):
            if window is not None:
                planned[name] = window
        return [window for window in planned.values()
                if self.ready(window, now, clock)]

    def open_for(self, agent: AgentConfig, now: datetime) -> Window | None:
        """A new window for the agent, if one is ready, opened from the blips it was handed (planning's way)."""
        return self.open_window(agent, now, self.ledger.handed_unsent(agent.name, candidates_needed(agent)),
                                self.outbox.replies_since(agent.name, now - REPLY_RATE_PER))

    def next_window(self, name: str) -> Window | None:
        """The agent's next window to deliver now, if one is ready, for its lane to take in its own thread
        as soon as the last is done (rather than wait for the next round of planning): the window it left
        under way, else a new one opened from what it was handed. None when there is none, or the agent
        is not this process's to serve, or its circuit keeps calls from it."""
        clock, now = time.monotonic(), datetime.now(timezone.utc)
        looked_ahead = self.looked_ahead.pop(name, None)  # good for this look only
        if not self.shares.holds(name) or name not in self.circuits.taken_up or not self.circuits.allows(name, clock):
            return None  # an agent taken up anew has its circuit restored by planning first
        lane = looked_ahead or self.ledger.lane_state(self.lane_query(name, now))
        window = lane.under_way or self.open_window(self.agents[name], now, lane.handed, lane.replies_since,
                                                    sent_now=lane.blips)
        return window if window is not None and self.ready(window, now, clock) else None

    def lane_query(self, name: str, now: datetime) -> LaneQuery:
        return LaneQuery(name, UNDER_WAY, candidates_needed(self.agents[name]), replies_since=now - REPLY_RATE_PER)

    def ready(self, window: Window, now: datetime, clock: float) -> bool:
        """Whether the window may go now: past its retry_at, and not one to look up at Letta again later."""
        return window.due(now) and self.rechecks.get(window.id, 0.0) <= clock

    def idle(self, agent: str) -> bool:
        """Whether no window of the agent is under way (planned, being sent, or failed and to be sent again)."""
        return agent not in self.delivering and not self.ledger.windows_in(UNDER_WAY, agent)

    def close(self) -> None:
        """Hand this process's agents to the others at once (they would otherwise wait for the leases to run out)."""
        self.shares.stop()
        self.openers.shutdown()

    def open_window(self, agent: AgentConfig, now: datetime, handed: list[Candidate], replied: int, *,
                    sent_now: Mapping[str, Blip] | None = None) -> Window | None:
        """A window of what coordination `handed` the agent and no window holds yet, when one is ready
        (None: not yet, or another process opened it first), the agent having `replied` so often in the
        last REPLY_RATE_PER. A caller that delivers it at once (a lane) passes the handed blips as
        `sent_now`: the window's messages are made of them first, and it is opened already marked
        `sending` — a lane writes twice a window, not three times. One whose messages cannot be made is
        opened pending, to fail (and be counted, and quarantined) where delivering it makes them again."""
        if not handed:
            return None
        decision = decide(agent, handed, replies_last_minute=replied, now=now)
        if decision.held != self.held.get(agent.name):
            self.held[agent.name] = decision.held
            if decision.held:
                log.info("holding back: %s", decision.held)
        if not decision.window:
            return None
        messages = None if sent_now is None else self.messages_of(agent, [sent_now[uri] for uri in decision.window])
        if messages is not None:
            opened = self.ledger.open_sending(agent.name, decision.window)
            if opened is None:
                return None
            self.prepared[opened.window.id] = Prepared(messages, opened.handed_for)
            return opened.window
        window_id = self.ledger.decide(agent.name, {}, decision.window)
        return None if window_id is None else Window(window_id, agent.name, "pending", len(decision.window))

    def messages_of(self, agent: AgentConfig, blips: list[Blip]) -> list[dict] | None:
        """The messages of a window of `blips` about to be opened; None when they cannot be made."""
        try:
            identities = self.resolver.resolve([blip.did for blip in blips])
            return window_messages(agent, [with_identity(blip, identities[blip.did]) for blip in blips])
        except ControlPlaneError:
            raise
        except Exception:  # noqa: BLE001 - a bug or data the code cannot handle: the pending window's to show
            return None

    def maybe_in_flight(self, window: Window, now: datetime) -> bool:
        return window.unsettled() and window.sent_at is not None and now - window.sent_at < self.in_flight_for

    def deliver(self, window: Window) -> Delivery:
        """Send one window and store the answer. A failed attempt is recorded and raised as a Failure that
        says whether trying again at once may help; the last one a window may have quarantines it."""
        agent = self.agents[window.agent]
        self.delivering.add(agent.name)
        try:
            return self.delivered(agent, window)
        finally:
            self.delivering.discard(agent.name)

    def delivered(self, agent: AgentConfig, window: Window) -> Delivery:
        self.looked_ahead.pop(agent.name, None)  # only a window finished just now leaves a look ahead
        try:
            called = self.call(agent, window.id)
        except HandedOver:
            return Delivery(window.id, agent.name, window.size, 0, 0.0, "handed_over")
        except StillAnswering:
            # Letta has it: looked at again in a few seconds, not after the cooldown a failure set.
            self.ledger.clear_retry_at(window.id)
            self.rechecks[window.id] = time.monotonic() + RECHECK_SECONDS
            return Delivery(window.id, agent.name, window.size, 0, 0.0, "in_flight")
        except AgentCallFailed as failure:
            if failure.transient or failure.whole_agent:
                raise self.agent_failed(window, failure) from None
            return self.window_failed(window, failure, settled=failure.settled)
        except ControlPlaneError:
            raise  # a database busy or broken: nothing to do with the window (the task's retry may pass)
        except Exception as error:  # noqa: BLE001 - a bug or data the code cannot handle: the window's, not the agent's
            # Letta may have it if the failure came after the call: it is looked up there before a resend.
            return self.window_failed(window, error, settled=False)
        with self.circuits.recorded(agent.name) as breaker:
            breaker.succeeded()
        answer = called.answer
        self.looked_ahead[agent.name] = self.ledger.finish_window(
            window.id, agent.name, answer.replies, answer.letta_ms,
            then=self.lane_query(agent.name, datetime.now(timezone.utc)))
        outcome = called.outcome or ("answered" if answer.replies else "silent")
        return Delivery(window.id, agent.name, window.size, len(answer.replies), answer.letta_ms, outcome,
                        handed_for=called.handed_for)

    def agent_failed(self, window: Window, failure: AgentCallFailed) -> AgentCallFailed:
        """The agent's failure: counted by its breaker, and final (no retry at once) when the circuit is
        open after it; the window waits for the cooldown either way, should Prefect's retries run out."""
        with self.circuits.recorded(window.agent) as breaker:
            opened = breaker.failed(time.monotonic(), failure.reason, at_once=failure.whole_agent)
        retry_at = datetime.now(timezone.utc) + timedelta(seconds=breaker.cooldown)
        if opened:
            failure = AgentCallFailed(window.agent, f"{failure.reason}; circuit open, next try in {breaker.cooldown:g} s",
                                      transient=False, settled=failure.settled, whole_agent=failure.whole_agent)
        self.ledger.fail_window(window.id, str(failure), settled=failure.settled, retry_at=retry_at)
        return failure

    def window_failed(self, window: Window, error: Exception, *, settled: bool) -> Delivery:
        """A failure of the window's own making: tried again (by Prefect, at once) until it has had
        `quarantine_after` of them, then quarantined, so that its agent goes on with the next window.
        A request Letta refused is quarantined at once: sending it again cannot help."""
        what = str(error) if isinstance(error, Failure) else f"{type(error).__name__}: {error}"
        what = what.strip().splitlines()[0] if what.strip() else type(error).__name__
        retry_at = datetime.now(timezone.utc) + timedelta(seconds=self.circuits.breakers[window.agent].cooldown)
        strikes = self.ledger.fail_window(window.id, what, settled=settled, retry_at=retry_at, strike=True)
        if strikes < self.quarantine_after and not isinstance(error, AgentCallFailed):
            raise WindowFailed(f"window {window.id} of agent {window.agent}: {what} "
                               f"(attempt {strikes} of {self.quarantine_after})", transient=True) from error
        self.ledger.quarantine_window(window.id)
        log.warning("window %s of agent %s quarantined after %d failed attempts: %s (`blipflow windows retry|drop`)",
                    window.id, window.agent, strikes, what)
        return Delivery(window.id, window.agent, window.size, 0, 0.0, "quarantined", reason=what)

    def call(self, agent: AgentConfig, window_id: str) -> Called:
        prepared = self.prepared.pop(window_id, None)
        if prepared is not None:  # opened `sending` by its lane a moment ago, its messages made
            if not self.shares.holds(agent.name):
                raise HandedOver(agent.name)
            return Called(self.gateway.send(agent.name, agent.agent_id, prepared.messages, window_id), None,
                          prepared.handed_for)
        sending, messages = self.take_off(agent, window_id)
        if messages is None:  # sent before and never settled: it may have arrived before a crash or a timeout
            earlier = self.gateway.answer_already_given(agent.name, agent.agent_id, window_id)
            if earlier is not None:
                return Called(earlier, "recovered", sending.handed_for)
            if self.maybe_in_flight(sending.window, datetime.now(timezone.utc)):
                raise StillAnswering(window_id)
            sending, messages = self.take_off(agent, window_id, again=True)
        return Called(self.gateway.send(agent.name, agent.agent_id, messages, window_id), None, sending.handed_for)

    def take_off(self, agent: AgentConfig, window_id: str, *, again: bool = False) -> tuple[WindowToSend, list[dict] | None]:
        """The window as it is now (a retry must see what the last attempt left) and its messages, with
        the window marked `sending`. No messages for an unsettled window unless sending it `again`; none
        at all once the agent is another process's (HandedOver)."""
        if not self.shares.holds(agent.name):
            raise HandedOver(agent.name)
        sending = self.ledger.window_to_send(window_id)
        if sending.window.unsettled() and not again:
            return sending, None
        identities = self.resolver.resolve([blip.did for blip in sending.blips])
        return sending, self.marked_sending(agent, window_id, sending.blips, identities)

    def marked_sending(self, agent: AgentConfig, window_id: str, blips: list[Blip],
                       identities: dict[str, Identity]) -> list[dict]:
        """The window's messages, and the window marked `sending` once they are made: a window they
        cannot be made of (a bug, data the code cannot handle) is not taken for sent."""
        messages = window_messages(agent, [with_identity(blip, identities[blip.did]) for blip in blips])
        if not self.shares.holds(agent.name):  # resolving identities may have taken long
            raise HandedOver(agent.name)
        self.ledger.mark_sending(window_id)
        return messages
