"""`blipflow status`: figures from the store, for a person and as JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone

import pytest
import yaml
from typer.testing import CliRunner

from blipflow.control.circuits import Circuits
from blipflow.control.coordination import Coordination, Decided
from blipflow.control.ledger import Ledger
from blipflow.model.ledger import Circuit
from blipflow.store.history import IngestBatch
from cli.app import app
from tests.support.fed_stores import FedStores
from tests.support.frames import T0, blips, commit_frame, uri

HUMAN = "did:plc:human0000000000000000000"


def test_status_reports_ingest_agents_and_circuits(tmp_path):
    stores = FedStores.beside(tmp_path / "s.duckdb")
    store, ledger = stores.store, Ledger(stores.plane)
    frames = [commit_frame(HUMAN, f"k{n}", T0 + n, content=f"blip {n}") for n in range(4)]
    stores.apply(IngestBatch(blips=blips(*frames), counters={"ingest.connects": 2, "ingest.bad.not_json": 3,
                                                               "identity.cache_hits": 3, "identity.cache_misses": 1}))
    answered = ledger.decide("scout", {}, [uri(HUMAN, "k0")])
    ledger.mark_sending(answered)
    ledger.finish_window(answered, "scout", ["hello", "again"], 200.0)
    quiet = ledger.decide("scout", {}, [uri(HUMAN, "k1")])
    ledger.finish_window(quiet, "scout", [], 100.0)
    broken = ledger.decide("scout", {}, [uri(HUMAN, "k2")])
    ledger.fail_window(broken, "agent scout: no such agent on the Letta server (HTTP 404)", settled=True)
    coordination = Coordination(stores.plane)
    assert coordination.record([Decided("idle", uri(HUMAN, "k3"), None, "not_selected", "relevance", "")],
                               coordination.position(datetime.now(timezone.utc)), 4, {})
    Circuits(stores.plane).save("scout", Circuit("open", 5, datetime(2026, 11, 22, 6, 0, tzinfo=timezone.utc),
                                                 "no such agent on the Letta server (HTTP 404)"))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"store": {"path": str(store.path)},
                                      "agents": [{"name": "scout", "agent_id": "agent-1"},
                                                 {"name": "idle", "agent_id": "agent-2"}]}))

    result = CliRunner().invoke(app, ["-c", str(config), "status", "--output", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ingest"]["blips"] == 4
    assert report["ingest"]["blips_per_minute_last_5_min"] == 0.8
    assert report["ingest"]["connects"] == 2 and report["ingest"]["bad_input"] == {"not_json": 3}
    assert report["identity_cache"] == {"hits": 3, "misses": 1, "hit_rate": 0.75}
    scout = report["agents"]["scout"]
    assert scout["circuit"] == "open" and scout["failures_in_a_row"] == 5
    assert scout["windows"] == {"answered": 1, "silent": 1, "failed": 1, "quarantined": 0, "waiting": 0}
    assert scout["silence_rate"] == 0.5 and scout["error_rate"] == 0.333
    assert (scout["calls"], scout["failed_calls"], scout["retries"]) == (3, 1, 0)  # what the errors report counts
    assert scout["letta_ms_p50"] == 150.0 and scout["replies"] == {"queued": 2}
    assert report["agents"]["idle"]["windows"] == {"answered": 0, "silent": 0, "failed": 0, "quarantined": 0,
                                                   "waiting": 0}
    assert scout["decisions"] == {"handed": {"sent": 3}, "skipped": {}}
    assert report["agents"]["idle"]["decisions"] == {"handed": {}, "skipped": {"not_selected": 1}}
    assert report["coordination"] == {"strategy": "broadcast", "decided_through_seq": 4, "blips_to_decide": 0,
                                      "threads": 0, "threads_closed": 0, "floors_open": 0}

    human = CliRunner().invoke(app, ["-c", str(config), "status"])
    assert human.exit_code == 0, human.output
    assert ("agent scout: circuit OPEN since 2026-11-22T06:00:00+00:00 after 5 failures (no such agent on the "
            "Letta server (HTTP 404)); windows 1 answered, 1 silent, 1 failed, 0 quarantined, 0 waiting; "
            "calls 3, 1 failed, 0 retries;") in human.output
    assert "bad input: not_json 3" in human.output
    assert "who speaks  broadcast; 0 blips to decide; 0 threads" in human.output
    assert "  decided: handed 1 not_selected" not in human.output and "skipped 1 not_selected" in human.output


@pytest.mark.process
def test_status_of_a_missing_store_is_one_line(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"store": {"path": str(tmp_path / "none.duckdb")}}))
    result = subprocess.run([sys.executable, "-m", "cli", "-c", str(config), "status"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"blipflow: store {tmp_path / 'none.duckdb'}: no such file yet (run `blipflow run` first)"]
