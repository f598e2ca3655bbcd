"""The `blipflow` command."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from blipflow.analytics.export import export_parquet
from blipflow.analytics.output import OutputFormat, write_rows
from blipflow.analytics.reports import (
    Bucket,
    Query,
    Selection,
    handles_of_uris,
    known_agents,
    nothing_to_report,
    reports,
    run_report,
    selection,
)
from blipflow.config import (
    ConfigError,
    Settings,
)
from blipflow.control.engine import ControlPlane, ControlPlaneError
from blipflow.control.ledger import Ledger
from blipflow.ingest.source import SourceUnavailable
from blipflow.model.blip import Blip, with_identity
from blipflow.model.coordination_policy import PolicyError
from blipflow.model.failures import BadRequest, Failure
from blipflow.model.formatting import blip_json, format_blip
from blipflow.network.identity import IdentityResolver
from blipflow.process.console_logging import show_own_messages_only
from blipflow.process.shutdown import as_a_command
from blipflow.store.history import Store, StoreError
from cli import coordination
from cli.common import PROJECT_ROOT, Output, options, prefect_environment, settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Letta agents in the thought.stream chat, as Prefect flows.")

class SourceName(str, Enum):
    jetstream = "jetstream"
    firehose = "firehose"


@app.callback()
def main_options(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="config file (default: config.yaml)")] = None,
) -> None:
    options.config_file = config


@app.command()
def run(
    source: Annotated[SourceName, typer.Option(help="where blips come from")] = SourceName.jetstream,
    since: Annotated[Optional[str], typer.Option(
        help="backfill from an age, a date or a cursor: 2h, 2026-12-01, 1733500000000000 (Jetstream's time_us); "
             "without it a first run starts at the live end")] = None,
) -> None:
    """Run the main job: ingest every blip into the DuckDB store, until Ctrl-C."""
    from blipflow.ingest.ingester import since_cursor

    loaded = settings()
    cursor = None if since is None else str(since_cursor(since, source.value))  # a bad one is one line, now
    prefect_environment()
    from flows.ingest import (
        ingest,  # Prefect is imported only now, after its environment is set
    )

    path = config_file_parameter()
    typer.echo(f"ingesting from {source.value} into {loaded.store.path} (Ctrl-C stops)", err=True)
    final = flow_in_foreground(lambda: ingest(source=source.value, config_file=path, since=cursor,
                                              return_state=True))
    if final is not None and final.is_failed():
        raise SourceUnavailable(final.message or "ingest failed")


@app.command()
def dispatch() -> None:
    """Send each configured Letta agent its windows of new blips, until Ctrl-C."""
    run_agents_flow("dispatch", "dispatching to")


def run_agents_flow(name: str, doing: str) -> None:
    """Run the long-running flow `flows.<name>.<name>` for the configured agents in the foreground until
    Ctrl-C; a run that fails is one line."""
    loaded = settings()
    if not loaded.agents:
        raise ConfigError(f"bad config: {options.config_file or 'config.yaml'}: agents: none configured for {name}")
    prefect_environment()
    agents_flow = getattr(importlib.import_module(f"flows.{name}"), name)  # Prefect only now, after its environment

    path = config_file_parameter()
    typer.echo(f"{doing} {', '.join(agent.name for agent in loaded.agents)} (Ctrl-C stops)", err=True)
    final = flow_in_foreground(lambda: agents_flow(config_file=path, return_state=True))
    if final is not None and final.is_failed():
        raise Failure(final.message or f"{name} failed", transient=False)


@app.command()
def monitor(
    dids: Annotated[Optional[str], typer.Option(help="only these authors, comma-separated DIDs")] = None,
    output: Annotated[Output, typer.Option(help="human, or one JSON object per line")] = Output.human,
    source: Annotated[SourceName, typer.Option(help="where blips come from")] = SourceName.jetstream,
) -> None:
    """Print blips live as they arrive (read-only; stores nothing but the identity cache)."""
    from blipflow.ingest.ingester import make_source
    from blipflow.ingest.monitor import MonitorSink

    loaded = settings()
    if dids:
        loaded.jetstream.wanted_dids = [did.strip() for did in dids.split(",") if did.strip()]
    resolver = identity_resolver(loaded)
    sink = MonitorSink(resolver, lambda blip: show(blip, output))
    stream = make_source(loaded, source.value)

    try:
        until_interrupted(lambda: asyncio.run(sink.watch(stream)))
    finally:
        resolver.close()


@app.command()
def history(
    limit: Annotated[int, typer.Option(min=1, help="how many of the latest blips")] = 20,
    dids: Annotated[Optional[str], typer.Option(help="only these authors, comma-separated DIDs")] = None,
    output: Annotated[Output, typer.Option(help="human, or one JSON object per line")] = Output.human,
) -> None:
    """Print the latest blips from the store, oldest first."""
    loaded = settings()
    store = existing_store(loaded)
    wanted = [did.strip() for did in dids.split(",")] if dids else None
    blips = store.latest_blips(limit, wanted)
    resolver = identity_resolver(loaded)
    try:
        identities = resolver.resolve([blip.did for blip in blips])
    finally:
        resolver.close()
    for blip in blips:
        show(with_identity(blip, identities[blip.did]), output)


@app.command()
def status(
    output: Annotated[Output, typer.Option(help="human, or one JSON object")] = Output.human,
) -> None:
    """How ingest and each agent are doing: rates, lag, connections, bad input, cache, circuits, latencies."""
    from blipflow.operations.status import render
    from blipflow.operations.status import status as status_report

    loaded = settings()
    report = status_report(existing_store(loaded), ControlPlane.from_settings(loaded), loaded)
    typer.echo(json.dumps(report) if output is Output.json else render(report))


def existing_store(loaded: Settings) -> Store:
    return Store.existing(loaded.store)


app.command()(coordination.why)
app.command()(coordination.replay)


# -- windows set aside -----------------------------------------------------------------------------

windows_app = typer.Typer(help="Dispatch windows that failed or were quarantined: list them, send one again, drop one.")
app.add_typer(windows_app, name="windows")


@windows_app.callback(invoke_without_command=True)
def windows(
    context: typer.Context,
    output: Annotated[Output, typer.Option(help="human, or one JSON object per line")] = Output.human,
) -> None:
    """Windows that failed (waiting to be sent again) or were quarantined, oldest first (as `windows list`)."""
    if context.invoked_subcommand is None:
        list_windows(output)


@windows_app.command("list")
def list_windows(
    output: Annotated[Output, typer.Option(help="human, or one JSON object per line")] = Output.human,
) -> None:
    """Windows that failed (waiting to be sent again) or were quarantined, oldest first."""
    for record in Ledger(ControlPlane.from_settings(settings())).window_records(["failed", "quarantined"]):
        if output is Output.json:
            typer.echo(json.dumps(dataclasses.asdict(record), default=datetime.isoformat))
        else:
            waits = f", next try after {record.retry_at:%Y-%m-%d %H:%M:%S}" if record.state == "failed" and record.retry_at else ""
            typer.echo(f"{record.id}  {record.agent}  {record.state}  {record.size} blips, {record.attempts} attempts, "
                       f"{record.failures} failed{waits}: {record.error}")


@windows_app.command("retry")
def retry_window(window_id: Annotated[str, typer.Argument(help="the window's id (`blipflow windows`)")]) -> None:
    """Send a failed or quarantined window again: dispatch takes it up at once, as its agent's next window."""
    hand_window(window_id, "failed", "will be sent again")


