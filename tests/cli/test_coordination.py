"""`blipflow why` and `blipflow replay` as a person runs them: the verdicts of one blip, a policy priced on
the stored history (and compared with another), and one clear line for what cannot be answered."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone

import pytest
import yaml
from typer.testing import CliRunner

from blipflow.config import load_settings
from blipflow.coordination.participants import Participant, Roster
from blipflow.dispatch.coordinator import Coordinator
from blipflow.dispatch.moderation import names_in
from blipflow.store.history import IngestBatch
from cli.app import app
from tests.support.fed_stores import FedStores
from tests.support.frames import T0, blips, commit_frame, uri
from tests.support.ingest_process import PROJECT_ROOT

HUMAN = "did:plc:human0000000000000000000"
AGENTS = {"ada": ("did:plc:ada00000000000000000000", "postgres"), "bo": ("did:plc:bo000000000000000000000", "rust"),
          "cy": ("did:plc:cy000000000000000000000", "music")}
SECOND = 1_000_000


def history(tmp_path, **coordination):
    """A stored history: 9 human questions, a third on #postgres; ada answered each of those (recorded)."""
    stores = FedStores.beside(tmp_path / "s.duckdb")
    frames = []
    for n in range(9):
        topic = "#postgres" if n % 3 == 0 else "the weather"
        frames.append(commit_frame(HUMAN, f"q{n}", T0 + n * 60 * SECOND, content=f"question {n} about {topic}"))
        if n % 3 == 0:
            question = {"uri": uri(HUMAN, f"q{n}"), "cid": "bafyreicid"}
            frames.append(commit_frame(AGENTS["ada"][0], f"a{n}", T0 + (n * 60 + 5) * SECOND, content="VACUUM",
                                       reply={"root": question, "parent": question}))
    stores.apply(IngestBatch(blips=blips(*frames)))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "store": {"path": str(stores.store.path)}, "coordination": coordination,
        "agents": [{"name": name, "agent_id": f"agent-{name}", "did": did, "skills": [skill]}
                   for name, (did, skill) in AGENTS.items()]}))
    return stores, config


def invoke(config, *args: str):
    return CliRunner().invoke(app, ["-c", str(config), *args])


def test_replay_prices_a_policy_and_compares_it_with_another(tmp_path) -> None:
    _, config = history(tmp_path)
    result = invoke(config, "replay", "--policy", "broadcast", "--compare", "relevance", "--output", "json")
    assert result.exit_code == 0, result.stderr
    reports = json.loads(result.stdout)
    broadcast, relevance = reports["policy"], reports["compare"]
    assert (broadcast["strategy"], broadcast["human_blips"], broadcast["recorded_replies"]) == ("broadcast", 9, 3)
    assert broadcast["calls_per_human_blip"] >= 3  # every agent, every question, and ada's answers to the others
    assert relevance["calls_per_human_blip"] < broadcast["calls_per_human_blip"]
    assert relevance["calls_per_agent"]["ada"] >= 3 and relevance["replies_kept"] == 3  # the postgres questions
    assert "replaying broadcast" in result.stderr  # the progress bar, kept out of the JSON

    human = invoke(config, "replay", "--policy", "relevance", "--agents", "ada,bo")
    assert human.exit_code == 0, human.stderr
    assert "policy        relevance, 2 agents" in human.stdout
    assert "history       9 human blips, 3 recorded replies" in human.stdout


@pytest.mark.process
def test_replay_and_why_refuse_what_they_cannot_use_in_one_line(tmp_path) -> None:
    _, config = history(tmp_path)
    bad_policy = tmp_path / "policy.yaml"
    bad_policy.write_text("coordination: {strategy: relevance, k: 0}\n")
    for args, message in [
        (["replay", "--policy", str(bad_policy)],
         f"blipflow: bad policy: {bad_policy}: k: Input should be greater than or equal to 1 (got 0)"),
        (["replay", "--policy", "loudest"], "blipflow: bad policy: loudest: No such file or directory (or name a "
         "strategy: broadcast, round_robin, random, relevance, moderator, sequential)"),
        (["replay", "--policy", "relevance", "--agents", "ada,zed"],
         "blipflow: bad --agents: 'zed' is not a configured agent (ada, bo, cy)"),
        (["why", uri(HUMAN, "nope")], f"blipflow: blip {uri(HUMAN, 'nope')} is not in the control plane "
         "(not ingested yet, or not a stream.thought.blip)"),
        (["why", uri(HUMAN, "q0"), "--agent", "zed"], "blipflow: bad --agent: 'zed' is not a configured agent (ada, bo, cy)"),
    ]:
        result = subprocess.run([sys.executable, "-m", "cli", "-c", str(config), *args], cwd=PROJECT_ROOT,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and result.stdout == "", args
        assert result.stderr.splitlines() == [message], args


def test_why_shows_each_agents_verdict_and_what_is_not_decided_yet(tmp_path) -> None:
    stores, config = history(tmp_path, strategy="relevance", k=1)
    before = invoke(config, "why", uri(HUMAN, "q0"), "--output", "json")
    assert {json.loads(line)["reason"] for line in before.stdout.splitlines()} == {
        "not coordinated yet (dispatch decides it in its next round)"}
    settings = load_settings(config)
    Coordinator(stores.plane, settings.agents, settings.coordination).step(datetime.now(timezone.utc))

    result = invoke(config, "why", uri(HUMAN, "q0"))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0] == uri(HUMAN, "q0")
    assert "  ada: handed (selected, by relevance)" in result.stdout
    assert "  bo: skipped (not_selected, by relevance): not selected by relevance" in result.stdout
    only = invoke(config, "why", uri(HUMAN, "q0"), "--agent", "bo", "--output", "json")
    assert [json.loads(line)["agent"] for line in only.stdout.splitlines()] == ["bo"]


def test_the_moderators_reply_is_read_for_the_names_it_gives() -> None:
    speakers = Roster.of([Participant("ada"), Participant("bo"), Participant("cy")])
    assert names_in("Bo, then ada.", speakers) == ["bo", "ada"]
    assert names_in("nobody", speakers) == []
    assert names_in("zed, probably", speakers) == ["zed, probably"]  # kept whole, for the reason it is refused
