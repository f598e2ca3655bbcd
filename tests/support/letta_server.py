"""A REAL Letta server (letta 0.16.8) on 127.0.0.1 for tests, with the scripted model as its only LLM.

Pieces, each a process group started here and stopped by PID (and killed by a watchdog if the test
process dies first):
  1. the scripted model (tests/support/scripted_model.py): LLM + embeddings + a proxy trap;
  2. PostgreSQL 16 + pgvector from the `pgserver` wheel in tests/peers/letta/.venv (tests/support/postgres.py),
     run as an unprivileged user on 127.0.0.1 only, data in a fresh copy of a template cluster;
  3. the schema, created from Letta's ORM (the wheel ships no migrations);
  4. the Letta server (`letta server`'s start_server, without OpenAPI file generation) from
     tests/peers/letta/.venv on 127.0.0.1, HOME and cwd in a temporary directory,
     every HTTP(S) proxy variable pointed at the scripted model's trap so nothing leaves the machine.

tests/peers/letta/install.sh installs that venv from its lock (run automatically; a no-op when current).

Pytest fixtures (session scope): `scripted_model`, `letta_server`. Agents use the model handle
`openai-proxy/scripted` and the embedding handle `openai/text-embedding-3-small`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.postgres import (
    INSTALL_SCRIPT,
    PG_ROLE,
    Postgres,
    _install_stamp,
    _pg_identity,
    _pginstall,
    _private_dir,
    _run_postgres,
    _tail,
    free_port,
    start_new_cluster,
)
from tests.support.scripted_model import (
    REPO_ROOT,
    ScriptedModel,
    reap,
    start_watchdog,
    stop_group,
)

LETTA_DIR = REPO_ROOT / "tests" / "peers" / "letta"
LETTA_VENV = LETTA_DIR / ".venv"
PG_DB = "letta"
MODEL_HANDLE = "openai-proxy/scripted"
EMBEDDING_HANDLE = "openai/text-embedding-3-small"
AGENT_KINDS = ("letta_v1_agent", "memgpt_v2_agent", "sleeptime")

# Run with the Letta venv's Python: create the database, pgvector, Letta's tables from its ORM, and
# the sequence behind messages.sequence_id (the ORM declares it only as a server-side FetchedValue).
_SCHEMA_SCRIPT = r"""
import sys
from sqlalchemy import create_engine, text
base = sys.argv[1]
admin = create_engine(base + "/postgres", isolation_level="AUTOCOMMIT")
with admin.connect() as c:
    if not c.execute(text("SELECT 1 FROM pg_database WHERE datname = 'letta'")).scalar():
        c.execute(text("CREATE DATABASE letta"))
admin.dispose()
engine = create_engine(base + "/letta")
with engine.begin() as c:
    c.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
