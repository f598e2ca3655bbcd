"""Analytics over a large history: every report, timed as `blipflow analytics` runs it.

Generates a synthetic but realistic history (seeded, deterministic): people post at random, a third of
them new threads and the rest replies to recent blips; each blip draws answers from the 50 agents, which
answer after their own lognormal latency, agents answering agents up to a chain of 3 (the dispatch
policy's default); content follows a Zipf vocabulary with English stopwords. The blips are stored through
the ingest path (Jetstream frames, batches of 20,000; each received when posted, as live ingest would)
and each agent's dispatch windows go into the ledger, the control plane's (a SQLite file beside the store;
answered ones match its replies; silent, failed and retried ones at its own rates).

The reports that read the ledger (silence, errors) scan the store's copy of its windows, which each of
them first brings up to date with the windows written since (blipflow/analytics/window_copy.py): the
first copy of a history's windows, which reads them all, is timed on its own (`window_copy_first_ms`; null
when the store kept holds a copy already). Every report then runs over the whole history with the agents
configured, each run one connection: open, prelude, query, result as Arrow. `first_run_ms` holds each
report's first run, `reports` the median of the `--repeat` runs after it: top-terms counts every hour's
words on its first run over a history and keeps the counts (see blipflow/analytics/sql/top-terms.sql), so
its first run is the one that pays. Then the Parquet export of the whole history is timed, an hour of new
traffic (1,000 blips) arrives, and top-terms (which counts only that hour) and the export refresh (which
rewrites only the day that changed) are timed again; so are silence and errors after dispatch's hour in
the ledger (`ledger_reports_after_an_hour_ms`): the windows that were open end, 1,000 new ones open.
Last line: one JSON object.

    python bench/analytics.py [--blips 1000000] [--agents 50] [--people 3000] [--days 30] [--seed 7]
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import math
import random
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import orjson
from sqlalchemy import update

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from blipflow.analytics.export import export_parquet  # noqa: E402
from blipflow.analytics.reports import Selection, reports, run_report  # noqa: E402
from blipflow.analytics.window_copy import NOTHING_COPIED, bring_up_to_date, position  # noqa: E402
from blipflow.config import AgentConfig  # noqa: E402
from blipflow.control import tables  # noqa: E402
from blipflow.control.engine import ControlPlane  # noqa: E402
from blipflow.control.scans import window_count  # noqa: E402
from blipflow.ingest.simulator import random_id  # noqa: E402
from blipflow.model.blip import BlipRow  # noqa: E402
from blipflow.model.tids import tid  # noqa: E402
from blipflow.store.history import IngestBatch, Store  # noqa: E402

START_US = 1_760_000_000_000_000
BATCH = 20_000
NEW_HOUR_BLIPS = 1_000
NEW_HOUR_WINDOWS = 1_000
LEDGER_REPORTS = ("silence", "errors")
MAX_AGENT_CHAIN = 3
HUMAN_ROOT_SHARE = 1 / 3
ANSWERS_PER_HUMAN_BLIP = 0.8  # agents answering one person's blip, on average
ANSWERS_PER_AGENT_BLIP = 0.25
STOPWORDS = ("the a of and to in is that it for on with as this be are was at by not or from but have an they "
             "we you i what so if about can more there their which when will would just like do all one my our "
             "how your some than then them these into also has had been were its it's").split()


@dataclass(frozen=True)
class Author:
    did: str
    agent: int | None  # the agent's number, or None for a person
    interest: float = 0.0  # agents: relative chance to be the one answering
    median_latency_s: float = 0.0


@dataclass(frozen=True)
class Post:
    did: str
    rkey: str
    time_us: int
    agent_chain: int  # how many agents' blips in a row end here (0: a person's)
    root_uri: str | None
    parent_uri: str | None

    @property
    def uri(self) -> str:
        return f"at://{self.did}/stream.thought.blip/{self.rkey}"


def conversation(args: argparse.Namespace, agents: list[Author], people: list[Author], start_us: int) -> Iterator[Post]:
    """Posts in time order until `args.blips`: people arrive as a Poisson process, agents answer later."""
    rng = random.Random(args.seed)
    blips_per_person_post = 1 + ANSWERS_PER_HUMAN_BLIP * (1 + ANSWERS_PER_AGENT_BLIP + ANSWERS_PER_AGENT_BLIP ** 2)
    people_per_s = args.blips / blips_per_person_post / (args.days * 86_400)
    # cumulative weights, added up once rather than on every draw: a few people talk a lot
    people_weights = list(itertools.accumulate(1 / (rank + 1) ** 0.9 for rank in range(len(people))))
    interests = list(itertools.accumulate(agent.interest for agent in agents))
    recent: deque[Post] = deque(maxlen=300)
    pending: list[tuple[int, int, Author, Post | None]] = []  # (time_us, order, author, parent)
    order = 0
    next_person_us = start_us
    produced = 0
    while produced < args.blips:
        if not pending or next_person_us <= pending[0][0]:
            author, parent = rng.choices(people, cum_weights=people_weights)[0], None
            if recent and rng.random() > HUMAN_ROOT_SHARE:
                parent = rng.choice(recent)
            time_us = next_person_us
            next_person_us += int(rng.expovariate(people_per_s) * 1e6) + 1
        else:
            time_us, _, author, parent = heapq.heappop(pending)
        chain = (parent.agent_chain + 1 if parent and parent.agent_chain else 1) if author.agent is not None else 0
        post = Post(author.did, tid(time_us, rng.randrange(1024)), time_us, chain,
                    (parent.root_uri or parent.uri) if parent else None, parent.uri if parent else None)
        yield post
        produced += 1
        recent.append(post)
        if chain >= MAX_AGENT_CHAIN:
            continue
        for answering in dict.fromkeys(rng.choices(agents, cum_weights=interests, k=poisson(rng, ANSWERS_PER_AGENT_BLIP if chain
                                                                      else ANSWERS_PER_HUMAN_BLIP))):
            if answering.did != author.did:
                latency_s = answering.median_latency_s * math.exp(rng.gauss(0, 0.6))
                order += 1
                heapq.heappush(pending, (time_us + int(latency_s * 1e6), order, answering, post))


def poisson(rng: random.Random, mean: float) -> int:
    threshold, count, product = math.exp(-mean), 0, rng.random()
    while product > threshold:
        count += 1
        product *= rng.random()
    return count


class Writer:
    """Blip content from a Zipf vocabulary: agents write longer than people."""

    def __init__(self, seed: int, vocabulary: int = 4000) -> None:
        self.rng = np.random.default_rng(seed)
        syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]
        made: list[str] = []
        seen = set(STOPWORDS)
        while len(made) < vocabulary:
            word = "".join(self.rng.choice(syllables, size=int(self.rng.integers(2, 5))))
            if word not in seen:
                seen.add(word)
                made.append(word)
        self.words = np.array(STOPWORDS + made, dtype=object)
        weights = 1 / np.arange(1, len(self.words) + 1) ** 1.07
        self.weights = weights / weights.sum()

    def contents(self, lengths: list[int]) -> list[str]:
        picks = self.words[self.rng.choice(len(self.words), size=sum(lengths), p=self.weights)]
        texts, at = [], 0
        for length in lengths:
            texts.append(" ".join(picks[at:at + length]).capitalize() + ".")
            at += length
        return texts

    def length(self, agent: bool) -> int:
        return int(min(150, max(3, self.rng.lognormal(math.log(40 if agent else 15), 0.5))))


def frame(post: Post, content: str) -> BlipRow:
    record: dict = {"$type": "stream.thought.blip", "content": content,
                    "createdAt": datetime.fromtimestamp(post.time_us / 1e6, timezone.utc).isoformat()}
    if post.parent_uri:
        record["reply"] = {"root": {"uri": post.root_uri, "cid": "bafyroot"},
                           "parent": {"uri": post.parent_uri, "cid": "bafyparent"}}
    event = {"did": post.did, "time_us": post.time_us, "kind": "commit",
             "commit": {"rev": post.rkey, "operation": "create", "collection": "stream.thought.blip",
                        "rkey": post.rkey, "cid": "bafy" + post.rkey, "record": record}}
    return (post.uri, post.time_us, "create", orjson.dumps(event))


def store_posts(store: Store, posts: Iterable[Post], writer: Writer, agents: list[Author]) -> tuple[list[int], int, int]:
    """Posts stored through the ingest path, in batches as ingest writes them; returns each agent's reply
    count and the first and last post time."""
    agent_of = {agent.did: agent for agent in agents}
    replies = [0] * len(agents)
    held: list[Post] = []
    first_us = last_us = 0

    def flush() -> None:
        lengths = [writer.length(post.did in agent_of) for post in held]
        rows = {post.uri: frame(post, content) for post, content in zip(held, writer.contents(lengths))}
        store.apply(IngestBatch(blips=rows))
        held.clear()

    for post in posts:
        if post.did in agent_of:
            replies[agent_of[post.did].agent] += 1
        first_us, last_us = first_us or post.time_us, post.time_us
        held.append(post)
        if len(held) == BATCH:
            flush()
    if held:
        flush()
    return replies, first_us, last_us


def store_history(store: Store, plane: ControlPlane, args: argparse.Namespace, agents: list[Author],
                  people: list[Author]) -> dict:
    replies, first_us, last_us = store_posts(store, conversation(args, agents, people, START_US), Writer(args.seed),
                                             agents)
    handles = {author.did: f"{author.did[8:16]}.example.com" for author in people[: len(people) // 2]}
    store.apply(IngestBatch(handles=handles))
    with store.connect() as db:  # as a live ingest would have stored them: each blip received when posted
        db.execute("UPDATE blips SET ingested_at = make_timestamptz(time_us)")
    store_windows(plane, args, replies, first_us, last_us)
    return {"agent_replies": sum(replies)}


def store_new_hour(store: Store, args: argparse.Namespace, agents: list[Author], people: list[Author]) -> None:
    """An hour of new traffic after the history, received now as live ingest receives it."""
    hour = argparse.Namespace(**{**vars(args), "blips": NEW_HOUR_BLIPS, "days": 1 / 24, "seed": args.seed + 3})
    after_history = START_US + int(args.days * 86_400 * 1e6) + 3_600_000_000
    store_posts(store, conversation(hour, agents, people, after_history), Writer(args.seed), agents)


def store_windows(plane: ControlPlane, args: argparse.Namespace, replies: list[int], first_us: int,
                  last_us: int) -> None:
    """Each agent's ledger: one answered window per reply, silent ones at its silence rate, some retried
    or failing at its error rate, a few still open."""
    rng = random.Random(args.seed + 1)
    columns: dict[str, list] = {name: [] for name in ("id", "agent", "state", "size", "created_at", "attempts",
                                                      "error")}
    for number, answered in enumerate(replies):
        silence, errors = rng.uniform(0.3, 0.9), rng.uniform(0.005, 0.05)
        silent = int(answered * silence / (1 - silence))
        states = ["answered"] * answered + ["silent"] * silent + ["failed"] * rng.randint(0, 5) + ["pending"] * 2
        for state in states:
            retried = state == "failed" or rng.random() < errors
            columns["id"].append(f"w{number}-{len(columns['id'])}")
            columns["agent"].append(f"agent-{number:02d}")
            columns["state"].append(state)
            columns["size"].append(rng.randint(1, 20))
            columns["created_at"].append(datetime.fromtimestamp(rng.uniform(first_us, last_us) / 1e6, timezone.utc))
            columns["attempts"].append(0 if state == "pending" else rng.randint(2, 4) if retried else 1)
            columns["error"].append(rng.choice(["letta 500", "timed out after 60 s"]) if state == "failed" else None)
    with plane.writing() as session:  # the ledger is the control plane's
        session.execute(tables.Window.__table__.insert(), [
            dict(zip(columns, values), failures=0, strikes=0) for values in zip(*columns.values())])


def store_dispatch_hour(plane: ControlPlane, args: argparse.Namespace, last_us: int) -> int:
    """Dispatch's hour in the ledger: every window that was open or failing ends, answered, and new ones
    open; returns how many windows were written."""
    window = tables.Window
    opened = datetime.fromtimestamp(last_us / 1e6, timezone.utc)
    rng = random.Random(args.seed + 4)
    with plane.writing() as session:
        ended = session.execute(update(window).where(window.state.in_(["pending", "sending", "failed"]))
                                .values(state="answered", attempts=window.attempts + 1)).rowcount
        session.execute(window.__table__.insert(), [
            {"id": f"hour-{number}", "agent": f"agent-{rng.randrange(args.agents):02d}", "state": "pending",
             "size": rng.randint(1, 20), "created_at": opened, "attempts": 0, "failures": 0, "strikes": 0}
            for number in range(NEW_HOUR_WINDOWS)])
    return ended + NEW_HOUR_WINDOWS


def time_first_copy(store: Store, plane: ControlPlane) -> float | None:
    """The first copy of the ledger's windows into the store, timed; None when the store holds one already."""
    with store.connect() as db:
        if position(db, plane) != NOTHING_COPIED:
            return None
    started = time.perf_counter()
    copied = bring_up_to_date(store, plane)
    elapsed_ms = (time.perf_counter() - started) * 1000
    print(f"first copy of the ledger's windows: {copied} in {elapsed_ms:.0f} ms", file=sys.stderr)
    return round(elapsed_ms, 1)


