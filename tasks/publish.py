"""Publish tasks: one task run per reply (all of its parts), never one per blip, named for its agent and
reply and ending with where it was posted."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.states import State

from blipflow.model.formatting import counted
from blipflow.model.replies import OutgoingReply
from blipflow.publish.publisher import Publication, Publisher
from tasks.retries import worth_retrying
from tasks.words import completed_saying


def reply_run_name(parameters: dict[str, Any]) -> str:
    """`scout: reply 1 (3f9c1a2e)` — the agent, which of its window's replies, and the start of the window's id."""
    reply: OutgoingReply = parameters["reply"]
    return f"{reply.agent}: reply {reply.position + 1} ({reply.id[:8]})"


@task(
    name="publish-reply",
    task_run_name=reply_run_name,
    # A PDS that is away for a while (a restart, an outage) is waited for here, in the reply's own lane.
    retries=6,
    retry_delay_seconds=[1, 2, 5, 10, 20, 30],
    retry_jitter_factor=0.2,
    retry_condition_fn=worth_retrying,
    cache_policy=NO_CACHE,  # the publisher holds logged-in sessions: never hash or persist it
)
def publish_reply(publisher: Publisher, reply: OutgoingReply) -> State[Publication]:
    publication = publisher.publish(reply)
    return completed_saying(publication_told(publication), publication)


def publication_told(publication: Publication) -> str:
    """Where a reply went: `posted as at://…`, or `2 blips posted, the first at://…`."""
    done = "posted" if publication.outcome == "posted" else "already posted"
    if publication.parts == 1:
        return f"{done} as {publication.uris[0]}"
    return f"{counted(publication.parts, 'blip')} {done}, the first {publication.uris[0]}"
