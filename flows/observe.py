"""What the flows show in Prefect: the library's notices as Prefect events, and each run's artifacts.

Events carry the agent, DID or source as their resource (Prefect relates them to the flow run), so
users can build automations on them: "an agent's circuit opened", "ingest disconnected", "no progress
for ten minutes". Long-running runs keep their table artifact current within seconds, and say in their
state message which agents they cannot serve now, and why.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar
from uuid import UUID

from prefect.artifacts import (
    TableArtifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactUpdate
from prefect.context import FlowRunContext
from prefect.events import emit_event
from prefect.states import Running

from blipflow.model.notices import Notice

log = logging.getLogger("blipflow.observe")  # the blipflow logger reaches the run's logs

BACKLOG_LAG = 60.0  # seconds behind the stream at which ingest is replaying a backlog
LIVE_LAG = 5.0  # and at which it has caught up
Item = TypeVar("Item")
R = TypeVar("R")
Plan = ParamSpec("Plan")
REFRESH_AFTER = 2.0  # seconds: a row is in its table artifact this soon, which is written at most this often
TABLE_ROWS = 500  # the newest rows a table artifact keeps


def emit(notice: Notice) -> None:
    with shown_if_prefect_fails(notice.event):
        emit_event(event=notice.event, resource={"prefect.resource.id": notice.resource}, payload=notice.payload)


@contextmanager
def shown_if_prefect_fails(what: str) -> Iterator[None]:
    """Telling Prefect must never stop the work it describes (a run being cancelled, say, may find the API
    gone): a failure is one log line."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 - whatever the client raises, the pipeline goes on
        log.warning("could not record %s in Prefect: %s", what, error)


class IngestObserver:
    """Ingest's notices as events; its progress reports also refresh the run's progress artifact, and while
    it replays a backlog — a backfill from an old cursor, or a restart far behind the stream — a progress
    bar of how far it has caught up. The lag is that of the events that arrived since the last report (none
    on a quiet stream), so a quiet stream never looks like a backlog."""

    def __init__(self) -> None:
        self.catching_up: tuple[UUID, float] | None = None  # the bar's artifact, and the lag it started from

    def __call__(self, notice: Notice) -> None:
        emit(notice)
        if notice.event == "blipflow.ingest.progress":
            with shown_if_prefect_fails("ingest's progress artifacts"):
                self.show_progress(notice.payload)

    def show_progress(self, progress: dict[str, Any]) -> None:
        create_markdown_artifact(
            key="ingest-progress", markdown=progress_markdown(progress),
            description="Ingest progress: events per second, lag behind the stream, reconnects", _sync=True,
        )
        lag = progress["lag_seconds"]
        if lag is None:  # nothing arrived since the last report
            if self.catching_up is not None and progress["connects"] > progress["disconnects"]:
                self.show_caught_up(1.0)  # connected, and the source has nothing more: the replay is done
            return
        if self.catching_up is None:
            if lag >= BACKLOG_LAG:
                bar = create_progress_artifact(0.0, key="ingest-catch-up", _sync=True,
                                               description=f"Replaying the stream from {lag:.0f} s behind it")
                self.catching_up = (bar, lag)
            return
        started_at = self.catching_up[1]
        self.show_caught_up(1.0 if lag <= LIVE_LAG else min(1.0, max(0.0, 1 - lag / started_at)))

    def show_caught_up(self, part: float) -> None:
        assert self.catching_up is not None
        update_progress_artifact(self.catching_up[0], progress=round(100 * part, 1), _sync=True)
        if part == 1.0:
            self.catching_up = None  # live again: a later backlog gets a bar of its own


def progress_markdown(progress: dict[str, Any]) -> str:
    rows = [
        ("events per second (since the last report)", progress["events_per_second"]),
        ("behind the stream when the last event arrived, seconds", progress["lag_seconds"]),
        ("last event, seconds ago", progress["last_event_seconds_ago"]),
        ("events received (total)", progress["received_total"]),
        ("events stored (total)", progress["stored_total"]),
        ("bad input skipped (total)", progress["bad_total"]),
        ("connects / disconnects", f"{progress['connects']} / {progress['disconnects']}"),
        ("store writes retried", progress["store_retries"]),
    ]
    lines = ["# Ingest progress", "", "| | |", "|---|---|"]
    lines += [f"| {label} | {'-' if value is None else value} |" for label, value in rows]
    return "\n".join(lines)


