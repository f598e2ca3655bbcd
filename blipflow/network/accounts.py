"""The ATProto accounts blipflow publishes as, and one logged-in session per account and process.

An agent publishes as its own account (`handle`, `app_password`, `pds_uri` in its config) or, without
a handle, as the `bluesky` account, which is also the account `blipflow publish` uses by default
(thought.stream runs one agent per process, with that account). An agent's DID, which dispatch needs
to keep an agent's own blips from it, is learned from its handle here when the config does not give it.

Sessions log in once per process (without the Bluesky profile lookup, so any PDS will do), keep their
tokens in memory only, and let the SDK refresh the access token before it expires; a session the PDS
no longer accepts logs in again once. No password or token ever goes into a message or a log line.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from atproto import Client
from atproto_client import exceptions as xrpc
from atproto_client.models.utils import get_model_as_dict
from atproto_client.request import Request
from pydantic import SecretStr

from blipflow.config import AgentConfig, BlueskyConfig, Settings
from blipflow.model.failures import Failure
from blipflow.model.identifiers import is_did
from blipflow.model.refs import Ref
from blipflow.network import tls

log = logging.getLogger(__name__)

DEFAULT_ACCOUNT = "default"
# What a PDS says when a session's tokens are no longer good; a fresh login fixes it.
STALE_SESSION_ERRORS = {"ExpiredToken", "InvalidToken"}
XRPC_ERROR_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{0,99}")  # InvalidRequest, RecordNotFound, ...

T = TypeVar("T")


@dataclass(frozen=True)
class Account:
    name: str  # the agent's name, or "default" for the `bluesky` account
    handle: str
    password: SecretStr | None
    pds_uri: str
    did: str | None = None

    def __str__(self) -> str:
        return f"account {self.name} ({self.handle})"


class AccountFailed(Failure):
    """A request of an account to its PDS failed; the message names the account, never its secrets."""

    def __init__(self, account: Account, reason: str, *, transient: bool, status: int | None = None,
                 error: str | None = None) -> None:
        super().__init__(f"{account}: {reason}", transient=transient)
        self.account = account
        self.status = status
        self.error = error  # the XRPC error name, e.g. InvalidRequest


class LoginFailed(AccountFailed):
    """The account could not log in: nothing it would publish can go until that is fixed."""


def default_account(bluesky: BlueskyConfig) -> Account | None:
    if not bluesky.username:
        return None
    return Account(DEFAULT_ACCOUNT, bluesky.username, bluesky.password, bluesky.pds_uri)


def agent_account(agent: AgentConfig, bluesky: BlueskyConfig) -> Account | None:
    """The account an agent publishes as; None when neither it nor the `bluesky` section names one."""
    if agent.handle is None:
        shared = default_account(bluesky)
        return None if shared is None else Account(agent.name, shared.handle, shared.password, shared.pds_uri, agent.did)
    return Account(agent.name, agent.handle, agent.app_password, agent.pds_uri or bluesky.pds_uri, agent.did)


def missing_credentials(agent: AgentConfig, bluesky: BlueskyConfig) -> str | None:
    """Why the agent has no account it could log in with, for a line naming the agent; None when it has one."""
    account = agent_account(agent, bluesky)
    if account is None:
        return "no account to publish as (set its handle and app_password, or bluesky.username and bluesky.password)"
    if account.password is None:
        return f"{account.handle} has no app password (set {'its app_password' if agent.handle else 'bluesky.password'})"
    return None


def account_warnings(settings: Settings, *, timeout: float) -> list[str]:
    """What keeps each agent from publishing, or from being told apart from people (its DID), one line each
    naming the agent; never a secret. Resolves the handles of agents configured without a did, as dispatch will."""
    warnings = []
    for index, agent in enumerate(settings.agents):
        where = f"agents.{index} ({agent.name})"
        if agent.app_password is not None and agent.handle is None:
            warnings.append(f"{where}: app_password without a handle is not used (set its handle too, or remove it)")
        missing = missing_credentials(agent, settings.bluesky)
        if missing is not None:
            warnings.append(f"{where}: {missing}: its replies will wait in the outbox")
        if agent.did is not None:
            continue
        account = agent_account(agent, settings.bluesky)
        if account is None:
            warnings.append(f"{where}: no did, and no handle to learn it from: dispatch cannot keep its own blips "
                            "from it and analytics counts it as a person")
            continue
        try:
            learn_did(account, timeout=timeout)
        except AccountFailed as failure:
            warnings.append(f"{where}: no did, and it cannot be learned: {failure}")
    return warnings


def with_learned_dids(agents: list[AgentConfig], bluesky: BlueskyConfig, *, timeout: float) -> list[AgentConfig]:
    """The agents, each with its DID: as configured, else learned from its account's handle."""
    learned = []
    for agent in agents:
        account = agent_account(agent, bluesky)
        if agent.did is None and account is not None:
            agent = agent.model_copy(update={"did": learn_did(account, timeout=timeout)})
        learned.append(agent)
    return learned


def learn_did(account: Account, *, timeout: float) -> str:
    """The DID behind an account's handle, as its own PDS resolves it (no DNS, no login)."""
    client = new_client(account.pds_uri, timeout)
    try:
        did = client.com.atproto.identity.resolve_handle({"handle": account.handle}).did
    except Exception as error:  # noqa: BLE001 - sorted into transient and not, with one line
        raise describe(account, error, "resolve its handle") from None
    finally:
        client.request.close()
    if not is_did(did):  # the SDK checks only that it is text
        raise AccountFailed(account, f"its PDS resolved the handle to {did!r:.100}, which is not a DID",
                            transient=False)
    return did