def authors(args: argparse.Namespace) -> tuple[list[Author], list[Author]]:
    rng = random.Random(args.seed + 2)
    agents = [Author(f"did:plc:agent{number:02d}{random_id(rng, 17)}", number, rng.uniform(0.2, 1.0),
                     math.exp(rng.uniform(math.log(1.5), math.log(40)))) for number in range(args.agents)]
    people = [Author(f"did:plc:{random_id(rng, 24)}", None) for _ in range(args.people)]
    return agents, people


def time_report(store: Store, plane: ControlPlane, name: str, configured: list[AgentConfig]) -> tuple[float, int]:
    started = time.perf_counter()
    rows = run_report(store, plane, reports()[name], Selection(), configured).num_rows
    return (time.perf_counter() - started) * 1000, rows


def time_reports(store: Store, plane: ControlPlane, configured: list[AgentConfig],
                 repeat: int) -> tuple[dict[str, float], dict[str, float]]:
    """Each report's first run, and the median of `repeat` runs after it."""
    medians: dict[str, float] = {}
    first: dict[str, float] = {}
    for name in reports():
        first_ms, rows = time_report(store, plane, name, configured)
        runs = [time_report(store, plane, name, configured)[0] for _ in range(repeat)]
        first[name], medians[name] = round(first_ms, 1), round(statistics.median(runs), 1)
        print(f"{name}: {medians[name]} ms ({rows} rows; first run {first[name]} ms, then {[round(ms) for ms in runs]})",
              file=sys.stderr)
    return medians, first


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--blips", type=int, default=1_000_000)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--people", type=int, default=3000)
    parser.add_argument("--days", type=float, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="keep the generated store at this path (reused if it exists)")
    args = parser.parse_args()

    agents, people = authors(args)
    configured = [AgentConfig(name=f"agent-{agent.agent:02d}", agent_id=f"bench-{agent.agent}", did=agent.did)
                  for agent in agents]
    with tempfile.TemporaryDirectory() as folder:
        path = args.keep or Path(folder) / "bench.duckdb"
        store, plane = Store(path), ControlPlane(f"sqlite:///{path.with_suffix('.control.sqlite')}")
        generated: dict = {}
        if not path.exists():
            started = time.perf_counter()
            generated = store_history(store, plane, args, agents, people)
            generated["generate_s"] = round(time.perf_counter() - started, 1)
            print(f"history generated and stored in {generated['generate_s']} s", file=sys.stderr)
        blips, windows = store.blip_count(), window_count(plane)
        first_copy_ms = time_first_copy(store, plane)
        timings, first_runs = time_reports(store, plane, configured, args.repeat)
        started = time.perf_counter()
        exported = export_parquet(store, Path(folder) / "parquet")
        export_ms = round((time.perf_counter() - started) * 1000)
        store_new_hour(store, args, agents, people)
        top_terms_new_hour_ms, _ = time_report(store, plane, "top-terms", configured)
        started = time.perf_counter()
        refreshed = export_parquet(store, Path(folder) / "parquet")
        export_refresh_ms = round((time.perf_counter() - started) * 1000)
        windows_written = store_dispatch_hour(plane, args, START_US + int(args.days * 86_400 * 1e6))
        after_an_hour = {name: round(time_report(store, plane, name, configured)[0], 1) for name in LEDGER_REPORTS}
    print(json.dumps({
        "bench": "analytics", "blips": blips, "agents": args.agents, "windows": windows, **generated,
        "window_copy_first_ms": first_copy_ms,
        "reports": timings, "max_ms": max(timings.values()), "target_ms": 2000, "first_run_ms": first_runs,
        "top_terms_after_new_hour_ms": round(top_terms_new_hour_ms, 1),
        "export_ms": export_ms, "export_days": len(exported.days),
        "export_refresh_ms": export_refresh_ms, "export_refresh_days": len(refreshed.days),
        "windows_written_in_an_hour": windows_written, "ledger_reports_after_an_hour_ms": after_an_hour,
    }))


if __name__ == "__main__":
    main()
