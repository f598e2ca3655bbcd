"""The control plane's tables, as SQLModel models: what dispatch needs of each blip, the delivery ledger,
the circuits, the outbox, the leases and the authors' identities. The migrations under `migrations/` build
exactly this schema (tests compare the two on SQLite and PostgreSQL).

Times are stored in UTC and read back timezone-aware on both backends (SQLite has no zone of its own).
Every (agent, blip) is decided once because `deliveries` is keyed by it: a second decision, by this
process or another, is refused by the database itself.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from blipflow.control.changes import written_mark

# The ledger's states of a window; a failed window waits for its retry_at, a quarantined one for a person.
WINDOW_STATES = ("pending", "sending", "answered", "silent", "failed", "quarantined", "dropped")
REPLY_STATES = ("queued", "posted", "failed")
CIRCUIT_STATES = ("closed", "open", "half_open")

# SQLite numbers rows itself only in a column declared exactly INTEGER PRIMARY KEY.
SEQUENCE = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime, stored in UTC; a naive one is refused rather than guessed at."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"control plane: time {value.isoformat()} has no timezone")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def now() -> datetime:
    return datetime.now(timezone.utc)


def moment() -> Any:
    """A time column that may be empty (each model needs its own Column object)."""
    return Field(default=None, sa_column=Column(UtcDateTime()))


def stamped() -> Any:
    """A time column set when the row is written."""
    return Field(default_factory=now, sa_column=Column(UtcDateTime(), nullable=False))


def json_list() -> Any:
    return Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class Blip(SQLModel, table=True):
    """What dispatch and publish need of a blip, as ingest stored it (the full record stays in DuckDB)."""

    __tablename__ = "blips"
    # AUTOINCREMENT: SQLite never hands out a seq again, even the highest one after its row is gone.
    __table_args__ = (UniqueConstraint("uri", name="uq_blips_uri"), Index("ix_blips_time_us", "time_us"),
                      {"sqlite_autoincrement": True})

    seq: int | None = Field(default=None, sa_column=Column(SEQUENCE, primary_key=True, autoincrement=True))
    uri: str
    did: str
    cid: str | None = None
    time_us: int = Field(sa_column=Column(BigInteger, nullable=False))  # source clock of the operation applied
    created_at: datetime | None = moment()  # the author's createdAt; None when it is not a date
    content: str | None = Field(default=None, sa_column=Column(Text))  # None: not a blip to hand anyone
    deleted: bool = False
    root_uri: str | None = None  # the thread this blip is in, when it is a reply
    root_cid: str | None = None
    parent_uri: str | None = None  # the blip it answers
    parent_cid: str | None = None
    mentions: list[str] = json_list()  # DIDs its richtext facets mention
    tags: list[str] = json_list()  # its facets' #tags, without the '#'
    refs: list[dict[str, str]] = json_list()  # the records it embeds, as {uri, cid}
    stored_at: datetime = stamped()  # when ingest stored it: arrival, as dispatch's policy weighs it
    updated_at: datetime = stamped()


class Window(SQLModel, table=True):
    """Blips sent to one agent in one call; every attempt at it is counted here."""

    __tablename__ = "windows"
    __table_args__ = (Index("ix_windows_state_created_at", "state", "created_at"),
                      Index("ix_windows_changed", "changed"))

    id: str = Field(primary_key=True)
    agent: str = Field(index=True)
    state: str  # one of WINDOW_STATES
    size: int
    created_at: datetime = stamped()
    sent_at: datetime | None = moment()
    finished_at: datetime | None = moment()
    attempts: int = 0  # attempts that ended (answered, silent, recovered or failed)
    failures: int = 0  # attempts that failed
    strikes: int = 0  # failed attempts of the window's own making since it was opened or retried by hand
    error: str | None = Field(default=None, sa_column=Column(Text))
    settled: bool | None = None  # for a failure: Letta answered it (False: a timeout, it may go on)
    retry_at: datetime | None = moment()  # a failed window waits until then
    letta_ms: float | None = Field(default=None, sa_column=Column(Float))
    # The mark of the write that changed it last (see `changes`), set by the database on every insert and
    # update, whoever writes; None here leaves it to the database. 0: written before marks were kept.
    changed: int | None = Field(default=None, sa_column=Column(
        BigInteger, nullable=False, server_default="0", default=written_mark(), onupdate=written_mark()))


class Delivery(SQLModel, table=True):
    """How one blip was decided for one agent: handed to it (then sent in a window) or skipped, each with
    the reason coordination gave and the strategy that decided."""

    __tablename__ = "deliveries"
    # The blips handed to an agent that no window holds yet: what dispatch opens its next window from.
    __table_args__ = (Index("ix_deliveries_unsent", "agent", sqlite_where=text("window_id IS NULL AND skip_reason IS NULL"),
                            postgresql_where=text("window_id IS NULL AND skip_reason IS NULL")),)

    agent: str = Field(primary_key=True)
    blip_uri: str = Field(foreign_key="blips.uri", primary_key=True)
    window_id: str | None = Field(default=None, foreign_key="windows.id", index=True)  # None: not sent (yet)
    skip_reason: str | None = None  # None: handed
    handed_for: str | None = None  # why it was handed: mentioned, answered, selected, floor_passed
    strategy: str | None = None  # the thread's strategy when it was decided
    detail: str | None = Field(default=None, sa_column=Column(Text))  # for people: which bound, whose turn
    decided_at: datetime = stamped()


class AgentProgress(SQLModel, table=True):
    """How far each agent's decisions reached in the previous layout's ledger (taken over from an old
    store): coordination starts after the lowest of them, so nothing undecided there is left behind."""

    __tablename__ = "agent_progress"

    agent: str = Field(primary_key=True)
    decided_through: int = Field(sa_column=Column(BigInteger, nullable=False))


class CoordinationPosition(SQLModel, table=True):
    """How far coordination has decided (every blip with seq <= through_seq is decided or waits on a floor)
    and the state it carries on with, stored together so a decision is never taken twice or lost."""

    __tablename__ = "coordination"

    name: str = Field(primary_key=True)  # one per deployment: "default"
    through_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    version: int = 0  # raised by each write: a process whose round began on an older one lost the race
    state: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    updated_at: datetime = stamped()


class Circuit(SQLModel, table=True):
    """An agent's circuit breaker as dispatch last left it."""

    __tablename__ = "circuits"

    agent: str = Field(primary_key=True)
    state: str  # one of CIRCUIT_STATES
    failures: int  # failed calls in a row
    opened_at: datetime | None = moment()
    reason: str | None = Field(default=None, sa_column=Column(Text))  # the failure that opened it
    updated_at: datetime = stamped()


