"""Prefect retries a window's task for transient failures only (fake Letta, real Prefect server)."""

from __future__ import annotations

import time
from datetime import timedelta

from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlalchemy import select

from blipflow.control import tables
from blipflow.letta.gateway import AgentCallFailed
from tasks.dispatch import deliver_windows
from tasks.rounds import Round
from tests.dispatch.test_dispatcher import HUMAN, dispatcher_for, fed, post
from tests.support.blip_text import content_of
from tests.support.fake_letta import FakeLetta
from tests.support.fed_stores import FedStores

OTHER_HUMAN = "did:plc:otherhuman00000000000000"


def deliver(dispatcher, window):
    """The window as a round of its own; its task run's final state."""
    return deliver_windows.with_options(retry_delay_seconds=0)(dispatcher, Round(window.agent, window),
                                                               return_state=True)


def test_transient_failures_are_retried_and_permanent_ones_are_not(tmp_path, prefect_server):
    fake = FakeLetta().start()
    try:
        agent_id = fake.create_agent()
        dispatcher = dispatcher_for(tmp_path, fake, {"name": "scout", "agent_id": agent_id},
                                    {"name": "ghost", "agent_id": "agent-unknown"})
        # fails on the first call (three model attempts), answers on the second
        post(fed(dispatcher), HUMAN, "flaky [[status:503*3]]")
        with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
            states = {window.agent: deliver(dispatcher, window) for window in dispatcher.plan()}
        assert states["scout"].is_completed()
        [delivery] = states["scout"].result()
        assert delivery.replies == 1
        assert fake.calls == 1  # the failed call recorded nothing; the retry was answered once
        assert states["ghost"].is_failed()
        assert "agent ghost: no such agent on the Letta server (HTTP 404)" in states["ghost"].message
        assert fed(dispatcher).rows("SELECT agent, state, attempts FROM windows ORDER BY agent") == [
            ("ghost", "failed", 1), ("scout", "answered", 2)]
    finally:
        fake.stop()


def test_a_timed_out_window_is_not_sent_again_while_it_may_still_be_answered(tmp_path):
    fake = FakeLetta().start()
    try:
        agent_id = fake.create_agent()
        dispatcher = dispatcher_for(tmp_path, fake, {"name": "scout", "agent_id": agent_id})
        dispatcher.gateway.client = dispatcher.gateway.client.with_options(timeout=0.5)
        post(fed(dispatcher), HUMAN, "slow [[sleep:1.5]]")
        [window] = dispatcher.plan()
        try:
            dispatcher.deliver(window)
            raise AssertionError("the call should have timed out")
        except AgentCallFailed as failure:
            assert failure.transient and not failure.settled
        # Prefect's retry hands over the window as it was before the first attempt
        assert dispatcher.deliver(window).outcome == "in_flight"
        time.sleep(2.0)  # Letta (here the fake) finishes the call nobody waits for any more
        [again] = dispatcher.plan()  # looked at again within seconds, not after the failure's cooldown
        assert again.id == window.id
        assert dispatcher.deliver(again).outcome == "recovered"
        assert fake.calls == 1
        [(reply,)] = fed(dispatcher).rows("SELECT content FROM replies")
        assert reply.startswith("echo: ") and reply.endswith("</content>\n</blip>")
        assert content_of(reply) == "slow"
    finally:
        fake.stop()


def test_an_agent_waiting_for_a_retry_holds_up_no_other(tmp_path, prefect_server):
    from flows.dispatch import dispatch

    fake = FakeLetta().start()
    try:
        config = fake.config(tmp_path, [
            {"name": "flaky", "agent_id": fake.create_agent(), "wanted_dids": [HUMAN]},
            {"name": "steady", "agent_id": fake.create_agent(), "wanted_dids": [OTHER_HUMAN]}])
        store = FedStores.beside(tmp_path / "s.duckdb")
        post(store, HUMAN, "flaky [[status:503*6]]")  # two calls fail: retried after 1 s, then after 5 s more
        for n in range(3):
            post(store, OTHER_HUMAN, f"steady {n}")
        with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
            assert dispatch(config_file=str(config), until_idle=True) == 4
        window = tables.Window
        finished: dict[str, list] = {}
        with store.plane.reading() as session:
            for agent, finished_at in session.execute(select(window.agent, window.finished_at)
                                                      .where(window.state == "answered").order_by(window.finished_at)):
                finished.setdefault(agent, []).append(finished_at)
        [flaky_done] = finished["flaky"]
        assert len(finished["steady"]) == 3 and max(finished["steady"]) < flaky_done - timedelta(seconds=3)
        assert store.rows("SELECT attempts FROM windows WHERE agent = 'flaky'") == [(3,)]
    finally:
        fake.stop()