class Session:
    """One account, logged in. Calls go through `call`, which logs in again once if the PDS no longer
    takes the session's tokens."""

    def __init__(self, account: Account, *, timeout: float) -> None:
        self.account = account
        self.timeout = timeout
        self.client: Client | None = None
        self.did = ""
        self.lock = threading.Lock()  # one request of an account at a time: its session is shared state

    def login(self) -> None:
        if self.account.password is None:
            raise LoginFailed(self.account, "no app password configured", transient=False)
        client = new_client(self.account.pds_uri, self.timeout)
        try:
            client.login(self.account.handle, self.account.password.get_secret_value(), fetch_bsky_profile=False)
            self.did = client.com.atproto.server.get_session().did
        except Exception as error:  # noqa: BLE001
            client.request.close()
            failure = describe(self.account, error, "log in")
            raise LoginFailed(self.account, str(failure).removeprefix(f"{self.account}: "),
                              transient=failure.transient, status=failure.status, error=failure.error) from None
        if self.account.did is not None and self.did != self.account.did:
            client.request.close()
            raise LoginFailed(self.account, f"logs in as {self.did}, not the configured did {self.account.did}",
                              transient=False)
        if self.client is not None:
            self.client.request.close()
        self.client = client
        log.info("%s logged in to %s as %s", self.account, self.account.pds_uri, self.did)

    def call(self, doing: str, request: Callable[[Client], T]) -> T:
        with self.lock:
            if self.client is None:
                self.login()
            try:
                return request(self.client)
            except Exception as error:  # noqa: BLE001
                if not stale_session(error):
                    raise describe(self.account, error, doing) from None
            log.info("%s: the PDS no longer accepts the session; logging in again", self.account)
            self.login()
            try:
                return request(self.client)
            except Exception as error:  # noqa: BLE001
                raise describe(self.account, error, doing) from None

    def create_record(self, collection: str, record: dict[str, Any], rkey: str | None = None) -> Ref:
        created = self.call("create a record", lambda client: client.com.atproto.repo.create_record(
            {"repo": self.did, "collection": collection, "record": record, **({"rkey": rkey} if rkey else {})}))
        return Ref(created.uri, created.cid)

    def existing_record(self, collection: str, rkey: str) -> tuple[Ref, dict[str, Any]] | None:
        """The record stored under `rkey` in the account's repo, or None."""
        try:
            found = self.call("look up a record", lambda client: client.com.atproto.repo.get_record(
                {"repo": self.did, "collection": collection, "rkey": rkey}))
        except AccountFailed as failure:
            if failure.error == "RecordNotFound":
                return None
            raise
        return Ref(found.uri, found.cid), plain(found.value)

    def close(self) -> None:
        if self.client is not None:
            self.client.request.close()


class Sessions:
    """A session per account, made on first use and kept for the life of the process."""

    def __init__(self, *, timeout: float) -> None:
        self.timeout = timeout
        self.sessions: dict[str, Session] = {}
        self.guard = threading.Lock()

    def of(self, account: Account) -> Session:
        """The account's session; it logs in with its first request."""
        with self.guard:
            session = self.sessions.get(account.name)
            if session is None:
                session = self.sessions[account.name] = Session(account, timeout=self.timeout)
            return session

    def close(self) -> None:
        for session in self.sessions.values():
            session.close()


def new_client(pds_uri: str, timeout: float) -> Client:
    return Client(base_url=pds_uri, request=Request(timeout=timeout, verify=tls.verified()))


def plain(value: Any) -> dict[str, Any]:
    """A record value as the SDK hands it back, as plain JSON-like data."""
    return value if isinstance(value, dict) else get_model_as_dict(value)


def xrpc_error(error: Exception) -> tuple[int | None, str | None]:
    """The HTTP status of a failed XRPC call and the error name its PDS gave, if it gave one that is a name
    (a PDS may answer anything: a list, a line break, a megabyte)."""
    response = getattr(error, "response", None)
    if response is None:
        return None, None
    name = getattr(response.content, "error", None)
    return response.status_code, name if isinstance(name, str) and XRPC_ERROR_NAME.fullmatch(name) else None


def stale_session(error: Exception) -> bool:
    return xrpc_error(error)[1] in STALE_SESSION_ERRORS or isinstance(error, xrpc.LoginRequiredError)


def describe(account: Account, error: Exception, doing: str) -> AccountFailed:
    reason, transient = explain(error, doing, account.pds_uri)
    status, name = xrpc_error(error)
    return AccountFailed(account, reason, transient=transient, status=status, error=name)


def explain(error: Exception, doing: str, pds_uri: str) -> tuple[str, bool]:
    """What went wrong, in one line, and whether trying again later may help."""
    status, name = xrpc_error(error)
    detail = f"HTTP {status}{' ' + name if name else ''}" if status else type(error).__name__
    if isinstance(error, xrpc.UnauthorizedError):
        return f"the PDS refused the handle or app password ({detail})", False
    if isinstance(error, xrpc.InvokeTimeoutError):
        return f"its PDS {pds_uri} did not answer in time", True
    if isinstance(error, (xrpc.NetworkError, httpx.TransportError)) and status is None:
        cause = error.__cause__ or error  # the SDK wraps httpx's error, which says what happened
        return f"cannot reach its PDS {pds_uri} ({' '.join(str(cause).split()) or type(cause).__name__})", True
    if status is not None:
        return f"could not {doing}: the PDS answered {detail}", status in (408, 409, 429, 502) or status >= 500
    return f"could not {doing}: {detail}", False
