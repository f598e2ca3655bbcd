"""The history store's file and the connections to it: how the processes of blipflow share one DuckDB file.

Sharing between processes: DuckDB lets one process at a time open a database file (a second one,
even read-only, gets "Could not set lock on file"). Ingest, dispatch, publish and analytics run as
separate processes, so every unit of work opens the file, does its work in one transaction and
closes it again ("short-lived connections"), and an open that finds the file locked retries with
jittered backoff for up to `lock_timeout` seconds. Ingest buffers in memory meanwhile and writes in
batches, so a reader holding the file for a while delays writes without losing anything; what is
not yet written is also not yet in the cursor, so even a crash only means a replay, which the
idempotent upserts absorb.

The one exception is the long-running ingester (`held()`): closing the file writes a checkpoint, which
rewrites the newest row group whole, so closing it after every batch cost most of ingest's time
(measured: 60% of the writer's). It keeps the file open between batches, and closes it as soon as
another process says it waits for it (`waiting.Waiters`), then lets that one in before it opens it again.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from blipflow.store.host import attached, host, process_lock, sql_string
from blipflow.store.schema import SCHEMA
from blipflow.store.waiting import Waiters

LOCK_HOLDER = re.compile(r"Conflicting lock is held in (.*?) \(PID (\d+)\)")
# How long a holder that let go of the file waits for the waiter to get in before it opens the file again.
LET_IN_SECONDS = 1.0
# Rows per row group of the tables written from now on (DuckDB's default is 122,880; the option holds for one
# attachment, so every one passes it). A checkpoint rewrites the newest row group whole, however few of its
# rows are new: with the default, ingest's checkpoints cost more the longer it ran (0.5 s, then 1 s, then 2 s
# per 80k blips on 325k simulated events) and made most of its CPU time. Row groups of 8,192 bound what one
# checkpoint rewrites, so the store can checkpoint often and ingest's memory stays flat. Scans lose nothing
# measurable: a row group is still four vectors of 2,048 rows.
ROW_GROUP_SIZE = 8_192
# How much write-ahead log a holder lets grow before DuckDB checkpoints it into the file (DuckDB's default is
# 16 MB). What is not checkpointed yet is held in memory too; with small row groups a checkpoint costs about
# what its new rows do (a full batch is checkpointed as it commits), so: little memory, little log to replay.
HELD_CHECKPOINT_THRESHOLD = "8MB"
# How many merges of under-full row groups (vacuum tasks) one of the holder's checkpoints may take on (DuckDB's
# default is 100). With small row groups, the checkpoint as the holder lets go of the file took on most of the
# table at once: +90 MB resident at the end of a 200k-event replay (bench/ingest.py). The cost: a few row groups
# stay under-full (194k blips: 29 row groups where 25 would do), which scans do not notice.
HELD_VACUUM_TASKS = 2


class StoreError(Exception):
    """The store cannot be used; the message names the file."""


class StoreBusy(StoreError):
    """Another process kept the store locked for longer than the lock timeout."""


class StoreFile:
    """One DuckDB file as the processes share it; the store's repositories read and write through it."""

    def __init__(self, path: str | os.PathLike[str], *, lock_timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.lock_timeout = lock_timeout
        self._schema_ready = False
        self._sessions: dict[int, duckdb.DuckDBPyConnection] = {}  # thread → its session's connection
        # Stores of other files may be attached to the process's DuckDB at the same time.
        self.alias = "store_" + hashlib.sha1(str(self.path.resolve()).encode()).hexdigest()[:16]
        self._turns = process_lock(self.path)  # shared by every Store of this file in the process
        self._waiters = Waiters(self.path)
        self._holding = False  # keep the file open between units of work (see `held`)

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for one unit of work; waits while another process holds the file.

        Within a process, units of work take turns too: DuckDB refuses a second concurrent open of
        the same file ("Unique file handle conflict") and fails concurrent updates of one row.
        Inside `session()`, the session's connection serves instead of a new one."""
        current = self._sessions.get(threading.get_ident())
        if current is not None:
            yield current
            return
        with self._turns:
            connection = self._open()
            try:
                if not self._schema_ready:
                    connection.execute(SCHEMA)
                    self._schema_ready = True
                yield connection
            except BaseException:
                self._detach(connection)  # a failure may have left DuckDB's database unusable: start afresh
                raise
            self._close(connection)

    @contextmanager
    def held(self) -> Iterator[None]:
        """Keep the file open between this process's units of work, until no longer held or another process
        waits for it (and then only until that one had its turn). For one long-running writer per file."""
        self._holding = True
        configure_host(f"SET GLOBAL checkpoint_threshold = '{HELD_CHECKPOINT_THRESHOLD}'")
        # The holder's own thread does DuckDB's work: a worker thread of DuckDB's would take the core the
        # holder's other threads (ingest's reader) need, and spent more CPU per event than it saved
        # (measured: 41 against 45 µs per event for the whole ingest process, and faster, on 2 cores).
        configure_host("SET GLOBAL threads = 1")
        configure_host(f"SET GLOBAL max_vacuum_tasks = {HELD_VACUUM_TASKS}")
        try:
            yield
        finally:
            self._holding = False
            with self._turns:
                if self.alias in attached:
                    self._detach(self._use_attached())
            configure_host("RESET GLOBAL checkpoint_threshold")
            configure_host("RESET GLOBAL threads")
            configure_host("RESET GLOBAL max_vacuum_tasks")

    def let_go_if_awaited(self) -> None:
        """Close the file held open if another process waits for it (a holder with nothing to write calls
        this now and then, so that a quiet stream never keeps a reader waiting)."""
        if not self._turns.acquire(blocking=False):
            return  # a unit of work is under way here: it lets go itself when it ends
        try:
            if self.alias in attached and self._waiters.any():
                self._detach(self._use_attached())
        finally:
            self._turns.release()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One transaction; inside `session()` it is part of the session's transaction."""
        if self.in_session():
            with self.connect() as connection:
                yield connection
            return
        with self.connect() as connection, begun(connection):
            yield connection

    def in_session(self) -> bool:
        return threading.get_ident() in self._sessions

    @contextmanager
    def session(self) -> Iterator[None]:
        """Several store calls of this thread as one open of the file and one transaction.

        Opening the file costs ~15-25 ms, and each open is a chance for another process to wait on
        the lock, so a step that reads and writes several times (planning a round, taking a window
        off to send it) does it all in one."""
        with self.transaction() as connection:
            self._sessions[threading.get_ident()] = connection
            try:
                yield
            finally:
                del self._sessions[threading.get_ident()]

    def version(self) -> tuple:
        """Changes whenever any process commits to the file (DuckDB appends each commit to the
        write-ahead log, and a checkpoint rewrites the file): pollers compare it to skip a round
        without taking the lock that ingest needs."""
        marks = []
        for path in (self.path, self.path.with_name(self.path.name + ".wal")):
            try:
                stat = path.stat()
            except FileNotFoundError:
                marks.append(None)
            else:
                marks.append((stat.st_mtime_ns, stat.st_size))
        return tuple(marks)

    def _open(self) -> duckdb.DuckDBPyConnection:
        """A connection to the file: the attachment a holder kept, else a new one (a holder that let go for a
        waiting process first gives it a moment to get in)."""
        if self.alias in attached:
            return self._use_attached()
        if self._holding:
            deadline = time.monotonic() + LET_IN_SECONDS
            while self._waiters.any() and time.monotonic() < deadline:
                time.sleep(0.002)
        connection = self._attach()
        attached.add(self.alias)
        return connection

    def _use_attached(self) -> duckdb.DuckDBPyConnection:
        connection = host().cursor()
        try:
            connection.execute(f"USE {self.alias}")
        except BaseException:
            connection.close()
            raise
        return connection

    def _close(self, connection: duckdb.DuckDBPyConnection) -> None:
        """The end of a unit of work: a holder keeps the file open unless another process waits for it."""
        if self._holding and not self._waiters.any():
            connection.close()
        else:
            self._detach(connection)

    def _attach(self) -> duckdb.DuckDBPyConnection:
        """The file attached to this process's DuckDB, as the current database of a new connection."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"store {self.path}: cannot create its folder: {error.strerror}") from None
        connection = host().cursor()
        try:
            connection.execute(self._attach_statement())
            connection.execute(f"USE {self.alias}")
            return connection
        except duckdb.IOException as error:
            if "Could not set lock" not in str(error):
                connection.close()
                raise StoreError(f"store {self.path}: {error}") from None
        except duckdb.Error as error:
            connection.close()
            raise StoreError(f"store {self.path}: {error}") from None
        with self._waiters.announced():  # a process holding the file open lets go of it
            return self._attach_when_free(connection)

    def _attach_when_free(self, connection: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.lock_timeout
        pause = 0.002
        while True:
            time.sleep(pause * random.uniform(0.5, 1.5))
            pause = min(pause * 2, 0.05)
            try:
                connection.execute(self._attach_statement())
                connection.execute(f"USE {self.alias}")
                return connection
            except duckdb.IOException as error:
                message = str(error)
                if "Could not set lock" not in message:
                    connection.close()
                    raise StoreError(f"store {self.path}: {message}") from None
                if time.monotonic() >= deadline:
                    connection.close()
                    holder = LOCK_HOLDER.search(message)
                    who = f"process {holder.group(2)} ({holder.group(1)})" if holder else "another process"
                    raise StoreBusy(
                        f"store {self.path}: locked by {who} for more than {self.lock_timeout:g} s"
                    ) from None
            except duckdb.Error as error:
                connection.close()
                raise StoreError(f"store {self.path}: {error}") from None

    def _attach_statement(self) -> str:
        return f"ATTACH {sql_string(str(self.path))} AS {self.alias} (ROW_GROUP_SIZE {ROW_GROUP_SIZE})"

    def _detach(self, connection: duckdb.DuckDBPyConnection) -> None:
        """Detaching writes a checkpoint when one is due and releases the file, like closing it."""
        attached.discard(self.alias)
        try:
            connection.execute("USE memory")
            connection.execute(f"DETACH {self.alias}")
        finally:
            connection.close()


@contextmanager
def begun(connection: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """One transaction on `connection`: committed at the end, rolled back on a failure (which goes on up)."""
    connection.begin()
    try:
        yield
    except BaseException:
        connection.rollback()
        raise
    connection.commit()


def configure_host(statement: str) -> None:
    """A setting of the process's DuckDB (every store file attached to it), from any thread."""
    with host().cursor() as connection:
        connection.execute(statement)