@windows_app.command("drop")
def drop_window(window_id: Annotated[str, typer.Argument(help="the window's id (`blipflow windows`)")]) -> None:
    """Never send a failed or quarantined window: its blips stay decided for its agent, unanswered."""
    hand_window(window_id, "dropped", "dropped for good")


def hand_window(window_id: str, state: str, done: str) -> None:
    record = Ledger(ControlPlane.from_settings(settings())).retry_or_drop_window(window_id, state)
    if record is None:
        raise Failure(f"window {window_id}: no such window", transient=False)
    if record.state not in ("failed", "quarantined"):
        raise Failure(f"window {window_id}: it is {record.state}; only failed or quarantined windows can be "
                      "retried or dropped", transient=False)
    typer.echo(f"window {window_id} of agent {record.agent} ({record.state}): {done}")


# -- publishing ------------------------------------------------------------------------------------


@app.command()
def publish(
    text: Annotated[Optional[str], typer.Argument(help="the blip to post")] = None,
    as_agent: Annotated[Optional[str], typer.Option("--as", help="post as this agent's account")] = None,
    reply_to: Annotated[Optional[str], typer.Option(help="answer the blip at this at-uri")] = None,
    interactive: Annotated[bool, typer.Option("--interactive", "-i", help="post each line typed; Ctrl-D stops")] = False,
) -> None:
    """Post a blip as the configured account (or --as an agent's); prints each blip's at-uri."""
    from blipflow.network.accounts import Session
    from blipflow.publish.manual import account_to_post_as, post, thread_of

    if (text is None) == (not interactive):
        raise typer.BadParameter("give the text of a blip, or --interactive")
    loaded = settings()
    account = account_to_post_as(loaded, as_agent, str(options.config_file or "config.yaml"))
    session = Session(account, timeout=loaded.publish.timeout)
    thread = None
    if reply_to is not None:
        resolver = identity_resolver(loaded)
        try:
            thread = thread_of(reply_to, resolver, timeout=loaded.publish.timeout)
        finally:
            resolver.close()

    def post_one(line: str) -> None:
        for ref in post(session, line, max_blip_length=loaded.publish.max_blip_length, reply_to=thread):
            typer.echo(ref.uri)

    try:
        if not interactive:
            post_one(text or "")
            return
        typer.echo(f"posting as {account.handle}, one blip per line; Ctrl-D stops", err=True)
        until_interrupted(lambda: each_line(post_one))
    finally:
        session.close()