class TableReport:
    """The table artifact of a long-running run: one row per thing done, there within REFRESH_AFTER
    seconds of being done.

    The first write creates the run's artifact; later ones update that same artifact (a new version
    per refresh would pile up in the server's database), at most once every REFRESH_AFTER seconds
    however fast rows come in — a timer writes what came in since — and once more at the end."""

    def __init__(self, key: str, description: str) -> None:
        self.key = key
        self.description = description
        self.rows: list[dict[str, Any]] = []
        self.artifact: UUID | None = None
        self.changed = False
        self.shown_at = float("-inf")
        self.timer: threading.Timer | None = None
        self.lock = threading.Lock()  # the timer writes from its own thread

    def add(self, row: dict[str, Any]) -> None:
        with self.lock:
            self.rows = [*self.rows[-(TABLE_ROWS - 1):], row]
            self.changed = True
            wait = self.shown_at + REFRESH_AFTER - time.monotonic()
            if wait > 0:
                if self.timer is None:
                    # in the run's context, so that an artifact created from the timer's thread is the run's
                    self.timer = threading.Timer(wait, contextvars.copy_context().run, [self.show])
                    self.timer.daemon = True
                    self.timer.start()
                return
        self.show()

    def show(self) -> None:
        with self.lock:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            if not self.changed:
                return
            with shown_if_prefect_fails(f"the {self.key} artifact"):
                if self.artifact is None:
                    self.artifact = create_table_artifact(key=self.key, table=self.rows, description=self.description,
                                                          _sync=True)
                else:
                    with get_client(sync_client=True) as client:
                        table = TableArtifact(table=self.rows).format(_sync=True)
                        client.update_artifact(self.artifact, ArtifactUpdate(data=table))
            self.changed, self.shown_at = False, time.monotonic()


def counted_and_reported(results: Iterable[R], report: TableReport, row: Callable[[R], dict[str, Any] | None]) -> int:
    """How many of a long-running run's results `row` makes a row of — each one added to `report`, which
    is shown once more at the end, however the run ends."""
    counted = 0
    try:
        for result in results:
            shown = row(result)
            if shown is not None:
                counted += 1
                report.add(shown)
    finally:
        report.show()
    return counted


class BlockedAgents:
    """Which agents a long-running run cannot serve now, and why, from `blocked` (agent → why): said in
    the run's state message (the UI's State Message) and its log when it changes, cleared when it is over.

    Looked at after each round of planning; Prefect hears of it only when it changes."""

    def __init__(self, blocked: Callable[[], dict[str, str]]) -> None:
        self.blocked = blocked
        self.said: dict[str, str] = {}

    def after(self, plan: Callable[Plan, Sequence[Item]]) -> Callable[Plan, Sequence[Item]]:
        """`plan`, looking at the blocked agents after each call."""
        def planned(*args: Plan.args, **kwargs: Plan.kwargs) -> Sequence[Item]:
            items = plan(*args, **kwargs)
            self.look()
            return items
        return planned

    def look(self) -> None:
        blocked = self.blocked()
        if blocked == self.said:
            return
        for agent, why in blocked.items():
            if self.said.get(agent) != why:
                log.warning("agent %s is blocked: %s", agent, why)
        for agent in self.said.keys() - blocked.keys():
            log.info("agent %s is no longer blocked", agent)
        self.said = blocked
        self.tell_prefect(blocked_message(blocked))

    @staticmethod
    def tell_prefect(message: str | None) -> None:
        """The run stays Running, with the message (a run being cancelled refuses it, and stays Cancelling)."""
        context = FlowRunContext.get()
        if context is None or context.flow_run is None:
            return
        with shown_if_prefect_fails("the run's state message"), get_client(sync_client=True) as client:
            client.set_flow_run_state(context.flow_run.id, Running(message=message))


def blocked_message(blocked: dict[str, str]) -> str | None:
    """`blocked: ghost (circuit open …); scout (no account …)`; none when nothing is."""
    if not blocked:
        return None
    return "blocked: " + "; ".join(f"{agent} ({why})" for agent, why in sorted(blocked.items()))