class Reply(SQLModel, table=True):
    """The outbox: a reply answers the blips of its window; it is queued, then posted or failed."""

    __tablename__ = "replies"
    __table_args__ = (Index("ix_replies_state_created_at", "state", "created_at"),
                      Index("ix_replies_agent_created_at", "agent", "created_at"))

    id: str = Field(primary_key=True)
    window_id: str = Field(foreign_key="windows.id", index=True)
    agent: str
    position: int
    content: str = Field(sa_column=Column(Text, nullable=False))
    state: str = "queued"  # one of REPLY_STATES
    error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = stamped()


class Post(SQLModel, table=True):
    """Each blip a reply went out as (a long reply is a series of parts), with the account that posted it."""

    __tablename__ = "posts"
    __table_args__ = (Index("ix_posts_account_posted_at", "account", "posted_at"),)

    reply_id: str = Field(foreign_key="replies.id", primary_key=True)
    part: int = Field(primary_key=True)
    account: str
    uri: str
    cid: str
    posted_at: datetime = stamped()


class Lease(SQLModel, table=True):
    """Work that one process at a time may do (an agent's windows, say), held until `expires_at`."""

    __tablename__ = "leases"

    name: str = Field(primary_key=True)
    holder: str
    expires_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    acquired_at: datetime = stamped()


class Takeover(SQLModel, table=True):
    """A DuckDB store of the previous layout — its ledger and outbox inside the file — whose ledger, outbox
    and blips were copied here, once (see `blipflow.operations.takeover`)."""

    __tablename__ = "takeovers"

    store: str = Field(primary_key=True)  # the store file's absolute path
    blips: int
    windows: int
    replies: int
    taken_at: datetime = stamped()


class FeedPosition(SQLModel, table=True):
    """How far ingest has fed the control plane from what it stored: every blip the history store wrote in
    a batch begun at or after `stored_since` may not be here yet (a restart feeds it from there)."""

    __tablename__ = "feed_positions"

    name: str = Field(primary_key=True)  # the history store fed from
    stored_since: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    updated_at: datetime = stamped()


class Identity(SQLModel, table=True):
    """Who the author of a blip is, as last resolved from the network: dispatch names authors from here,
    so it never opens the history store (whose own identities table keeps ingest's facts for analytics)."""

    __tablename__ = "identities"

    did: str = Field(primary_key=True)
    handle: str | None = None
    display_name: str | None = None
    pds: str | None = None
    fetched_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))  # when resolved (the TTL's start)


# The same tables for SQLAlchemy Core. The statements a hundred lanes make for every window are written on
# these: on the ORM's classes each statement cost some 300 µs of the interpreter's time, 4× as much.
WINDOWS = Window.__table__
DELIVERIES = Delivery.__table__
BLIPS = Blip.__table__
REPLIES = Reply.__table__
IDENTITIES = Identity.__table__
