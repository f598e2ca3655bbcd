"""The outbox publish reads: replies queued by dispatch, each answering the blips of its window, and the
posts each went out as (a long reply is a series of parts, each noted once the PDS has it).

Noting a post is idempotent — a part noted twice (a retry after a lost answer, two publishers racing)
is kept once, as it was first noted — and a reply is posted once its last part is noted.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from datetime import datetime, timezone

from sqlalchemy import bindparam, func, select, update

from blipflow.control import tables
from blipflow.control.engine import ControlPlane
from blipflow.model.refs import AnsweredBlip, Ref
from blipflow.model.replies import OutgoingReply

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class Outbox:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    def replies(self, limit: int, reply_id: str | None = None, *,
                agents: Collection[str] | None = None) -> list[OutgoingReply]:
        """Queued replies, oldest first (or the one `reply_id`, whatever its state), with the blips they
        answer and the parts already posted; with `agents`, only theirs."""
        reply, blip, delivery, post = tables.Reply, tables.Blip, tables.Delivery, tables.Post
        query = select(reply).where(reply.state == "queued" if reply_id is None else reply.id == reply_id)
        if agents is not None:
            query = query.where(reply.agent.in_(agents))
        with self.plane.reading() as session:
            replies = session.scalars(query.order_by(reply.created_at, reply.position).limit(limit)).all()
            windows = {row.window_id for row in replies}
            answers: dict[str, list[AnsweredBlip]] = defaultdict(list)
            for window_id, answered in session.execute(
                    select(delivery.window_id, blip).join(blip, blip.uri == delivery.blip_uri)
                    .where(delivery.window_id.in_(windows), blip.cid.is_not(None)).order_by(blip.time_us)):
                answers[window_id].append(AnsweredBlip(answered.uri, answered.cid, answered.root_uri, answered.root_cid))
            posted: dict[str, list[Ref]] = defaultdict(list)
            for part in session.scalars(select(post).where(post.reply_id.in_([row.id for row in replies]))
                                        .order_by(post.reply_id, post.part)):
                posted[part.reply_id].append(Ref(part.uri, part.cid))
        return [OutgoingReply(row.id, row.agent, row.position, row.content, microseconds(row.created_at), row.state,
                              tuple(answers[row.window_id]), tuple(posted[row.id])) for row in replies]

    def replies_queued_ever(self) -> int:
        """How many replies were ever queued: it grows exactly when one is (replies are never deleted, and none
        goes back to the queue), so a poller that found nothing due looks again only once it has grown."""
        return self._count(tables.Reply)

    def record_post(self, reply_id: str, part: int, account: str, uri: str, cid: str, *, last: bool) -> None:
        """One part of a reply is on the PDS; after its last part the reply is posted."""
        insert = self.plane.upsert(tables.Post).values(reply_id=reply_id, part=part, account=account, uri=uri, cid=cid,
                                                       posted_at=tables.now())
        with self.plane.writing() as session:
            session.execute(insert.on_conflict_do_nothing(index_elements=["reply_id", "part"]))
            if last:
                session.execute(update(tables.Reply).where(tables.Reply.id == reply_id)
                                .values(state="posted", error=None))

    def fail_reply(self, reply_id: str, error: str) -> None:
        """A reply that can never be posted as it is (the PDS rejected it); it leaves the queue."""
        with self.plane.writing() as session:
            session.execute(update(tables.Reply).where(tables.Reply.id == reply_id).values(state="failed", error=error))

    def replies_since(self, agent: str, since: datetime) -> int:
        """Replies the agent gave since then (dispatch's bound on how often an agent speaks)."""
        with self.plane.reading() as session:
            return session.execute(REPLIES_SINCE, {"agent": agent, "since": since}).scalar_one()

    def posts_since(self, account: str, since: datetime) -> int:
        """Blips the account posted since then (publish's rate limit)."""
        return self._count(tables.Post, tables.Post.account == account, tables.Post.posted_at >= since)

    def counts(self) -> dict[str, dict[str, int]]:
        """How many replies each agent has in each state (queued, posted, failed)."""
        reply = tables.Reply
        query = (select(reply.agent, reply.state, func.count()).group_by(reply.agent, reply.state)
                 .order_by(reply.agent, reply.state))
        counts: dict[str, dict[str, int]] = defaultdict(dict)
        with self.plane.reading() as session:
            for agent, state, count in session.execute(query):
                counts[agent][state] = count
        return dict(counts)

    def _count(self, table: type, *where: object) -> int:
        with self.plane.reading() as session:
            return session.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


# Counted for every window a lane opens: built once, on the Core table (see `tables.WINDOWS`).
REPLIES_SINCE = (select(func.count()).select_from(tables.REPLIES)
                 .where(tables.REPLIES.c.agent == bindparam("agent"), tables.REPLIES.c.created_at >= bindparam("since")))


def microseconds(moment: datetime) -> int:
    """Whole µs since the epoch, exactly (a float timestamp would round some of them)."""
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds

