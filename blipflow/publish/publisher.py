"""Publish: the agents' replies from the outbox to the network, each as blips of the agent's account,
exactly once, threaded to the blips they answer.

Exactly once: every part of a reply is created under a record key computed from the reply
(`publish_records.record_key`), and the control plane's outbox notes each part once the PDS has it. A publish that dies
in between — after the PDS took the record, before we noted it — runs again with the same key: the PDS
then refuses the create (the reference PDS answers 500), and the record found under that key, if it is
the very record we meant, counts as posted. So a retry, a restart or a lost answer never posts twice.

Threading: a reply's first blip answers the newest blip of its window (`reply.parent`), in the thread
of that blip (`reply.root`); when the window held several blips, `answers` lists them all. Each further
part of a long reply answers the part before it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from blipflow.config import Settings
from blipflow.model.blip import BLIP_COLLECTION
from blipflow.model.failures import Failure
from blipflow.model.notices import Notice, Notify, agent_resource, nobody
from blipflow.model.refs import Ref
from blipflow.model.replies import OutgoingReply
from blipflow.model.times import iso_time
from blipflow.network.accounts import (
    Account,
    AccountFailed,
    LoginFailed,
    Session,
    Sessions,
    agent_account,
    missing_credentials,
)
from blipflow.publish.records import MAX_PARTS, blip_record, record_key, split_content
from blipflow.control.engine import ControlPlane
from blipflow.control.outbox import Outbox

log = logging.getLogger(__name__)

REPLIES_PER_ROUND = 500
RATE_WINDOW = timedelta(minutes=1)


class ReplyRejected(Failure):
    """The PDS will never take this reply as it is; it leaves the queue, marked failed."""

    def __init__(self, reply_id: str, reason: str) -> None:
        super().__init__(f"reply {reply_id}: {reason}", transient=False)




@dataclass(frozen=True)
class Publication:
    reply: str
    agent: str
    parts: int
    uris: tuple[str, ...]
    outcome: str  # posted | already_posted


class Publisher:
    def __init__(self, plane: ControlPlane, sessions: Sessions, accounts: dict[str, Account], *,
                 max_blip_length: int, posts_per_minute: int, notify: Notify = nobody) -> None:
        self.plane = plane
        self.outbox = Outbox(plane)
        self.notify = notify
        self.sessions = sessions
        self.accounts = accounts  # agent name → the account it publishes as
        self.max_blip_length = max_blip_length
        self.posts_per_minute = posts_per_minute
        self.stopped: dict[str, str] = {}  # account name → why it publishes nothing more in this process
        self.held: set[str] = set()  # agents whose replies wait, each said once
        self.looked_at: tuple | None = None  # the control plane's version when a look found nothing to post

    @classmethod
    def from_settings(cls, plane: ControlPlane, settings: Settings, notify: Notify = nobody) -> Publisher:
        accounts = {}
        for agent in settings.agents:
            missing = missing_credentials(agent, settings.bluesky)
            if missing is None:
                accounts[agent.name] = agent_account(agent, settings.bluesky)
            else:  # said once here; its replies are never tried, so nothing else says it again
                log.warning("agent %s: %s: its replies wait in the outbox", agent.name, missing)
        return cls(plane, Sessions(timeout=settings.publish.timeout), accounts,
                   max_blip_length=settings.publish.max_blip_length,
                   posts_per_minute=settings.publish.posts_per_minute, notify=notify)

    def due(self) -> list[OutgoingReply]:
        """Queued replies that may go now, oldest first: their agent has a working account that is
        under its rate limit.

        After a look that found nothing, the outbox is looked at again only once some process has
        written to the control plane."""
        version = self.plane.version()
        if version == self.looked_at:
            return []
        replies = self.outbox.replies(REPLIES_PER_ROUND)
        since = datetime.now(timezone.utc) - RATE_WINDOW
        held: set[str] = set()
        budget: dict[str, int] = {}  # account handle → blips it may still post this minute
        due = []
        for reply in replies:
            account = self.accounts.get(reply.agent)
            if account is None or account.name in self.stopped:
                continue
            if account.handle not in budget:
                budget[account.handle] = self.posts_per_minute - self.outbox.posts_since(account.handle, since)
            if budget[account.handle] <= 0:
                if reply.agent not in self.held | held:
                    log.info("%s posted %d blips in the last minute: its replies wait", account, self.posts_per_minute)
                held.add(reply.agent)
                continue
            budget[account.handle] -= 1  # at least; a long reply's parts all go together
            due.append(reply)
        self.held = held
        # Replies held by the rate are due again with time alone; the rest only once something changed.
        self.looked_at = version if not due and not held else None
        return due

    def publish(self, reply: OutgoingReply) -> Publication:
        """Post every part of the reply not yet on the PDS; AccountFailed says whether a retry may help."""
        [reply] = self.outbox.replies(1, reply.id)  # a retry must see the parts the last attempt posted
        if reply.state != "queued":
            return Publication(reply.id, reply.agent, len(reply.posted), tuple(r.uri for r in reply.posted),
                               "already_posted")
        account = self.accounts[reply.agent]
        if account.name in self.stopped:
            raise AccountFailed(account, self.stopped[account.name], transient=False)
        session = self.sessions.of(account)
        parts = split_content(reply.content, self.max_blip_length)
        try:
            if len(parts) > MAX_PARTS:  # record keys tell only so many parts of a reply apart
                raise ReplyRejected(reply.id, f"{len(parts)} blips of at most {self.max_blip_length} characters "
                                              f"are more than the {MAX_PARTS} a reply may have")
            posted = list(reply.posted)
            for index in range(len(posted), len(parts)):
                record = self.record(reply, parts, index, posted)
                ref = self.put(session, reply.id, record_key(reply.id, reply.created_us, reply.position, index), record)
                self.outbox.record_post(reply.id, index, account.handle, ref.uri, ref.cid, last=index == len(parts) - 1)
                posted.append(ref)
        except ReplyRejected as rejected:
            self.outbox.fail_reply(reply.id, str(rejected))
            log.error("%s", rejected)
            raise
        except AccountFailed as failure:
            if not failure.transient:
                self.stopped[account.name] = str(failure).removeprefix(f"{account}: ")
                log.error("%s; its replies wait until blipflow runs again with working credentials", failure)
            raise
        self.notify(Notice("blipflow.reply.published", agent_resource(reply.agent),
                           {"reply": reply.id, "uri": posted[0].uri, "parts": [ref.uri for ref in posted],
                            "account": account.handle}))
        return Publication(reply.id, reply.agent, len(parts), tuple(ref.uri for ref in posted), "posted")

    @staticmethod
    def record(reply: OutgoingReply, parts: list[str], index: int, posted: list[Ref]) -> dict:
        created_at = iso_time(reply.created_us)
        newest = reply.answers[-1] if reply.answers else None
        if index > 0:  # in the thread of what the reply answers, else of its own first part
            root = newest.thread_root if newest else posted[0]
            return blip_record(parts[index], created_at, parent=posted[index - 1], root=root)
        if newest is None:
            return blip_record(parts[0], created_at)
        return blip_record(parts[0], created_at, parent=newest.ref, root=newest.thread_root,
                           answers=[blip.ref for blip in reply.answers])

    def put(self, session: Session, reply_id: str, rkey: str, record: dict) -> Ref:
        """Create the record under `rkey`, or find that an earlier attempt already did."""
        try:
            return session.create_record(BLIP_COLLECTION, record, rkey)
        except LoginFailed:
            raise
        except AccountFailed as failure:
            if failure.status in (400, 413):  # this record, not the account, is what the PDS refuses
                raise ReplyRejected(reply_id, str(failure).removeprefix(f"{session.account}: ")) from None
            if not failure.transient:
                raise
            # The create may have happened with its answer lost, or it happened earlier and the PDS now
            # refuses the key (with a 500): what is under the key decides.
            existing = session.existing_record(BLIP_COLLECTION, rkey)
            if existing is None:
                raise
            ref, value = existing
            if value != record:
                raise ReplyRejected(reply_id, f"record key {rkey} already holds another record ({ref.uri})") from None
            log.info("%s: %s was already posted", session.account, ref.uri)
            return ref

    def close(self) -> None:
        self.sessions.close()
