"""The moderator, asked live: for each blip that opens a floor, the configured moderator agent is sent the
blip and the agents that may answer it, and names who should. Its answer goes to coordination as it is;
coordination validates it, and an answer that is late (past `moderator_timeout`), fails or names nobody
eligible sends the choice to `relevance`, with the reason in the ledger.

The moderator chooses and does not speak: it is not among the agents coordination hands blips to.
"""

from __future__ import annotations

import logging
import re
import uuid

from blipflow.config import AgentConfig
from blipflow.control.facts import BlipFacts
from blipflow.coordination.participants import Roster
from blipflow.dispatch.prompt import blip_text
from blipflow.letta.gateway import AgentCallFailed, LettaGateway
from blipflow.model.blip import Blip

log = logging.getLogger(__name__)

NOBODY = "nobody"
WORD = re.compile(r"[\w.-]+")


class Moderator:
    def __init__(self, gateway: LettaGateway, agent: AgentConfig, speakers: Roster) -> None:
        self.gateway, self.agent, self.speakers = gateway, agent, speakers

    def ask(self, facts: BlipFacts) -> list[str] | None:
        """The names the moderator gives for this blip ([] for `nobody`); None when it did not answer."""
        blip = Blip(facts.uri, facts.did, None, None, facts.time_us, facts.created_at, facts.content or "",
                    facts.parent_uri)
        message = {"role": "user", "content": f"{self.question()}\n\n{blip_text(self.agent, blip)}"}
        try:
            answer = self.gateway.send(self.agent.name, self.agent.agent_id, [message], asking_id(facts.uri))
        except AgentCallFailed as failure:
            log.warning("the moderator %s did not answer for %s: %s", self.agent.name, facts.uri, failure.reason)
            return None
        return names_in(" ".join(answer.replies), self.speakers) if answer.replies else None

    def question(self) -> str:
        who = "\n".join(f"- {agent.name}" + (f" (skills: {', '.join(sorted(agent.topics))})" if agent.topics else "")
                        for agent in self.speakers.agents)
        return ("You moderate a group chat of agents. Who should answer the blip below? Reply with their names "
                f"only, separated by commas, or `{NOBODY}`. The agents:\n{who}")


def names_in(text: str, speakers: Roster) -> list[str]:
    """The agents named in the moderator's reply, in its order; the reply itself when it names none (so the
    reason an answer was refused shows what it said)."""
    words = [word.strip(".-").lower() for word in WORD.findall(text)]
    known = {name.lower(): name for name in speakers.names}
    named = [known[word] for word in words if word in known]
    if named:
        return list(dict.fromkeys(named))
    return [] if words == [NOBODY] else [text.strip()[:60]]


def asking_id(uri: str) -> str:
    """The id the question's message carries at Letta: one per blip."""
    return f"moderate-{uuid.uuid5(uuid.NAMESPACE_URL, uri)}"
