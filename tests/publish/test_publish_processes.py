"""Two `blipflow publish-replies` processes share one outbox by leases, on the real local PDS with the control
plane on SQLite and on a real PostgreSQL: the one holding the agents is SIGKILLed in the middle of a reply
(the PDS took the record, the answer never came back), and the other takes its agents over within 30 s and
posts every reply — that one included — exactly once."""

from __future__ import annotations

import signal
import time

import yaml
from sqlalchemy import select

from blipflow.control import tables
from blipflow.control.blips import Blips
from blipflow.control.engine import ControlPlane
from blipflow.control.facts import facts_of
from blipflow.control.leases import Leases
from blipflow.control.ledger import Ledger
from tests.support.agent_accounts import agent_account
from tests.support.chat_loop import SECRET_ENV
from tests.support.frames import T0
from tests.support.ingest_process import BlipflowProcess, wait_for
from tests.support.network import list_records
from tests.support.pds_proxy import PdsProxy

REPLIES_PER_AGENT = 4
TAKEOVER_LIMIT_S = 30


def holder_pids(plane: ControlPlane) -> dict[str, int]:
    """Which process holds each agent's outbox (a holder is `host:pid:…`)."""
    return {name.removeprefix("publish:"): int(lease.holder.split(":")[1])
            for name, lease in Leases(plane).held().items() if name.startswith("publish:")}


def test_a_killed_publisher_is_taken_over_and_every_reply_posted_once(
        tmp_path, control_url, atproto_network, human_account, prefect_server):
    scout, other = agent_account(atproto_network, "scout"), agent_account(atproto_network, "other")
    front = PdsProxy(atproto_network.pds_url).start()
    plane = ControlPlane(control_url)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "control": {"url": control_url}, "store": {"path": str(tmp_path / "none.duckdb")},
        "bluesky": {"pds_uri": atproto_network.pds_url},
        "agents": [scout.config("scout", "agent-1", front.url), other.config("other", "agent-2", front.url)]}))
    env = {k: v for k, v in prefect_server.env().items() if k not in SECRET_ENV and not k.startswith("BLIPFLOW_")}
    processes: list[BlipflowProcess] = []
    try:
        first = BlipflowProcess(config, ["publish-replies"], env, tmp_path / "first.log")
        processes.append(first)
        wait_for(lambda: holder_pids(plane) == {"scout": first.pid, "other": first.pid}, 90, "the first to hold both")
        second = BlipflowProcess(config, ["publish-replies"], env, tmp_path / "second.log")
        processes.append(second)
        second.wait_for_log("looking for work every", timeout=90)

        front.hold_answers(1)
        question, cid = atproto_network.post_blip(human_account, "both of you, several times")
        did = question.removeprefix("at://").split("/")[0]
        Blips(plane).add([facts_of(question, did, T0, cid, {"$type": "stream.thought.blip", "content": "both"})])
        ledger = Ledger(plane)
        for agent in ("scout", "other"):
            window = ledger.decide(agent, {}, [question])
            ledger.finish_window(window, agent, [f"{agent} says {n}" for n in range(REPLIES_PER_AGENT)], 1.0)

        assert front.held.wait(60), "the first create never reached the PDS"
        first.signal(signal.SIGKILL)  # the PDS has that record; the process dies before it notes it
        first.wait(10)
        killed_at = time.monotonic()

        wait_for(lambda: len(posted(plane)) == 2 * REPLIES_PER_AGENT, TAKEOVER_LIMIT_S + 30, "every reply posted")
        taken_over_s = time.monotonic() - killed_at
        front.release_held()

        assert taken_over_s <= TAKEOVER_LIMIT_S, f"took {taken_over_s:.1f} s"
        assert holder_pids(plane) == {"scout": second.pid, "other": second.pid}
        for account, agent in ((scout, "scout"), (other, "other")):
            contents = sorted(record.value["content"] for record in list_records(account.account))
            assert contents == [f"{agent} says {n}" for n in range(REPLIES_PER_AGENT)]  # each once
        calls = front.calls()  # every create the PDS took once; the held one (and any other the kill cut off)
        assert calls.count(200) == 2 * REPLIES_PER_AGENT and set(calls) == {200, 500}  # refused when tried again
        assert "was already posted" in second.log()
        assert scout.app_password not in second.log() + first.log()
    finally:
        for process in processes:
            if process.process.poll() is None:
                process.signal(signal.SIGINT)
        for process in processes:
            try:
                process.process.wait(30)
            except Exception:  # noqa: BLE001 - stopped by force below
                pass
            process.stop()
        front.stop()
        plane.dispose()


def posted(plane: ControlPlane) -> list[tables.Reply]:
    with plane.reading() as session:
        return list(session.scalars(select(tables.Reply).where(tables.Reply.state == "posted")))
