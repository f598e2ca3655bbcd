"""The one owner of the control plane's connections: a URL picks the database, as Prefect's does.

SQLite (the default, a file under `data/`) is shared by the processes of one machine: WAL lets readers
go on while one writes, `busy_timeout` makes a writer wait its turn instead of failing, and a write
transaction takes the write lock when it begins (BEGIN IMMEDIATE). Without that, two transactions that
read then write would each hold a read lock and wait for the other: SQLite breaks such a deadlock by
failing one at once, whatever the timeout. Turning a new file to WAL is such a read then write inside
SQLite, where no BEGIN IMMEDIATE can go first: it is tried again instead (`_enter_wal`). PostgreSQL
(`postgresql+psycopg://…`) serves several machines.

Under load (a hundred agents' lanes, each a thread) three things keep SQLite from serializing the work:
- The writers of one process take turns on a lock of their own before BEGIN IMMEDIATE: SQLite's busy
  handler polls with sleeps of up to 100 ms, so threads racing for the write lock would mostly sleep;
  the turn hands it on at once. Writers of other processes still wait by `busy_timeout`.
- The small writes the lanes make for every window (open, mark sending, finish) are committed together:
  one writer thread runs all those waiting in one transaction, each in a savepoint (`together`).
- The pool has a connection for every lane: a reader never queues for a connection behind writers that
  hold theirs while they wait for the write lock.
- A write is durable (synchronous=FULL: its commit syncs the write-ahead log) unless its caller says
  that losing it in a power cut is harmless (`durable=False`, synchronous=NORMAL: the commit is in the
  log, which the operating system writes, and the next durable commit or checkpoint syncs it). Either
  survives the process being killed; only a power cut or a crash of the machine can lose a commit that
  was not durable, and never leaves the database inconsistent. A write is left non-durable only where a
  lost one is redone without anything outside seeing it twice: a lease renewal, an identity resolved,
  a window finished (its window stays `sending`, and is then looked up at Letta by its id, as after a
  crash). Marking a window `sending` — the promise not to send it again blindly — stays durable, and
  with it everything committed before it.

The schema is migrated to the newest revision the first time the plane is used (see `schema`).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, NoSuchModuleError
from sqlmodel import Session

from blipflow.config import Settings
from blipflow.control.together import WritesTogether

T = TypeVar("T")

DEFAULT_PATH = Path("data/control.sqlite")
DEFAULT_BUSY_TIMEOUT = 30.0  # seconds a SQLite writer waits for another's transaction to end
# SQLite connections are a file handle and a small cache each: enough for every lane of a hundred agents,
# the planner and the lease keeper, kept open (reopening one costs its PRAGMAs).
SQLITE_POOL_SIZE = 128
WAL_RETRY_PAUSE = 0.01  # seconds between tries to turn a new file to WAL (see `_enter_wal`)


def default_url(path: Path = DEFAULT_PATH) -> str:
    return f"sqlite:///{path}"


class ControlPlaneError(Exception):
    """The control plane cannot be used; the message names its database (never its password)."""


class ControlPlane:
    """Sessions on the control plane's database, each one transaction."""

    def __init__(self, url: str | None = None, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        try:
            self.url: URL = make_url(url or default_url())
        except ArgumentError:
            raise ControlPlaneError("control plane: the database URL cannot be read as one") from None
        self.name = self.url.render_as_string(hide_password=True)
        self.engine = self._create_engine(busy_timeout)
        # The writers of this process take turns here rather than in SQLite's sleeping busy handler.
        self._write_turn = threading.RLock() if self.backend == "sqlite" else None
        self._together = WritesTogether(self._writing_connection)
        self._migrated = False
        self._migrating = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> ControlPlane:
        """The configured control plane, else a SQLite file beside the history store."""
        return cls(settings.control.url or default_url(settings.store.path.with_name(DEFAULT_PATH.name)))

    @property
    def backend(self) -> str:
        return self.url.get_backend_name()  # sqlite | postgresql

    def _create_engine(self, busy_timeout: float) -> Engine:
        try:
            if self.backend == "sqlite":
                return self._sqlite_engine(busy_timeout)
            if self.backend == "postgresql":
                return create_engine(self.url, pool_pre_ping=True)
        except (NoSuchModuleError, ImportError) as error:
            raise ControlPlaneError(f"control plane {self.name}: no driver: {error}") from None
        raise ControlPlaneError(f"control plane {self.name}: a database must be sqlite or postgresql, "
                                f"not {self.backend}")

    def _sqlite_engine(self, busy_timeout: float) -> Engine:
        if not self.url.database or self.url.database == ":memory:":
            # Each connection would see a database of its own: nothing would be shared.
            raise ControlPlaneError(f"control plane {self.name}: SQLite needs a file")
        path = Path(self.url.database)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ControlPlaneError(f"control plane {self.name}: cannot create its folder: {error.strerror}") from None
        engine = create_engine(self.url, connect_args={"timeout": busy_timeout, "check_same_thread": False},
                               pool_size=SQLITE_POOL_SIZE, max_overflow=SQLITE_POOL_SIZE)

        @event.listens_for(engine, "connect")
        def configure(connection: Any, _record: Any) -> None:
            connection.isolation_level = None  # transactions begin where `begin` below says, not in the driver
            cursor = connection.cursor()
            _enter_wal(cursor, busy_timeout)
            for pragma in (f"busy_timeout = {int(busy_timeout * 1000)}", "foreign_keys = ON"):
                cursor.execute(f"PRAGMA {pragma}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def begin(connection: Any) -> None:
            options = connection.get_execution_options()
            if options.get("writing", False):
                # Set outside the transaction: SQLite applies it to the commits that follow.
                connection.exec_driver_sql(f"PRAGMA synchronous = {'FULL' if options.get('durable', True) else 'NORMAL'}")
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                connection.exec_driver_sql("BEGIN")

        return engine

    @contextmanager
    def writing(self, *, durable: bool = True) -> Iterator[Session]:
        """One transaction that writes: committed at the end, rolled back on an error. Not `durable`: a power
        cut (never a killed process) may lose it, which its caller can redo without harm (see above)."""
        with self._turn(), self._session(writing=True, durable=durable) as session:
            yield session

    def write_together(self, work: Callable[[Connection], T], *, durable: bool = True) -> T:
        """`work(connection)` (Core statements: no ORM session is made for them) in a transaction it may share with the writes other threads of this process make
        at the same moment (see `together`): for the small writes a hundred lanes make at once. Its result,
        or its error raised here; nothing of a write that failed is kept."""
        return self._together.write(work, durable=durable)

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """One transaction that only reads (on SQLite it never waits for a writer)."""
        with self._session(writing=False) as session:
            yield session

    def _turn(self) -> AbstractContextManager[Any]:
        return self._write_turn if self._write_turn is not None else nullcontext()

    @contextmanager
    def _session(self, *, writing: bool, durable: bool = True) -> Iterator[Session]:
        self.migrate()
        with self.connection(writing=writing, durable=durable) as connection, \
                Session(connection, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def _writing_connection(self, durable: bool) -> Iterator[Connection]:
        self.migrate()
        with self._turn(), self.connection(writing=True, durable=durable) as connection, connection.begin():
            yield connection

    @contextmanager
    def connection(self, *, writing: bool, durable: bool = True) -> Iterator[Connection]:
        """A connection of the pool; failing to get one is one line naming the database (never a
        driver's traceback, never the password)."""
        try:
            connection = self.engine.connect()
        except DBAPIError as error:
            reason = str(error.orig).strip().splitlines()[0] if error.orig is not None else type(error).__name__
            raise ControlPlaneError(f"control plane {self.name}: cannot connect: {reason}") from None
        with connection:
            yield connection.execution_options(writing=writing, durable=durable)

    def version(self) -> tuple:
        """Changes whenever any process commits a write: pollers compare it to skip a round in which
        nothing could have changed. SQLite appends every commit to its write-ahead log (a checkpoint
        rewrites the file); PostgreSQL hands each writing transaction the next transaction id."""
        if self.backend == "sqlite":
            path = Path(self.url.database)
            marks = []
            for file in (path, path.with_name(path.name + "-wal")):
                try:
                    stat = file.stat()
                except FileNotFoundError:
                    marks.append(None)
                else:
                    marks.append((stat.st_mtime_ns, stat.st_size))
            return tuple(marks)
        with self.reading() as session:
            return (session.execute(text("SELECT pg_snapshot_xmax(pg_current_snapshot())::text")).scalar_one(),)

    def upsert(self, table: Any) -> Any:
        """INSERT for this database, with its ON CONFLICT clauses (SQLite's and PostgreSQL's read alike)."""
        dialect = sqlite if self.backend == "sqlite" else postgresql
        return dialect.insert(table)

    def migrate(self) -> None:
        """Bring the schema to the newest revision, once per process (a no-op when it is there)."""
        if self._migrated:
            return
        from blipflow.control.schema import (
            upgrade_to_head,  # alembic loads only where the plane is used
        )

        with self._migrating:
            if not self._migrated:
                with self.connection(writing=True) as connection, connection.begin():
                    upgrade_to_head(connection)
                self._migrated = True

    def dispose(self) -> None:
        """Close the pooled connections (a forked child must not share its parent's)."""
        self.engine.dispose()


def _enter_wal(cursor: sqlite3.Cursor, busy_timeout: float) -> None:
    """Put the database in WAL mode, waiting up to `busy_timeout` for another connection doing the same.

    A new file is turned to WAL by the first connection to write its header. Another that read the header
    at the same moment then needs the write lock while holding its read lock: SQLite fails it at once
    ("database is locked") rather than call the busy handler, which could deadlock there, so processes
    starting together on a new control plane (ingest, dispatch and publish, say) failed to connect. The
    failed statement let go of its read lock: tried again, it waits for the lock like any other, or finds
    the file in WAL already (the mode is kept in the file) and only reads."""
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                raise
        time.sleep(WAL_RETRY_PAUSE)


def duplicate_key(error: IntegrityError) -> bool:
    """Whether a write was refused because its key is taken (not for a missing reference, say)."""
    if getattr(error.orig, "sqlstate", None) == "23505":  # PostgreSQL's unique_violation
        return True
    return str(error.orig).startswith("UNIQUE constraint failed")  # SQLite's

