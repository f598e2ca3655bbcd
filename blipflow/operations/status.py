"""`blipflow status`: how the pipeline is doing, from what the store and the control plane record.

Ingest's figures come from the history store, the agents' (windows, replies, circuits) from the control
plane. Everything here is read from them, so it works while ingest and dispatch run (in other processes)
and after they have stopped: processing rates, lag behind the stream, connection health, bad input,
the identity cache, who speaks (the policy and how far it has decided), and per agent its windows,
response times, failures, circuit and how its blips were decided, by reason.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from blipflow.config import Settings
from blipflow.control.circuits import Circuits
from blipflow.control.coordination import Coordination
from blipflow.control.engine import ControlPlane
from blipflow.control.ledger import AgentFigures, Ledger
from blipflow.control.outbox import Outbox
from blipflow.coordination.state import CoordinationState, state_from_dict
from blipflow.model.ledger import Circuit
from blipflow.store.figures import CursorFigures, ingest_figures
from blipflow.store.history import Store

CLOSED = Circuit("closed", 0, None, None)


def status(store: Store, plane: ControlPlane, settings: Settings) -> dict[str, Any]:
    figures = ingest_figures(store)
    blips, counters = figures.blips, figures.counters
    hits, misses = counters.get("identity.cache_hits", 0), counters.get("identity.cache_misses", 0)
    return {
        "store": str(store.path),
        "ingest": {
            "blips": blips.count,
            "blips_per_minute_last_5_min": round(blips.last_5_min / 5, 1),
            "blips_per_minute_last_hour": round(blips.last_hour / 60, 1),
            "last_stored_at": iso(blips.last_stored_at),
            **newest_event(figures.cursors),
            "events": counters.get("ingest.events", 0),
            "connects": counters.get("ingest.connects", 0),
            "disconnects": counters.get("ingest.disconnects", 0),
            "bad_input": {name.removeprefix("ingest.bad."): value
                          for name, value in counters.items() if name.startswith("ingest.bad.")},
            "cursors": {cursor.source: {"cursor": cursor.cursor, "updated_at": iso(cursor.updated_at)}
                        for cursor in figures.cursors},
        },
        "identity_cache": {
            "hits": hits,
            "misses": misses,
            "hit_rate": round(hits / (hits + misses), 3) if hits + misses else None,
        },
        "control_plane": plane.name,
        "coordination": coordination_status(plane, settings),
        "agents": agents_status(settings, Ledger(plane).figures(), Circuits(plane).all(), Outbox(plane).counts(),
                                Ledger(plane).decision_counts()),
    }


def coordination_status(plane: ControlPlane, settings: Settings) -> dict[str, Any]:
    """The policy in force, how far coordination has decided, and the threads it is keeping track of."""
    coordination = Coordination(plane)
    position = coordination.position(datetime.now(timezone.utc))
    state = state_from_dict(position.state) if position.state else CoordinationState()
    return {
        "strategy": settings.coordination.strategy,
        "decided_through_seq": position.through_seq,
        "blips_to_decide": coordination.pending(position.through_seq),
        "threads": len(state.threads),
        "threads_closed": sum(1 for thread in state.threads.values() if thread.closed is not None),
        "floors_open": sum(1 for thread in state.threads.values() if thread.floor is not None),
    }


def newest_event(cursors: list[CursorFigures]) -> dict[str, float | None]:
    """How far behind the stream the newest event stored was when it arrived, and how long ago that was.

    Measured from the event's own time when it arrived, not from now: on a quiet stream the lag stays
    what it was and only the time since the last event grows."""
    newest = next((cursor for cursor in cursors if cursor.newest_received_at is not None), None)  # newest first
    if newest is None:
        return {"lag_seconds": None, "last_event_seconds_ago": None}
    return {"lag_seconds": rounded(newest.lag_seconds), "last_event_seconds_ago": rounded(newest.seconds_since_newest)}


def agents_status(settings: Settings, windows: dict[str, AgentFigures], circuits: dict[str, Circuit],
                  replies: dict[str, dict[str, int]],
                  decisions: dict[str, dict[str, dict[str, int]]]) -> dict[str, dict[str, Any]]:
    """Configured agents first, then any the ledger knows from an earlier configuration."""
    names = [agent.name for agent in settings.agents]
    names += sorted((set(windows) | set(circuits) | set(decisions)) - set(names))
    result = {}
    for name in names:
        figures, circuit = windows.get(name, AgentFigures()), circuits.get(name, CLOSED)
        done = figures.answered + figures.silent + figures.failed + figures.quarantined
        spoke = figures.answered + figures.silent
        result[name] = {
            "configured": name in {agent.name for agent in settings.agents},
            "circuit": circuit.state,
            "failures_in_a_row": circuit.failures,
            "circuit_opened_at": iso(circuit.opened_at),
            "circuit_reason": circuit.reason,
            "windows": {"answered": figures.answered, "silent": figures.silent, "failed": figures.failed,
                        "quarantined": figures.quarantined, "waiting": figures.waiting},
            "silence_rate": round(figures.silent / spoke, 3) if spoke else None,
            "error_rate": round((figures.failed + figures.quarantined) / done, 3) if done else None,
            # attempts to deliver a window, as the errors report counts them: each failed one is one log line
            "calls": figures.calls,
            "failed_calls": figures.failed_calls,
            "retries": figures.retries,
            "letta_ms_p50": rounded(figures.letta_ms_p50),
            "letta_ms_p95": rounded(figures.letta_ms_p95),
            "last_answer_at": iso(figures.last_finished_at),
            "replies": replies.get(name, {}),
            "decisions": decisions.get(name, {"handed": {}, "skipped": {}}),
        }
    return result


def render(report: dict[str, Any]) -> str:
    """The report for a person: one line per fact that matters, agents last."""
    ingest, cache, coordination = report["ingest"], report["identity_cache"], report["coordination"]
    bad = ", ".join(f"{reason} {count}" for reason, count in ingest["bad_input"].items()) or "none"
    lines = [
        f"store       {report['store']}",
        f"control     {report['control_plane']}",
        f"blips       {ingest['blips']} stored; {ingest['blips_per_minute_last_5_min']}/min (5 min), "
        f"{ingest['blips_per_minute_last_hour']}/min (hour); last at {ingest['last_stored_at'] or '-'}",
        f"stream      {stream_position(ingest)}; {ingest['connects']} connects, "
        f"{ingest['disconnects']} disconnects; bad input: {bad}",
        f"identities  {cache['hits']} cache hits, {cache['misses']} misses"
        + (f" ({cache['hit_rate']:.0%} hits)" if cache["hit_rate"] is not None else ""),
        f"who speaks  {coordination['strategy']}; {coordination['blips_to_decide']} blips to decide; "
        f"{coordination['threads']} threads ({coordination['threads_closed']} closed, "
        f"{coordination['floors_open']} with a floor open)",
    ]
    for name, agent in report["agents"].items():
        windows = agent["windows"]
        circuit = agent["circuit"] if agent["circuit"] == "closed" else (
            f"{agent['circuit'].upper()} since {agent['circuit_opened_at']} after {agent['failures_in_a_row']} failures"
            + (f" ({agent['circuit_reason']})" if agent["circuit_reason"] else ""))
        replies = ", ".join(f"{count} {state}" for state, count in agent["replies"].items()) or "none"
        lines.append(
            f"agent {name}{'' if agent['configured'] else ' (not configured)'}: circuit {circuit}; "
            f"windows {windows['answered']} answered, {windows['silent']} silent, {windows['failed']} failed, "
            f"{windows['quarantined']} quarantined, {windows['waiting']} waiting; "
            f"calls {agent['calls']}, {agent['failed_calls']} failed, {agent['retries']} retries; "
            f"Letta p50 {milliseconds(agent['letta_ms_p50'])}, p95 {milliseconds(agent['letta_ms_p95'])}; "
            f"replies {replies}"
        )
        lines.append(f"  decided: handed {by_reason(agent['decisions']['handed'])}; "
                     f"skipped {by_reason(agent['decisions']['skipped'])}")
    return "\n".join(lines)


def by_reason(counts: dict[str, int]) -> str:
    return ", ".join(f"{count} {reason}" for reason, count in sorted(counts.items(), key=lambda item: -item[1])) or "none"


def stream_position(ingest: dict[str, Any]) -> str:
    if ingest["last_event_seconds_ago"] is None:
        return "no event recorded yet"
    return (f"last event {seconds(ingest['last_event_seconds_ago'])} ago, "
            f"{seconds(ingest['lag_seconds'])} behind the stream when it arrived")


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds")


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:g} s"


def milliseconds(value: float | None) -> str:
    return "-" if value is None else f"{value:g} ms"