from letta.orm import Base
Base.metadata.create_all(engine)
with engine.begin() as c:
    c.execute(text("CREATE SEQUENCE IF NOT EXISTS message_seq_id START 1"))
    c.execute(text("ALTER TABLE messages ALTER COLUMN sequence_id SET DEFAULT nextval('message_seq_id')"))
    c.execute(text("ALTER SEQUENCE message_seq_id OWNED BY messages.sequence_id"))
    tables = c.execute(text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")).scalar()
engine.dispose()
print("SCHEMA-OK", tables)
"""


# What `letta server --host H --port P` runs (Letta's own start_server), plus the `--no-generation`
# flag Letta's app module looks for in sys.argv: it skips writing openapi_letta.json, ~7 s of startup.
# (`letta server` itself rejects that flag.)
_LAUNCH_SCRIPT = r"""
import sys
host, port = sys.argv[1], int(sys.argv[2])
sys.argv.append("--no-generation")
from letta.server.rest_api.app import start_server
start_server(host=host, port=port)
"""


def letta_uri(pg: Postgres) -> str:
    """The LETTA_PG_URI form Letta accepts (it swaps the driver to asyncpg and sslmode= to ssl=)."""
    return pg.uri("postgresql", PG_DB) + "?sslmode=disable"


def ensure_installed(timeout: float = 900.0) -> Path:
    """Run tests/peers/letta/install.sh (a no-op when the venv matches the lock); return the venv path."""
    result = subprocess.run(["bash", str(INSTALL_SCRIPT)], check=False, stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{INSTALL_SCRIPT} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return LETTA_VENV


def _template_key(venv: Path) -> str:
    return hashlib.sha256(f"{_install_stamp(venv)}\0{PG_ROLE}\0{_SCHEMA_SCRIPT}".encode()).hexdigest()


def pg_template(venv: Path, run_dir: Path) -> Path:
    """A stopped PostgreSQL cluster with Letta's schema, built once per install and kept in the venv.

    Each session copies it (well under a second) instead of initdb + schema creation (~6 s).
    """
    import fcntl

    template = venv / "pg-template"
    key = _template_key(venv)
    with open(venv / ".pg-template.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (template / "key").exists() and (template / "key").read_text() == key and (template / "data").is_dir():
            return template
        shutil.rmtree(template, ignore_errors=True)
        pg = start_new_cluster(venv, run_dir)
        pg.keep_data = True
        try:
            create_schema(venv, pg, run_dir)
        finally:
            pg.stop()  # clean shutdown: the copy starts without recovery
        staging = venv / "pg-template.new"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        shutil.move(str(pg.data_dir / "data"), str(staging / "data"))
        shutil.rmtree(pg.data_dir, ignore_errors=True)
        (staging / "key").write_text(key)
        os.replace(staging, template)
        return template


def start_postgres(venv: Path, run_dir: Path, timeout: float = 60.0) -> Postgres:
    """A fresh PostgreSQL (a copy of the template cluster) with Letta's schema, on 127.0.0.1."""
    identity = _pg_identity()
    pginstall = _pginstall(venv, identity)
    template = pg_template(venv, run_dir)
    data_dir = _private_dir(identity, "blipflow-letta-pg-")
    copy = subprocess.run(["cp", "-a", str(template / "data"), str(data_dir / "data")], check=False,
                          capture_output=True, text=True)
    if copy.returncode != 0:
        shutil.rmtree(data_dir, ignore_errors=True)
        raise RuntimeError(f"copying the PostgreSQL template failed: {copy.stderr[-2000:]}")
    if identity:
        subprocess.run(["chown", "-R", f"{identity[0]}:{identity[1]}", str(data_dir)], check=True)
    return _run_postgres(pginstall, data_dir, identity, run_dir / "postgres.log", timeout)


def create_schema(venv: Path, pg: Postgres, run_dir: Path, timeout: float = 180.0) -> int:
    """Create Letta's database and tables; returns the number of tables."""
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", _SCHEMA_SCRIPT, pg.base_uri],
        # LETTA_PG_URI matters at import: the ORM picks PostgreSQL column types (pgvector) from it.
        check=False, cwd=run_dir, env=_letta_env(run_dir, {"LETTA_PG_URI": letta_uri(pg)}), capture_output=True,
        text=True, timeout=timeout,
    )
    marker = [line for line in result.stdout.splitlines() if line.startswith("SCHEMA-OK")]
    if result.returncode != 0 or not marker:
        raise RuntimeError(f"creating Letta's schema failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return int(marker[0].split()[1])


# --------------------------------------------------------------------------------------------
# The Letta server
# --------------------------------------------------------------------------------------------


def _letta_env(run_dir: Path, extra: dict[str, str]) -> dict[str, str]:
    """A clean environment (nothing inherited but PATH/locale) that keeps Letta offline and quiet."""
    home = run_dir / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": str(home),
        "TZ": "UTC",
        "PYTHONUNBUFFERED": "1",
        "LETTA_DIR": str(home / ".letta"),
        "NLTK_DATA": str(home / "nltk_data"),
        "TIKTOKEN_CACHE_DIR": str(home / "tiktoken"),
        "LETTA_TELEMETRY_ENABLE_DATADOG": "false",
        "LETTA_DISABLE_TRACING": "true",
        "LETTA_ENABLE_DB_POOL_MONITORING": "false",
        "LETTA_ENABLE_BATCH_JOB_POLLING": "false",
        "DO_NOT_TRACK": "1",
        "ANONYMIZED_TELEMETRY": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "NO_PROXY": "127.0.0.1,localhost,::1",
        "no_proxy": "127.0.0.1,localhost,::1",
    }
    env.update(extra)
    return env


