"""A REAL PostgreSQL on 127.0.0.1 for tests, from the binaries of the `pgserver` wheel in tests/peers/letta/.venv
(which tests/peers/letta/install.sh installs): the Letta server's database (tests/support/letta_server.py) and
the control plane's (tests/support/control_plane.py).

PostgreSQL refuses to run as root: it runs as an unprivileged user (default `blipflow-pg`), listening on
127.0.0.1 only (no Unix socket), with its data in a fresh temporary directory, as a process group stopped
by PID (and killed by a watchdog if the test process dies first).
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.scripted_model import REPO_ROOT, reap, start_watchdog, stop_group

INSTALL_SCRIPT = REPO_ROOT / "tests" / "peers" / "letta" / "install.sh"  # installs the venv that carries pgserver
PG_SYSTEM_USER = os.environ.get("LETTA_PG_USER", "blipflow-pg")
PG_ROLE = "letta"  # the superuser initdb makes (trust authentication, loopback only)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _venv_site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if not found:
        raise RuntimeError(f"no site-packages in {venv}; run bash {INSTALL_SCRIPT}")
    return found[0]


def _pg_identity() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as, or None to run as ourselves (when not root)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", PG_SYSTEM_USER], check=False, capture_output=True)
        try:
            entry = pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError:
            raise RuntimeError(f"no system user {PG_SYSTEM_USER!r} to run PostgreSQL (useradd failed)") from None
    return entry.pw_uid, entry.pw_gid


def _world_traversable(path: Path) -> bool:
    for part in [path, *path.parents]:
        try:
            if not part.stat().st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


def _install_stamp(venv: Path) -> str:
    """What install.sh installed (the lock's hash), or "" before it ran."""
    stamp = venv / ".blipflow-installed"
    return stamp.read_text() if stamp.exists() else ""


def _pginstall(venv: Path, identity: tuple[int, int] | None) -> Path:
    """pgserver's PostgreSQL tree, or a copy in /tmp if the unprivileged user could not reach it.

    The copy keeps the wheel's layout, site-packages/pgserver/pginstall next to site-packages/pgserver.libs:
    the binaries find libpq and the other bundled libraries only there (RPATH `$ORIGIN/../../../pgserver.libs`
    and its deeper twins). One copy per install: its name holds the tree's identity and the install stamp,
    so a copy of another install, or one made in an older layout, is never picked up.
    """
    site = _venv_site_packages(venv)
    pginstall = site / "pgserver" / "pginstall"
    if not (pginstall / "bin" / "postgres").is_file():
        raise RuntimeError(f"pgserver's PostgreSQL binaries are missing under {pginstall}; run bash {INSTALL_SCRIPT} --force")
    if identity is None or _world_traversable(pginstall / "bin"):
        return pginstall
    tree = os.stat(pginstall)
    key = hashlib.sha256(f"{pginstall}\0{tree.st_dev}\0{tree.st_ino}\0{_install_stamp(venv)}".encode()).hexdigest()[:16]
    copy = Path(tempfile.gettempdir()) / f"blipflow-pgserver-{key}"
    if not (copy / "pgserver" / "pginstall" / "bin" / "postgres").is_file():
        staging = Path(tempfile.mkdtemp(prefix="blipflow-pgserver-staging-"))
        try:
            shutil.copytree(pginstall, staging / "t" / "pgserver" / "pginstall", symlinks=True)
            shutil.copytree(site / "pgserver.libs", staging / "t" / "pgserver.libs", symlinks=True)
            subprocess.run(["chmod", "-R", "a+rX", str(staging / "t")], check=True)
            try:
                os.rename(staging / "t", copy)
            except OSError:  # another session made the same copy first
                if not (copy / "pgserver" / "pginstall" / "bin" / "postgres").is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return copy / "pgserver" / "pginstall"


@dataclass
class Postgres:
    process: subprocess.Popen
    port: int
    data_dir: Path
    log_path: Path
    watchdog: subprocess.Popen | None = None
    keep_data: bool = False

    @property
    def base_uri(self) -> str:
        """SQLAlchemy (psycopg2) URI without the database name."""
        return self.uri("postgresql+psycopg2")

    def uri(self, scheme: str, database: str = "") -> str:
        """The URI of `database` (none: the server) with `scheme` (the driver, for SQLAlchemy)."""
        return f"{scheme}://{PG_ROLE}:{PG_ROLE}@127.0.0.1:{self.port}" + (f"/{database}" if database else "")

    def stop(self) -> None:
        # SIGINT = PostgreSQL's "fast" shutdown (SIGTERM's "smart" one waits for clients).
        stop_group(self.process, first_signal=signal.SIGINT, grace=20)
        reap(self.watchdog)
        if not self.keep_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def _pg_env(pginstall: Path, home: Path) -> dict[str, str]:
    return {"PATH": f"{pginstall / 'bin'}:/usr/bin:/bin", "LC_ALL": "C", "LANG": "C", "HOME": str(home), "TZ": "UTC"}


def _private_dir(identity: tuple[int, int] | None, prefix: str) -> Path:
    """A fresh 0700 directory for PostgreSQL's data, owned by its user.

    It lives in the system temp dir, not under pytest's tmp dirs: those are 0700 root, so the
    unprivileged PostgreSQL user could not enter them.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if identity:
        os.chown(path, *identity)
    os.chmod(path, 0o700)
    return path


def _run_postgres(pginstall: Path, data_dir: Path, identity: tuple[int, int] | None, log_path: Path,
                  timeout: float = 60.0) -> Postgres:
    """Start `postgres` on data_dir/data, listening on 127.0.0.1 only (no Unix socket), and wait for it."""
    env = _pg_env(pginstall, data_dir)
    as_user: dict[str, Any] = {"user": identity[0], "group": identity[1], "extra_groups": []} if identity else {}
    port = free_port()
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [str(pginstall / "bin" / "postgres"), "-D", str(data_dir / "data"), "-p", str(port),
             "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
             # Throwaway data: durability off for speed.
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=200", "-c", "shared_buffers=64MB"],
            cwd=data_dir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, **as_user,
        )
    pg = Postgres(process, port, data_dir, log_path, start_watchdog(process.pid, signal.SIGINT, cleanup=data_dir))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pg.stop()
            raise RuntimeError(f"postgres exited with {process.returncode}:\n{_tail(log_path)}")
        ready = subprocess.run([str(pginstall / "bin" / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-q"],
                               check=False, env=env, capture_output=True)
        if ready.returncode == 0:
            return pg
        time.sleep(0.2)
    pg.stop()
    raise RuntimeError(f"postgres not ready after {timeout} s:\n{_tail(log_path)}")


def start_new_cluster(venv: Path, run_dir: Path, name: str = "template") -> Postgres:
    """A new, empty PostgreSQL cluster (initdb) from the venv's pgserver, started as its unprivileged user;
    `name` tells its data directory and log apart from other clusters'.

    Its data directory is removed when it stops, unless the caller sets keep_data.
    """
    identity = _pg_identity()
    pginstall = _pginstall(venv, identity)
    build = _private_dir(identity, f"blipflow-{name}-pg-")
    init = subprocess.run(
        [str(pginstall / "bin" / "initdb"), "-D", str(build / "data"), "-U", PG_ROLE, "--auth=trust",
         "--encoding=UTF8", "--locale=C", "--no-sync"],
        check=False, cwd=build, env=_pg_env(pginstall, build), capture_output=True, text=True, timeout=120,
        **({"user": identity[0], "group": identity[1], "extra_groups": []} if identity else {}),
    )
    if init.returncode != 0:
        shutil.rmtree(build, ignore_errors=True)
        raise RuntimeError(f"initdb failed ({init.returncode}):\n{init.stdout[-2000:]}\n{init.stderr[-2000:]}")
    return _run_postgres(pginstall, build, identity, run_dir / f"postgres-{name}.log")
