"""An agent's topics from its tags at a real Letta server, when its config asks for them."""

from __future__ import annotations

import logging

from blipflow.config import AgentConfig, LettaConfig
from blipflow.letta.agent_tags import with_letta_tags
from blipflow.letta.gateway import LettaGateway


def test_letta_tags_join_the_configured_ones_only_for_agents_that_ask(letta_server, caplog) -> None:
    tagged = letta_server.create_agent("letta_v1_agent", tags=["Postgres", "#data science"])
    gateway = LettaGateway(LettaConfig(base_url=letta_server.base_url, timeout=30))
    agents = [AgentConfig(name="ada", agent_id=tagged, tags=["sql"], letta_tags=True),
              AgentConfig(name="bo", agent_id=tagged, tags=["rust"]),
              AgentConfig(name="cy", agent_id="agent-00000000-0000-4000-8000-000000000000", letta_tags=True)]
    with caplog.at_level(logging.WARNING, logger="blipflow"):
        ada, bo, cy = with_letta_tags(agents, gateway)
    assert sorted(ada.tags) == ["data-science", "postgres", "sql"]
    assert bo.tags == ["rust"]  # it did not ask
    assert cy.tags == []  # an agent Letta does not know: as configured, with one line saying so
    [warning] = [record.getMessage() for record in caplog.records if "cy" in record.getMessage()]
    assert warning.startswith("agent cy: its tags at Letta could not be read (")
