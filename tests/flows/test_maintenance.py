"""The maintenance flow under Prefect's test harness, on a real store and the real PLC of the local
network: expired identities resolved again, a write-ahead log left by a killed writer checkpointed into
the file, finished runs of blipflow's flows past their age deleted and every other run kept."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml
from prefect import flow, get_client
from prefect.exceptions import ObjectNotFound
from prefect.flows import Flow
from prefect.states import Completed, Failed, Running

import flows
from blipflow.config import load_settings
from blipflow.control.engine import ControlPlane
from blipflow.control.identities import Identities
from blipflow.model.blip import Identity
from blipflow.store.history import IngestBatch, Store
from flows.ingest import ingest
from flows.maintenance import BLIPFLOW_FLOWS, maintenance
from tests.support.ingest_process import PROJECT_ROOT

GHOST = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"  # no such DID in the directory
HOUR = timedelta(hours=1)


def write_config(tmp_path: Path, network=None, **sections) -> Path:
    config = tmp_path / "config.yaml"
    bluesky = {"plc_uri": network.plc_url} if network else {}
    config.write_text(yaml.safe_dump({"store": {"path": str(tmp_path / "s.duckdb")}, "bluesky": bluesky,
                                      "identity": {"ttl_seconds": HOUR.total_seconds()}, **sections}))
    return config


def killed_mid_write(store: Store) -> None:
    """A process that commits to the store and dies before closing it, leaving its write-ahead log."""
    code = ("import os; from blipflow.store.history import Store\n"
            f"with Store({str(store.path)!r}).connect() as db:\n"
            "    db.execute(\"INSERT INTO counters VALUES ('written.before.the.kill', 7)\")\n"
            "    os._exit(0)\n")
    subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, check=True, timeout=60)


def test_expired_identities_come_never_resolved_first_then_the_oldest(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    now = datetime.now(timezone.utc)
    store.save_identities([Identity("did:plc:old", "old.test", None, None, now - 3 * HOUR),
                           Identity("did:plc:older", "older.test", None, None, now - 5 * HOUR),
                           Identity("did:plc:fresh", "fresh.test", None, None, now)])
    store.apply(IngestBatch(handles={"did:plc:never": "never.test"}))  # seen in the stream, never resolved
    assert store.expired_identities(now - HOUR, 10) == ["did:plc:never", "did:plc:older", "did:plc:old"]
    assert store.expired_identities(now - HOUR, 2) == ["did:plc:never", "did:plc:older"]
    assert store.expired_identities(now - 4 * HOUR, 10) == ["did:plc:never", "did:plc:older"]


def test_maintenance_refreshes_expired_identities_and_checkpoints_the_store(prefect_harness, tmp_path: Path,
                                                                          atproto_network) -> None:
    alice, bob, carol = (atproto_network.create_account(name) for name in ("alice", "bob", "carol"))
    atproto_network.client_for(alice).com.atproto.repo.put_record(
        {"repo": alice.did, "collection": "app.bsky.actor.profile", "rkey": "self",
         "record": {"$type": "app.bsky.actor.profile", "displayName": "Alice Anew"}})
    store = Store(tmp_path / "s.duckdb")
    long_ago, just_now = datetime.now(timezone.utc) - 2 * HOUR, datetime.now(timezone.utc) - timedelta(minutes=1)
    store.save_identities([Identity(alice.did, "alice-was.test", None, None, long_ago),
                           Identity(carol.did, "carol-cached.test", None, None, just_now),
                           Identity(GHOST, "ghost-was.test", None, None, long_ago)])
    store.apply(IngestBatch(handles={bob.did: "bob-from-the-stream.test"}))
    # What dispatch resolved, in the control plane: a stranger to the store, and alice as known before.
    dispatched = Identity("did:plc:dispatchedonly0000000000", "met-by-dispatch.test", "Met", None, just_now)
    Identities(ControlPlane.from_settings(load_settings(write_config(tmp_path)))).save_identities(
        [dispatched, Identity(alice.did, "alice-long-before.test", None, None, long_ago - HOUR)])
    killed_mid_write(store)
    wal = store.path.with_name(store.path.name + ".wal")
    assert wal.stat().st_size > 0

    config = write_config(tmp_path, atproto_network, maintenance={"keep_flow_runs_days": None})
    state = maintenance(config_file=str(config), return_state=True)

    assert state.is_completed(), state.message
    used, free = Store(tmp_path / "s.duckdb").checkpoint()
    assert state.message == (f"identities: 2 refreshed, 1 unresolved; "
                             f"store: {used // 1024} KiB in use, {free // 1024} KiB free")
    assert not wal.exists() or wal.stat().st_size == 0
    identities = store.identities([alice.did, bob.did, carol.did, GHOST])
    assert (identities[alice.did].handle, identities[alice.did].display_name) == (alice.handle, "Alice Anew")
    assert identities[alice.did].fetched_at > just_now
    assert identities[bob.did].handle == bob.handle
    assert (identities[carol.did].handle, identities[carol.did].fetched_at) == ("carol-cached.test", just_now)
    assert (identities[GHOST].handle, identities[GHOST].fetched_at) == ("ghost-was.test", long_ago)
    assert store.identities([dispatched.did]) == {dispatched.did: dispatched}  # analytics names it now
    assert store.counters()["written.before.the.kill"] == 7


@flow(name="someone-elses-flow")
def someone_elses_flow() -> None:
    """Shares the Prefect server with blipflow."""


def test_maintenance_deletes_only_finished_runs_of_blipflows_flows_past_their_age(prefect_harness,
                                                                                  tmp_path: Path) -> None:
    keep_seconds = 5
    with get_client(sync_client=True) as client:
        finished = [client.create_flow_run(maintenance, state=Completed()).id,
                    client.create_flow_run(ingest, state=Failed(message="gave up")).id]
        kept = [client.create_flow_run(ingest, state=Running()).id,  # a long-running ingest, started long ago
                client.create_flow_run(someone_elses_flow, state=Completed()).id]
        time.sleep(keep_seconds + 1)
        kept.append(client.create_flow_run(maintenance, state=Completed()).id)  # too recent

        config = write_config(tmp_path, maintenance={"keep_flow_runs_days": keep_seconds / 86400})
        state = maintenance(config_file=str(config), return_state=True)

        assert state.is_completed(), state.message
        assert state.message.startswith("flow runs: ") and state.message.endswith(" deleted")
        assert int(state.message.split()[2]) >= len(finished)  # earlier tests' finished runs may go too
        for run_id in finished:
            try:
                client.read_flow_run(run_id)
                raise AssertionError(f"flow run {run_id} should be deleted")
            except ObjectNotFound:
                pass
        assert [client.read_flow_run(run_id).id for run_id in kept] == kept
        client.delete_flow_run(kept[0])  # no run stays Running behind this test
    assert not (tmp_path / "s.duckdb").exists()  # no store yet: nothing refreshed, none made


def test_with_nothing_to_keep_tidy_maintenance_says_so(prefect_harness, tmp_path: Path) -> None:
    config = write_config(tmp_path, maintenance={"keep_flow_runs_days": None})
    state = maintenance(config_file=str(config), return_state=True)
    assert state.is_completed() and state.message == "nothing to do"


def test_the_flows_whose_old_runs_are_deleted_are_all_of_blipflows_flows() -> None:
    names = set()
    for module in pkgutil.iter_modules(flows.__path__):
        loaded = importlib.import_module(f"flows.{module.name}")
        names |= {value.name for value in vars(loaded).values() if isinstance(value, Flow)}
    assert names == set(BLIPFLOW_FLOWS)



def test_a_store_that_cannot_be_opened_fails_the_run_and_old_runs_are_deleted_all_the_same(prefect_harness,
                                                                                       tmp_path: Path) -> None:
    (tmp_path / "s.duckdb").write_text("not a database")
    state = maintenance(config_file=str(write_config(tmp_path)), return_state=True)
    assert state.is_failed()
    identities, store, runs = state.message.split("; ")
    assert identities.startswith(f"identities: failed: store {tmp_path / 's.duckdb'}: ")
    assert store.startswith(f"store: failed: store {tmp_path / 's.duckdb'}: ")
    assert runs.startswith("flow runs: ") and runs.endswith(" deleted")