@dataclass
class LettaServer:
    """A running Letta server with its PostgreSQL and scripted model."""

    base_url: str
    model: ScriptedModel
    postgres: Postgres
    process: subprocess.Popen
    run_dir: Path
    log_path: Path
    venv: Path
    timings: dict[str, float] = field(default_factory=dict)
    watchdog: subprocess.Popen | None = None
    owns_model: bool = False
    api_key: str = "blipflow-test"  # Letta runs without auth here; the client wants some value

    model_handle: str = MODEL_HANDLE
    embedding_handle: str = EMBEDDING_HANDLE

    @property
    def pid(self) -> int:
        return self.process.pid

    def client(self, timeout: float = 60.0, max_retries: int = 0):
        """A letta-client `Letta` for this server (no client-side retries by default)."""
        from letta_client import Letta

        return Letta(base_url=self.base_url, api_key=self.api_key, timeout=timeout, max_retries=max_retries)

    def create_agent(self, kind: str = "letta_v1_agent", name: str | None = None, client: Any = None,
                     **overrides: Any) -> str:
        """Create an agent that uses the scripted model; returns its id.

        kind: "letta_v1_agent" (replies as an assistant_message), "memgpt_v2_agent" (a reasoning_message
        + an assistant_message) or "sleeptime" (letta_v1_agent with enable_sleeptime=True, what
        `enable_sleeptime=True` alone gives: Letta adds send_message, the reply is a tool_call_message
        of send_message + its tool_return_message, stop_reason "tool_rule"; a sleeptime agent then runs
        in the background). `overrides` go to `client.agents.create` (e.g. tags=[...], block_ids=[...]).
        """
        if kind not in AGENT_KINDS:
            raise ValueError(f"kind must be one of {AGENT_KINDS}, not {kind!r}")
        client = client or self.client()
        params: dict[str, Any] = {
            "name": name or f"{kind}-{time.monotonic_ns()}",
            "model": self.model_handle,
            "embedding": self.embedding_handle,
            "memory_blocks": [
                {"label": "persona", "value": "A test agent driven by a scripted model."},
                {"label": "human", "value": "The test suite."},
            ],
        }
        if kind == "sleeptime":
            params.update(agent_type="letta_v1_agent", enable_sleeptime=True)
        else:
            params["agent_type"] = kind
        params.update(overrides)
        return client.agents.create(**params).id

    def stop(self) -> None:
        stop_group(self.process, grace=15)
        reap(self.watchdog)
        self.postgres.stop()
        if self.owns_model:
            self.model.stop()