def each_line(handle: Callable[[str], None]) -> None:
    """Hand every non-empty line typed to `handle` until end of input; a failure that may pass is shown
    and the prompt goes on."""
    while True:
        try:
            line = input("> ")
        except EOFError:
            typer.echo("", err=True)
            return
        if not line.strip():
            continue
        try:
            handle(line)
        except Failure as failure:
            if not failure.transient:
                raise
            typer.echo(f"blipflow: {failure}", err=True)


@app.command("take-over")
def take_over_store() -> None:
    """Copy the ledger and outbox of a store written before the control plane into it (once; processes
    that open the control plane do it themselves the first time)."""
    from blipflow.operations.takeover import take_over

    loaded = settings()
    plane = ControlPlane.from_settings(loaded)
    try:
        taken = take_over(plane, loaded.store)
    finally:
        plane.dispose()
    if taken.already:
        typer.echo(f"{taken.store} was taken over before: nothing to do")
    else:
        typer.echo(f"took over {taken.windows} windows, {taken.replies} replies and {taken.blips} blips from "
                   f"{taken.store} into {plane.name}")


@app.command("publish-replies")
def publish_replies() -> None:
    """Post the agents' replies from the outbox as they come, until Ctrl-C."""
    run_agents_flow("publish", "publishing the replies of")


# -- analytics -------------------------------------------------------------------------------------

analytics_app = typer.Typer(no_args_is_help=True, help="Batch analytics over the stored history: reports, charts, Parquet.")
app.add_typer(analytics_app, name="analytics")

Since = Annotated[Optional[str], typer.Option(help="from this date, time or age ago: 2025-10-09, 2025-10-09T08:00Z, 7d, 36h")]
Until = Annotated[Optional[str], typer.Option(help="up to (not including) this date, time or age ago")]
AgentName = Annotated[Optional[str], typer.Option(help="only what concerns this configured agent")]
BucketOption = Annotated[Bucket, typer.Option(help="the period of time series (UTC)")]
Top = Annotated[Optional[int], typer.Option(min=1, help="how many rows a ranking keeps (threads, terms per period)")]


def add_report_command(name: str, report: Query) -> None:
    def command(
        since: Since = None, until: Until = None, agent: AgentName = None, bucket: BucketOption = Bucket.day,
        top: Top = None,
        output: Annotated[OutputFormat, typer.Option(help="how to print the rows")] = OutputFormat.table,
        to: Annotated[Optional[Path], typer.Option(help="write the rows to this file (parquet: <report>.parquet)")] = None,
        chart: Annotated[Optional[Path], typer.Option(help="also draw the report's chart to this .png, .svg or .pdf")] = None,
    ) -> None:
        show_report(name, report, selection_asked(since, until, agent, bucket, top), output, to, chart)

    analytics_app.command(name, help=report.summary)(command)


def selection_asked(since: str | None, until: str | None, agent: str | None, bucket: Bucket, top: int | None) -> Selection:
    return selection(settings().agents, since=since, until=until, agent=agent, bucket=bucket, top=top)


def show_report(name: str, report: Query, chosen: Selection, output: OutputFormat, to: Path | None,
                chart: Path | None) -> None:
    if chart is not None:
        check_chart(name, chart)
    loaded = settings()
    store, plane = existing_store(loaded), ControlPlane.from_settings(loaded)
    table = run_report(store, plane, report, chosen, known_agents(loaded))
    if table.num_rows == 0:
        typer.echo(nothing_to_report(store, plane, name), err=True)
        return
    target = to or (Path(f"{name}.parquet") if output is OutputFormat.parquet else None)
    with file_option("--to", target):
        if write_rows(table, output, title=f"{name}: {chosen.describe()}", to=target):
            typer.echo(f"wrote {table.num_rows} rows to {target}", err=True)
    if chart is not None:
        from blipflow.analytics.charts import save_chart

        with file_option("--chart", chart):
            save_chart(name, table, chosen, chart)
        typer.echo(f"drew the {name} chart to {chart}", err=True)


