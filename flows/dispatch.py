"""The dispatch flow: sends each configured Letta agent its windows of new blips, as they become ready.

Long-running, like ingest: it looks for new blips every `dispatch.poll_interval` seconds, so a blip
reaches its agents well under a second after it is stored, instead of waiting for a schedule.
"""

from __future__ import annotations

import logging
from logging import Logger, LoggerAdapter

from prefect import flow, get_run_logger
from prefect.states import Completed, Failed, State
from prefect.utilities.annotations import quote

from blipflow.config import Settings
from blipflow.dispatch.dispatcher import Delivery, Dispatcher
from blipflow.letta.agent_tags import with_letta_tags
from blipflow.letta.gateway import LettaGateway
from blipflow.model.failures import Failure
from blipflow.model.formatting import counted
from blipflow.model.notices import Notify, nobody
from blipflow.network.accounts import with_learned_dids
from blipflow.network.identity import IdentityResolver
from blocks.loading import settings_from
from flows.control import control_plane
from flows.lanes import results_in_rounds
from flows.observe import BlockedAgents, TableReport, counted_and_reported, emit
from tasks.dispatch import deliver_windows

log = logging.getLogger(__name__)


def build_dispatcher(settings: Settings, notify: Notify = nobody, logger: Logger | LoggerAdapter = log) -> Dispatcher:
    plane = control_plane(settings, logger)
    resolver = IdentityResolver.in_control_plane(plane, settings)
    gateway = LettaGateway(settings.letta, max_steps=settings.dispatch.max_steps, agents=len(settings.agents))
    # Agents' DIDs keep their own blips from them and measure agent-only chains; learned from handles if not given.
    agents = with_learned_dids(settings.agents, settings.bluesky, timeout=settings.publish.timeout)
    agents = with_letta_tags(agents, gateway)
    return Dispatcher(plane, gateway, resolver, agents, settings.dispatch, settings.coordination,
                      letta_timeout=settings.letta.timeout, notify=notify)


@flow(name="dispatch")
def dispatch(config_file: str | None = None, until_idle: bool = False) -> State[int]:
    """Deliver windows until cancelled (or, with `until_idle`, until nothing is left to send); returns
    how many windows were delivered.

    Agents are served side by side, each its windows one at a time and in order; an agent whose call
    waits to be retried holds up no other. Each agent's windows go in rounds, a task run each (see
    flows.lanes), each window a line of its round's log and a row of the run's table. While an agent's
    circuit is open, the run's state message says so."""
    settings = settings_from(config_file)
    logger = get_run_logger()
    if not settings.agents:
        logger.warning("no agents configured: nothing to dispatch")
        return Completed(message="no agents configured: nothing to dispatch", data=0)
    try:
        dispatcher = build_dispatcher(settings, notify=emit, logger=logger)
    except Failure as failure:  # an agent's DID could not be learned from its account: one line, no traceback
        logger.error("%s", failure)
        return Failed(message=str(failure))
    delivered = counted_and_reported(
        results_in_rounds(
            BlockedAgents(lambda: blocked_agents(dispatcher)).after(dispatcher.plan), lambda window: window.agent,
            # quoted: a round is no task run's result, though Prefect would link it to one by the id() of
            # its agent's name (a str, tracked by id alone), which the previous round's Deliveries hold too
            lambda windows: deliver_windows.submit(quote(dispatcher), quote(windows)),
            poll_interval=settings.dispatch.poll_interval, until_idle=until_idle, take=dispatcher.next_window,
        ),
        TableReport("dispatch-windows",
                    "Windows this run delivered: agent, why it was handed them, blips, replies, Letta time, outcome"),
        delivery_row,
    )
    dispatcher.close()
    logger.info("dispatch stopped after delivering %d windows", delivered)
    return Completed(message=f"delivered {counted(delivered, 'window')}", data=delivered)


def blocked_agents(dispatcher: Dispatcher) -> dict[str, str]:
    """Agents whose circuit keeps calls from them: open, or half-open while its one trial call is made."""
    return {name: (f"circuit open: {breaker.reason}" if breaker.reason else "circuit open after failed calls")
            + f"; retried every {breaker.cooldown:g} s"
            for name, breaker in dispatcher.circuits.breakers.items() if breaker.state != "closed"}


def delivery_row(delivery: Delivery) -> dict[str, object] | None:
    """A window delivered, as a row of the run's table; none for one that may still be answered at Letta,
    or that another process sends now."""
    if delivery.outcome in ("in_flight", "handed_over"):
        return None
    return {"agent": delivery.agent, "window": delivery.window, "handed_for": delivery.handed_for,
            "blips": delivery.blips, "replies": delivery.replies,
            "letta_ms": round(delivery.letta_ms, 1),
            "outcome": f"quarantined: {delivery.reason}" if delivery.reason else delivery.outcome}
