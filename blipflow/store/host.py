"""The process's one in-memory DuckDB that store files are attached to, and the turns the threads of a
process take at one store file."""

from __future__ import annotations

import atexit
import threading
from pathlib import Path

import duckdb

_host: duckdb.DuckDBPyConnection | None = None
_host_guard = threading.Lock()


def host() -> duckdb.DuckDBPyConnection:
    """The process's one in-memory DuckDB, into which store files are attached for each unit of work:
    attaching a file takes ~2 ms where starting a DuckDB for it takes ~20 ms (measured here), and
    detaching releases the file to other processes just as closing does."""
    global _host
    with _host_guard:
        if _host is None:
            _host = duckdb.connect(":memory:")
            atexit.register(close_host)
        return _host


def close_host() -> None:
    """Left to the interpreter's teardown, DuckDB's bindings report the connection as leaked."""
    global _host
    with _host_guard:
        if _host is not None:
            _host.close()  # which detaches every store file still attached
            _host = None
            attached.clear()


def sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# The store files attached to the process's DuckDB between units of work (by their alias), kept by a holder
# (`Store.held`); each changes only under its file's process lock.
attached: set[str] = set()

_process_locks: dict[Path, threading.RLock] = {}
_process_locks_guard = threading.Lock()


def process_lock(path: Path) -> threading.RLock:
    with _process_locks_guard:
        return _process_locks.setdefault(path.resolve(), threading.RLock())
