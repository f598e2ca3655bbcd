"""Separate processes racing: each runs a worker in its own interpreter (spawned), all let go at once, and
their reports come back; one that fails or dies is a test failure with its traceback or exit code and its
stderr, as soon as it is seen.

A worker is a function of an importable module (a test module's cannot be imported by a spawned child):
`target(*args, start) -> dict`, where `start` is the barrier it waits at once ready, and the dict its report.
"""

from __future__ import annotations

import faulthandler
import multiprocessing
import os
import queue
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import pytest


@dataclass(frozen=True)
class RaceOutcome:
    """What a racing worker sent back: its target's report, or the traceback of what the target raised."""

    worker: int
    report: dict | None
    failure: str | None


def racing(target: Callable[..., dict], arguments: list[tuple], timeout: float = 240.0) -> list[dict]:
    """Run `target(*args, start)` in a spawned process per entry of `arguments`, all let go at once when
    all are ready (`start` is their barrier); the report each returned, once every process ended with exit
    0. A worker that raised, or died without a report, fails the test as soon as that is seen, with its
    traceback or exit code and its stderr (not after `timeout`: that is for a worker still running)."""
    spawn = multiprocessing.get_context("spawn")
    start, results = spawn.Barrier(len(arguments)), spawn.Queue()
    with tempfile.TemporaryDirectory(prefix="racing-") as folder:
        stderrs = [Path(folder) / f"worker-{worker}.stderr" for worker in range(len(arguments))]
        workers = [spawn.Process(target=_race, args=(target, worker, args, stderrs[worker], start, results))
                   for worker, args in enumerate(arguments)]
        for worker in workers:
            worker.start()
        outcomes: dict[int, RaceOutcome] = {}
        try:
            _collect(outcomes, workers, results, timeout)
            ending = time.monotonic() + 30  # for the others to end after a failure, and all to exit
            for worker in workers:
                worker.join(max(0.0, ending - time.monotonic()))
            if len(outcomes) < len(workers):
                _drain(results, outcomes)
        finally:
            killed = {number for number, worker in enumerate(workers) if worker.is_alive()}
            for number in killed:
                workers[number].kill()
                workers[number].join(30)
        problems = [_problem(worker, number, outcomes.get(number), number in killed, stderrs[number])
                    for number, worker in enumerate(workers)]
    if any(problems):
        pytest.fail("\n\n".join(problem for problem in problems if problem), pytrace=False)
    return [outcomes[number].report for number in range(len(workers))]


def _race(target: Callable[..., dict], worker: int, args: tuple, stderr: Path, start: Any, results: Any) -> None:
    """The spawned side of `racing`: its stderr to a file of its own, and its target's report or failure sent
    back (exit 1 after a failure)."""
    with stderr.open("w") as written:
        os.dup2(written.fileno(), 2)
    faulthandler.enable()  # a crash in native code still leaves a Python stack in that stderr
    try:
        results.put(RaceOutcome(worker, target(*args, start), None))
    except threading.BrokenBarrierError:
        results.put(RaceOutcome(worker, None, "let go by the barrier another worker broke when it failed"))
        raise SystemExit(1) from None
    except BaseException:
        start.abort()  # the workers still waiting for this one at the barrier fail now, not never
        results.put(RaceOutcome(worker, None, traceback.format_exc()))
        raise SystemExit(1) from None


def _collect(outcomes: dict[int, RaceOutcome], workers: list[BaseProcess], results: Any, timeout: float) -> None:
    """Add the outcomes sent back, by worker, until every worker sent one, one failed, one ended without
    sending any, or `timeout` passed."""
    deadline = time.monotonic() + timeout
    while len(outcomes) < len(workers) and time.monotonic() < deadline:
        try:
            outcome = results.get(timeout=0.5)
        except queue.Empty:
            # An outcome is in the pipe before its worker exits: one more look finds any sent meanwhile.
            ended = [number for number, worker in enumerate(workers) if worker.exitcode is not None]
            if any(number not in outcomes for number in ended) and not _drain(results, outcomes):
                return
            continue
        outcomes[outcome.worker] = outcome
        if outcome.failure is not None:
            return


def _drain(results: Any, outcomes: dict[int, RaceOutcome]) -> bool:
    """Add the outcomes already sent; whether there were any."""
    found = False
    while True:
        try:
            outcome = results.get(timeout=1.0)
        except queue.Empty:
            return found
        outcomes[outcome.worker] = outcome
        found = True


def _problem(worker: BaseProcess, number: int, outcome: RaceOutcome | None, killed: bool, stderr: Path) -> str:
    """What went wrong with a worker, with its stderr; empty when it reported and exited 0."""
    if outcome is not None and outcome.failure is not None:
        problem = f"racing worker {number} raised (exit code {worker.exitcode}):\n{outcome.failure}"
    elif killed:
        problem = f"racing worker {number} sent no report and was still running: killed"
    elif outcome is None:
        problem = f"racing worker {number} exited with code {worker.exitcode} without a report"
    elif worker.exitcode != 0:
        problem = f"racing worker {number} reported, then exited with code {worker.exitcode}"
    else:
        return ""
    written = stderr.read_text(errors="replace").strip() if stderr.exists() else ""
    return f"{problem}\n--- its stderr ---\n{written}" if written else f"{problem}\n(its stderr was empty)"
