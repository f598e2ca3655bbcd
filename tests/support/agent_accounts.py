"""ATProto accounts for agents on the local network, each with an app password as blipflow uses them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.support.network import Account, LocalNetwork, client_for


@dataclass(frozen=True)
class AgentAccount:
    account: Account
    app_password: str

    @property
    def did(self) -> str:
        return self.account.did

    @property
    def handle(self) -> str:
        return self.account.handle

    def config(self, name: str, agent_id: str, pds_uri: str | None = None, **settings: Any) -> dict[str, Any]:
        """The agent's entry in a config's `agents` list (its did left to be learned from the handle)."""
        return {"name": name, "agent_id": agent_id, "handle": self.handle, "app_password": self.app_password,
                "pds_uri": pds_uri or self.account.pds_url, **settings}


def agent_account(network: LocalNetwork, name: str) -> AgentAccount:
    account = network.create_account(name)
    app_password = client_for(account).com.atproto.server.create_app_password({"name": "blipflow"}).password
    return AgentAccount(account, app_password)
