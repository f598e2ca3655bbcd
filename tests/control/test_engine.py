"""The SQLite control plane under many threads of one process: its writers take turns in the process (they
never reach SQLite's busy handler, so none waits in its sleeps, nor fails with no time to wait), readers go
on while a writer holds the write lock, and a write may skip the disk sync without losing a thing to a
killed process. A new file another process is turning to WAL is waited for, not a failure."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import signal
import sqlite3
import threading
import time
from datetime import timedelta

import pytest

from blipflow.control.engine import ControlPlane
from blipflow.control.leases import Leases

THREADS = 24
WRITES = 20


def test_threads_writing_at_once_take_turns_without_sqlites_busy_handler(tmp_path) -> None:
    # No time to wait at all: a writer that met another's write lock inside SQLite would fail at once.
    plane = ControlPlane(f"sqlite:///{tmp_path / 'control.sqlite'}", busy_timeout=0)
    leases = Leases(plane)
    start = threading.Barrier(THREADS)

    def write(thread: int) -> int:
        start.wait()
        for n in range(WRITES):
            assert leases.acquire(f"work:{thread}:{n}", f"thread-{thread}", timedelta(minutes=1))
        return thread

    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        assert sorted(pool.map(write, range(THREADS))) == list(range(THREADS))
    assert len(leases.held()) == THREADS * WRITES
    plane.dispose()


def test_readers_go_on_while_a_writer_holds_the_write_lock(tmp_path) -> None:
    plane = ControlPlane(f"sqlite:///{tmp_path / 'control.sqlite'}")
    leases = Leases(plane)
    leases.acquire("work:1", "me", timedelta(minutes=1))
    holding, done = threading.Event(), threading.Event()

    def hold_the_write_lock() -> None:
        with plane.writing():
            holding.set()
            done.wait(30)

    writer = threading.Thread(target=hold_the_write_lock)
    writer.start()
    try:
        assert holding.wait(30)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            assert all(held.keys() == {"work:1"} for held in pool.map(lambda _: leases.held(), range(16)))
    finally:
        done.set()
        writer.join()
    plane.dispose()


def test_a_new_file_another_is_turning_to_wal_is_waited_for(tmp_path) -> None:
    """Processes starting at once on a new control plane: while the first holds the write lock to turn the
    file to WAL, another that read the file's header meanwhile must wait, though SQLite calls no busy
    handler there (it failed at once: "database is locked")."""
    path = tmp_path / "control.sqlite"
    first = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    first.execute("BEGIN IMMEDIATE")  # the write lock, as the first process turning the new file to WAL holds it
    held = 0.5
    began = time.monotonic()
    releasing = threading.Timer(held, first.execute, ["COMMIT"])
    releasing.start()
    plane = ControlPlane(f"sqlite:///{path}")
    try:
        with plane.reading() as session:
            assert session.connection().exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
        assert time.monotonic() - began >= held  # it did meet the lock
    finally:
        releasing.join()
        first.close()
        plane.dispose()


def take_a_lease_then_wait(url: str, ready: multiprocessing.Event) -> None:
    """Take a lease (a write that skips the disk sync), say so, and wait to be killed."""
    assert Leases(ControlPlane(url)).acquire("work:unsynced", "killed", timedelta(minutes=1))
    ready.set()
    threading.Event().wait()


@pytest.mark.process
def test_a_write_that_skipped_the_sync_survives_its_process_being_killed(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'control.sqlite'}"
    ControlPlane(url).migrate()
    spawn = multiprocessing.get_context("spawn")
    ready = spawn.Event()
    process = spawn.Process(target=take_a_lease_then_wait, args=(url, ready))
    process.start()
    assert ready.wait(60)
    os.kill(process.pid, signal.SIGKILL)
    process.join()
    assert Leases(ControlPlane(url)).held()["work:unsynced"].holder == "killed"