def _get_json(url: str, timeout: float = 3.0, api_key: str | None = None) -> Any:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with opener.open(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
        return json.loads(response.read())


def start_letta_server(run_dir: Path, model: ScriptedModel | None = None, timeout: float = 180.0,
                       install: bool = True, api_key: str | None = None) -> LettaServer:
    """Install if needed, then start PostgreSQL, create the schema, start Letta and wait until healthy.
    With `api_key`, Letta runs in its secure mode: a request without that key is answered 401."""
    run_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    venv = ensure_installed() if install else LETTA_VENV
    timings["install_check"] = time.monotonic() - t0
    owns_model = model is None
    if model is None:
        model = ScriptedModel.start(stderr_path=run_dir / "scripted_model.log")
    pg = None
    try:
        t = time.monotonic()
        pg = start_postgres(venv, run_dir)  # builds the schema'd template cluster on first use
        timings["postgres"] = time.monotonic() - t
    except BaseException:
        if pg:
            pg.stop()
        if owns_model:
            model.stop()
        raise

    port = free_port()
    log_path = run_dir / "letta.log"
    trap = model.proxy_url
    env = _letta_env(run_dir, {
        "LETTA_PG_URI": letta_uri(pg),
        # Pooling on: with the default NullPool random requests hang exactly 60 s.
        "LETTA_DISABLE_SQLALCHEMY_POOLING": "false",
        "LETTA_PG_POOL_SIZE": "10",
        "OPENAI_API_KEY": "sk-scripted-model-not-a-secret",
        "OPENAI_BASE_URL": model.base_url,
        # Anything that still tries to reach the internet (NLTK's punkt download at startup, tiktoken
        # files, ...) goes to the scripted model's proxy trap on loopback and is refused and logged.
        "HTTP_PROXY": trap, "HTTPS_PROXY": trap, "ALL_PROXY": trap,
        "http_proxy": trap, "https_proxy": trap, "all_proxy": trap,
        **({"LETTA_SERVER_SECURE": "true", "LETTA_SERVER_PASSWORD": api_key} if api_key else {}),
    })
    t = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(venv / "bin" / "python"), "-c", _LAUNCH_SCRIPT, "127.0.0.1", str(port)],
            cwd=run_dir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = LettaServer(f"http://127.0.0.1:{port}", model, pg, process, run_dir, log_path, venv, timings,
                         start_watchdog(process.pid), owns_model, **({"api_key": api_key} if api_key else {}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            server.stop()
            raise RuntimeError(f"letta server exited with {process.returncode}:\n{_tail(log_path)}")
        try:
            if _get_json(f"{server.base_url}/v1/health/").get("status") == "ok":
                timings["letta_startup"] = time.monotonic() - t
                handles = {m.get("handle") for m in _get_json(f"{server.base_url}/v1/models/", timeout=30,
                                                              api_key=api_key)}
                if MODEL_HANDLE not in handles:
                    server.stop()
                    raise RuntimeError(f"Letta does not list {MODEL_HANDLE}; it lists {sorted(h for h in handles if h)}")
                timings["total"] = time.monotonic() - t0
                return server
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
            pass
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"letta server not healthy after {timeout} s:\n{_tail(log_path)}")


def reply_texts(messages: Any) -> list[str]:
    """The replies in a Letta response's messages (letta-client objects or dicts), in order.

    A reply is an assistant_message's text (letta_v1_agent, memgpt_v2_agent) or the `message`
    argument of a send_message tool call (agents with enable_sleeptime=True).
    """
    out: list[str] = []
    for message in messages:
        data = message if isinstance(message, dict) else message.model_dump(mode="json")
        kind = data.get("message_type")
        if kind == "assistant_message":
            content = data.get("content")
            if isinstance(content, list):
                content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
            out.append(content or "")
        elif kind == "tool_call_message":
            calls = data.get("tool_calls") if isinstance(data.get("tool_calls"), list) else None
            for call in calls or [data.get("tool_call") or {}]:
                if call.get("name") == "send_message":
                    try:
                        out.append(json.loads(call.get("arguments") or "{}").get("message", ""))
                    except ValueError:
                        pass
    return out


def rss_mb(pid: int) -> float:
    """Resident memory of a process group's members (MiB), from /proc."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pid:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ProcessLookupError, ValueError):
            continue
    return total / 1024


# --------------------------------------------------------------------------------------------
# Pytest fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def scripted_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScriptedModel]:
    model = ScriptedModel.start(stderr_path=tmp_path_factory.mktemp("scripted-model") / "stderr.log")
    try:
        yield model
    finally:
        model.stop()


@pytest.fixture(scope="session")
def letta_server(scripted_model: ScriptedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LettaServer]:
    server = start_letta_server(tmp_path_factory.mktemp("letta-server"), model=scripted_model)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def keyed_letta_server(scripted_model: ScriptedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LettaServer]:
    """A second real Letta server, in its secure mode: only `api_key` opens it (a wrong key gets 401)."""
    server = start_letta_server(tmp_path_factory.mktemp("keyed-letta-server"), model=scripted_model,
                                api_key="letta-test-key-k3y")
    try:
        yield server
    finally:
        server.stop()


if __name__ == "__main__":  # manual run: start everything, print where, stop on Ctrl-C
    started = start_letta_server(Path(tempfile.mkdtemp(prefix="blipflow-letta-run-")))
    print(json.dumps({"base_url": started.base_url, "model": started.model.url, "logs": str(started.run_dir),
                      "timings": started.timings}), flush=True)
    try:
        while started.process.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        started.stop()
    sys.exit(0)
