"""Several dispatch processes share the agents by leases in the control plane: each takes its share, an
agent is let go only while idle, and a process that stops renewing (killed) has its agents taken over —
on SQLite and a real PostgreSQL. The last test runs two real `blipflow dispatch` processes and kills one."""

from __future__ import annotations

import re
import signal
import time
from itertools import count

from blipflow.control.engine import ControlPlane
from blipflow.control.leases import Leases
from blipflow.dispatch.shares import AGENT_LEASE, AgentShares
from blipflow.store.history import IngestBatch, Store
from tests.support.blip_text import content_of
from tests.support.fake_letta import FakeLetta
from tests.support.fed_stores import FedStores
from tests.support.frames import T0, blips, commit_frame
from tests.support.ingest_process import BlipflowProcess, wait_for

AGENTS = ["ada", "bob", "cy", "di"]
HUMAN = "did:plc:human0000000000000000000"
TAKEOVER_SECONDS = 30


def shares(plane: ControlPlane, host: str, idle=lambda agent: True, lease_seconds: float = 2.0) -> AgentShares:
    """A process of another machine (its holder names a host that is not this one, so only expiry tells
    whether it still runs)."""
    return AgentShares(Leases(plane), AGENTS, idle=idle, holder=f"{host}.invalid:1:test", lease_seconds=lease_seconds)


def test_two_processes_split_the_agents_and_one_takes_over_when_the_other_stops_renewing(control: ControlPlane):
    first, second = shares(control, "first"), shares(control, "second")
    first.keep()
    assert first.held() == set(AGENTS)  # alone: every agent
    second.keep()
    assert second.held() == set()  # all taken; the first lets some go at its next round
    first.keep()
    second.keep()
    assert len(first.held()) == len(second.held()) == 2 and first.held() | second.held() == set(AGENTS)
    holders = {name.removeprefix(AGENT_LEASE): lease.holder for name, lease in Leases(control).held().items()
               if name.startswith(AGENT_LEASE)}
    assert holders == {agent: first.holder for agent in first.held()} | {agent: second.holder for agent in second.held()}

    # the second dies: no renewal, no release; its leases run out and the first serves every agent
    stopped = time.monotonic()
    while first.held() != set(AGENTS):
        assert time.monotonic() - stopped < 2.0 + 1.0 + 2.0, "not taken over within a lease and a round"
        time.sleep(0.2)
        first.keep()


def test_an_agent_with_a_window_under_way_is_not_let_go(control: ControlPlane):
    busy = {"ada", "bob", "cy", "di"}
    first = shares(control, "first", idle=lambda agent: agent not in busy)
    first.keep()
    second = shares(control, "second")
    second.keep()
    first.keep()
    assert first.held() == set(AGENTS)  # over its share, but every agent has a window under way
    busy.discard("cy")
    first.keep()
    second.keep()
    assert "cy" in second.held() and "cy" not in first.held()


def test_a_lease_whose_renewal_is_overdue_is_not_counted_on(control: ControlPlane):
    one = shares(control, "one", lease_seconds=1.0)  # counted on until 0.2 s (the margin) before it expires
    one.keep()
    assert one.holds("ada")
    time.sleep(0.85)
    assert not one.holds("ada")  # another could take it soon: no window is sent on it any more


clock = count(1)


def post(stores: FedStores, content: str) -> None:
    n = next(clock)
    stores.apply(IngestBatch(blips=blips(commit_frame(HUMAN, f"k{n}", T0 + n, content=content))))


def test_two_dispatch_processes_share_the_agents_and_one_takes_over_when_the_other_is_killed(
        tmp_path, control_url, prefect_server):
    fake = FakeLetta(latency_ms=300).start()
    agents = [{"name": name, "agent_id": fake.create_agent(), "max_wait_seconds": 0, "max_replies_per_minute": 1000}
              for name in AGENTS]
    config = fake.config(tmp_path, agents, control={"url": control_url})
    stores = FedStores(Store(tmp_path / "s.duckdb"), ControlPlane(control_url))
    texts: list[str] = []

    def post_some(how_many: int) -> None:
        for _ in range(how_many):
            texts.append(f"blip {len(texts)}")
            post(stores, texts[-1])
            time.sleep(0.2)

    def serves(process: BlipflowProcess) -> set[str]:
        return set(re.findall(r"serves agent (\w+)", process.log())) - set(
            re.findall(r"hands agent (\w+) to another process", process.log()))

    processes = []
    try:
        first = BlipflowProcess(config, ["dispatch"], prefect_server.env(), tmp_path / "first.log")
        processes.append(first)
        post_some(4)
        wait_for(lambda: serves(first) == set(AGENTS), 60, "the first process to serve every agent")
        second = BlipflowProcess(config, ["dispatch"], prefect_server.env(), tmp_path / "second.log")
        processes.append(second)
        # the first lets agents go only while they are idle, as they are once the blips so far are answered
        wait_for(lambda: len(serves(second)) == 2, 60, "the second process to take its share")
        post_some(3)
        first.signal(signal.SIGKILL)  # whatever it was doing: deciding, sending, finishing
        killed = time.monotonic()
        first.wait(10)
        post_some(4)
        wait_for(lambda: serves(second) == set(AGENTS), TAKEOVER_SECONDS, "the second process to serve every agent")
        assert time.monotonic() - killed <= TAKEOVER_SECONDS

        def settled() -> bool:
            decided = stores.rows("SELECT count(*) FROM deliveries WHERE window_id IS NOT NULL")  # handed and sent
            open_windows = stores.rows("SELECT count(*) FROM windows WHERE state IN ('pending', 'sending', 'failed')")
            return decided == [(len(AGENTS) * len(texts),)] and open_windows == [(0,)]

        wait_for(settled, 90, "every blip decided and answered for every agent")
    finally:
        for process in processes:
            process.stop()
        fake.stop()
    for agent in agents:  # each agent was sent each blip exactly once, in one window
        seen = [content_of(message["content"]) for message in fake.agents[agent["agent_id"]].history
                if message["message_type"] == "user_message"]
        assert sorted(seen) == sorted(texts), agent["name"]
    windows = stores.rows("SELECT count(*) FROM windows WHERE state = 'answered'")
    assert windows == stores.rows("SELECT count(*) FROM replies") == [(len(AGENTS) * len(texts),)]
