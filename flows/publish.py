"""The publish flow: posts the agents' replies from the outbox as blips, as soon as they are there.

Long-running, like dispatch: it looks at the outbox every `publish.poll_interval` seconds, so a reply
is on the network well under a second after its agent gave it, instead of waiting for a schedule. The
outbox is the control plane's; several of these flows (on several machines) share it by a lease per agent.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.states import Completed, State
from prefect.utilities.annotations import quote

from blipflow.config import AgentConfig
from blipflow.model.formatting import counted
from blipflow.publish.publisher import Publication, Publisher
from blocks.loading import settings_from
from flows.control import control_plane
from flows.lanes import results_in_lanes
from flows.observe import BlockedAgents, TableReport, counted_and_reported, emit
from tasks.publish import publish_reply


@flow(name="publish")
def publish(config_file: str | None = None, until_idle: bool = False) -> State[int]:
    """Post replies until cancelled (or, with `until_idle`, until nothing is left to post); returns how
    many replies were posted.

    Agents post side by side, each its replies one at a time and in order, so a conversation reads on
    the network in the order its agent answered; an agent whose PDS is away holds up no other. While an
    agent has no account that can post, the run's state message says so."""
    settings = settings_from(config_file)
    logger = get_run_logger()
    if not settings.agents:
        logger.warning("no agents configured: nothing to publish")
        return Completed(message="no agents configured: nothing to publish", data=0)
    plane = control_plane(settings, logger)
    publisher = Publisher.from_settings(plane, settings, notify=emit)
    try:
        posted = counted_and_reported(
            results_in_lanes(
                BlockedAgents(lambda: blocked_agents(publisher, settings.agents)).after(publisher.due),
                lambda reply: reply.agent,
                lambda reply: publish_reply.submit(quote(publisher), quote(reply)),  # quoted: see flows.dispatch
                poll_interval=settings.publish.poll_interval, until_idle=until_idle,
            ),
            TableReport("publish-replies", "Replies this run posted: agent, reply, blips, at-uri of the first"),
            publication_row,
        )
    finally:
        publisher.close()
        plane.dispose()
    logger.info("publish stopped after posting %d replies", posted)
    return Completed(message=f"posted {counted(posted, 'reply')}", data=posted)


def blocked_agents(publisher: Publisher, agents: list[AgentConfig]) -> dict[str, str]:
    """Agents whose replies wait in the outbox for want of an account: none configured, or one the PDS refused."""
    blocked = {}
    for agent in agents:
        account = publisher.accounts.get(agent.name)
        if account is None:
            blocked[agent.name] = "no account: set its handle and app_password"
        elif account.name in publisher.stopped:
            blocked[agent.name] = f"{publisher.stopped[account.name]}; its replies wait for working credentials"
    return blocked


def publication_row(publication: Publication) -> dict[str, object] | None:
    """A reply this run posted, as a row of the run's table; none for one an earlier attempt had posted."""
    if publication.outcome != "posted":
        return None
    return {"agent": publication.agent, "reply": publication.reply, "blips": publication.parts,
            "uri": publication.uris[0]}
