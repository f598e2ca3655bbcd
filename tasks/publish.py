"""Publish tasks: one task run per reply (all of its parts), never one per blip."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from blipflow.publish import OutgoingReply, Publication, Publisher
from tasks.retries import worth_retrying


@task(
    name="publish-reply",
    task_run_name="publish {reply.agent} {reply.id}",
    # A PDS that is away for a while (a restart, an outage) is waited for here, in the reply's own lane.
    retries=6,
    retry_delay_seconds=[1, 2, 5, 10, 20, 30],
    retry_jitter_factor=0.2,
    retry_condition_fn=worth_retrying,
    cache_policy=NO_CACHE,  # the publisher holds logged-in sessions: never hash or persist it
)
def publish_reply(publisher: Publisher, reply: OutgoingReply) -> Publication:
    return publisher.publish(reply)
