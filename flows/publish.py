"""The publish flow: posts the agents' replies from the outbox as blips, as soon as they are there.

Long-running, like dispatch: it looks at the outbox every `publish.poll_interval` seconds, so a reply
is on the network well under a second after its agent gave it, instead of waiting for a schedule.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from blipflow.config import load_settings
from blipflow.publish import Publication, Publisher
from blipflow.store import Store
from flows.lanes import results_in_lanes
from flows.observe import TableReport, counted_and_reported, emit
from tasks.publish import publish_reply


@flow(name="publish")
def publish(config_file: str | None = None, until_idle: bool = False) -> int:
    """Post replies until cancelled (or, with `until_idle`, until nothing is left to post); returns how
    many replies were posted.

    Agents post side by side, each its replies one at a time and in order, so a conversation reads on
    the network in the order its agent answered; an agent whose PDS is away holds up no other."""
    settings = load_settings(config_file)
    publisher = Publisher.from_settings(Store.from_config(settings.store), settings, notify=emit)
    try:
        posted = counted_and_reported(
            results_in_lanes(
                publisher.due, lambda reply: reply.agent, lambda reply: publish_reply.submit(publisher, reply),
                poll_interval=settings.publish.poll_interval, until_idle=until_idle,
            ),
            TableReport("publish-replies", "Replies this run posted: agent, reply, blips, at-uri of the first"),
            publication_row,
        )
    finally:
        publisher.close()
    get_run_logger().info("publish stopped after posting %d replies", posted)
    return posted


def publication_row(publication: Publication) -> dict[str, object] | None:
    """A reply this run posted, as a row of the run's table; none for one an earlier attempt had posted."""
    if publication.outcome != "posted":
        return None
    return {"agent": publication.agent, "reply": publication.reply, "blips": publication.parts,
            "uri": publication.uris[0]}
