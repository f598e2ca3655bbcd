"""The commands about who speaks: `why` one blip was decided as it was, and `replay` to price a policy on
the stored history before turning it on."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer

from blipflow.config import Settings
from blipflow.control.engine import ControlPlane
from blipflow.coordination.replay_report import ReplayReport
from blipflow.model.coordination_policy import CoordinationPolicy, load_policy
from blipflow.model.failures import BadRequest
from blipflow.model.moments import parse_moment
from cli.common import Output, settings


def why(
    uri: Annotated[str, typer.Argument(help="the blip's at-uri")],
    agent: Annotated[Optional[str], typer.Option(help="only this agent")] = None,
    output: Annotated[Output, typer.Option(help="human, or one JSON object per agent and line")] = Output.human,
) -> None:
    """How one blip was decided for each agent — handed or skipped, and why — and the window it went in."""
    from blipflow.operations.why import UnknownBlip, render
    from blipflow.operations.why import why as explain

    loaded = settings()
    agents = [configured.name for configured in loaded.agents]
    if agent is not None and agent not in agents:
        raise BadRequest(f"bad --agent: {agent!r} is not a configured agent ({', '.join(agents) or 'none configured'})")
    try:
        verdicts = explain(ControlPlane.from_settings(loaded), uri, [agent] if agent else agents)
    except UnknownBlip as error:
        raise BadRequest(str(error)) from None
    if agent is not None:
        verdicts = [verdict for verdict in verdicts if verdict.agent == agent]
    if output is Output.json:
        for verdict in verdicts:
            typer.echo(json.dumps({"uri": uri, **verdict.as_dict()}))
    else:
        typer.echo(render(uri, verdicts))


def replay(
    policy: Annotated[str, typer.Option(help="a strategy's name, or a YAML file (its `coordination:` section)")],
    compare: Annotated[Optional[str], typer.Option(help="a second policy, priced on the same history")] = None,
    since: Annotated[Optional[str], typer.Option(help="from a date, a time or an age (2h, 7d, 2026-12-01)")] = None,
    until: Annotated[Optional[str], typer.Option(help="up to a date, a time or an age")] = None,
    agents: Annotated[Optional[str], typer.Option(help="only these configured agents, comma separated")] = None,
    output: Annotated[Output, typer.Option(help="human, or one JSON object")] = Output.human,
) -> None:
    """Run the stored history through a policy without calling Letta (recorded replies stand in where the
    policy would have caused them) and report what it would cost: Letta calls per human blip, fairness,
    addressed recall, threads closed, the longest agent-only chain."""
    from blipflow.coordination.history_loader import recorded_history
    from blipflow.coordination.participants import roster
    from blipflow.coordination.replay import replay as run_replay
    from blipflow.network.accounts import with_learned_dids
    from blipflow.store.history import Store

    loaded = settings()
    policies = {"policy": policy_named(policy, "--policy")}
    if compare is not None:
        policies["compare"] = policy_named(compare, "--compare")
    now = datetime.now(timezone.utc)
    since_us = microseconds(parse_moment(since, "--since", now)) if since else 0
    until_us = microseconds(parse_moment(until, "--until", now)) if until else 2**62
    chosen = agents_named(loaded, agents)
    with_dids = with_learned_dids(chosen, loaded.bluesky, timeout=loaded.publish.timeout)
    reports: dict[str, ReplayReport] = {}
    for label, priced in policies.items():
        cast = roster(with_dids, priced.known_agents, moderator=priced.moderator)
        history = list(recorded_history(Store.existing(loaded.store), cast, since_us=since_us, until_us=until_us))
        with typer.progressbar(length=len(history), label=f"replaying {priced.strategy}", file=sys.stderr) as bar:
            done = [0]

            def advance(replayed: int, _total: int) -> None:
                bar.update(replayed - done[0])
                done[0] = replayed

            reports[label] = run_replay(history, cast, priced, progress=advance)
    if output is Output.json:
        typer.echo(json.dumps({label: report.as_dict() for label, report in reports.items()}))
    else:
        typer.echo("\n\n".join(described(report) for report in reports.values()))


def policy_named(source: str, option: str) -> CoordinationPolicy:
    if not Path(source).exists() and source.endswith((".yaml", ".yml")):
        raise BadRequest(f"bad {option}: {source}: no such file")
    return load_policy(source)


def agents_named(loaded: Settings, names: str | None) -> list:
    if names is None:
        return loaded.agents
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    known = {agent.name: agent for agent in loaded.agents}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise BadRequest(f"bad --agents: {unknown[0]!r} is not a configured agent ({', '.join(known) or 'none'})")
    return [known[name] for name in wanted]


def microseconds(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def described(report: ReplayReport) -> str:
    calls = ", ".join(f"{agent} {count}" for agent, count in sorted(report.calls_per_agent.items()))
    reasons = ", ".join(f"{reason} {count}" for reason, count in report.reasons.items())
    return "\n".join([
        f"policy        {report.strategy}, {report.agents} agents",
        f"history       {report.human_blips} human blips, {report.recorded_replies} recorded replies "
        f"({report.replies_kept} the policy would have caused)",
        f"Letta calls   {report.calls}: {report.calls_per_human_blip:.2f} per human blip (gini {report.gini:.3f})",
        f"addressed     {report.addressed_recall:.1%} handed over ({report.addressed_pairs} pairs, "
        f"{report.addressed_bounded} refused by a hard bound)",
        f"threads       {report.threads}, {report.threads_closed} closed by termination; "
        f"longest agent-only chain {report.max_chain}",
        f"per agent     {calls or 'none'}",
        f"decisions     {reasons or 'none'}",
    ])