def check_chart(name: str, chart: Path) -> None:
    from blipflow.analytics.charts import (
        CHARTS,  # matplotlib only when a chart is asked for
    )

    if name not in CHARTS:
        raise BadRequest(f"bad --chart: {name} has no chart (charts: {', '.join(CHARTS)})")
    if chart.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise BadRequest(f"bad --chart: {chart}: name a .png, .svg or .pdf file")
    if not chart.parent.is_dir():
        raise BadRequest(f"bad --chart: {chart}: no folder {chart.parent}")


@contextmanager
def file_option(option: str, path: Path | None) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        raise BadRequest(f"bad {option}: cannot write {path}: {error.strerror or error}") from None


@analytics_app.command("html")
def analytics_html(
    path: Annotated[Path, typer.Argument(help="the page to write")],
    since: Since = None, until: Until = None, agent: AgentName = None, bucket: BucketOption = Bucket.day,
    top: Top = None,
) -> None:
    """Every report in one HTML file: the charts, and each report's first rows."""
    from blipflow.analytics.charts import html_report

    chosen = selection_asked(since, until, agent, bucket, top)
    loaded = settings()
    store, plane = existing_store(loaded), ControlPlane.from_settings(loaded)
    agents = known_agents(loaded)
    results = {name: (report, run_report(store, plane, report, chosen, agents)) for name, report in reports().items()}
    if not any(table.num_rows for _, table in results.values()):
        typer.echo(nothing_to_report(store, plane, "every report"), err=True)
    handles = handles_of_uris(store, [table for _, table in results.values()])
    with file_option("html PATH", path):
        html_report(results, chosen, path, handles)
    typer.echo(f"wrote {path}", err=True)


@analytics_app.command("export")
def analytics_export(
    parquet: Annotated[Path, typer.Option("--parquet", help="the folder to keep the export in")],
) -> None:
    """The history as Parquet partitioned by day; run again, it rewrites only the days that changed."""
    store = existing_store(settings())
    with file_option("--parquet", parquet):
        summary = export_parquet(store, parquet)
    typer.echo(f"exported {summary.blips} blips in {len(summary.days)} changed days to {parquet}"
               if summary.days else f"nothing changed since the last export to {parquet}", err=True)


for _name, _report in reports().items():
    add_report_command(_name, _report)


# -- Prefect: blocks and serving -------------------------------------------------------------------


@app.command()
def serve() -> None:
    """Run every deployment of prefect.yaml in this one process (development, small installs), until Ctrl-C.

    Each flow run is a process of its own; with -c, the runs read that config file."""
    settings()  # a bad config is one line now, not a failure in every run
    prefect_environment()
    from flows.serving import serve_project

    serve_project(PROJECT_ROOT / "prefect.yaml",
                  config_file=options.config_file.resolve() if options.config_file else None)


@app.command("config")
def show_config() -> None:
    """Check the configuration and print it, secrets masked; warn about agents that cannot publish or whose
    DID cannot be known."""
    from blipflow.network.accounts import account_warnings

    loaded = settings()
    typer.echo(loaded.model_dump_json(indent=2))
    for warning in account_warnings(loaded, timeout=loaded.publish.timeout):
        typer.echo(f"blipflow: warning: {warning}", err=True)


def config_file_parameter() -> str | None:
    """The config file as a flow parameter: a path, never the settings themselves (they hold secrets)."""
    return str(options.config_file) if options.config_file else None


def flow_in_foreground(run_flow: Callable[[], Any]) -> Any:
    """Run a long-running flow until Ctrl-C or SIGTERM and return its final state; what it logged and
    emitted reaches the Prefect API before the command ends (flows.prefect_api)."""
    from flows.prefect_api import prefect_api

    def reporting() -> Any:
        with prefect_api():
            return run_flow()

    return until_interrupted(reporting)


def until_interrupted(work: Callable[[], Any]) -> Any:
    """Run `work` and return its result; Ctrl-C or SIGTERM (after the work's own graceful stop) ends it
    quietly."""
    try:
        with as_a_command():
            return work()
    except KeyboardInterrupt:
        typer.echo("stopped", err=True)
        return None


def identity_resolver(loaded: Settings) -> IdentityResolver:
    return IdentityResolver.from_settings(Store.from_config(loaded.store), loaded)


def show(blip: Blip, output: Output) -> None:
    if output is Output.json:
        typer.echo(blip_json(blip))
    else:
        typer.echo(format_blip(blip) + "\n" + "-" * 60)


def main() -> None:
    show_own_messages_only()
    try:
        app()  # usage errors get Typer's own message and exit code
    except (ConfigError, PolicyError, StoreError, ControlPlaneError, SourceUnavailable, Failure, BadRequest) as error:
        typer.echo(f"blipflow: {error}", err=True)
        sys.exit(2 if isinstance(error, (ConfigError, PolicyError, BadRequest)) else 1)
