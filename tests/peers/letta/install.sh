#!/usr/bin/env bash
# Install the real Letta server (the last Python one, letta 0.16.8) that blipflow's dispatch tests
# talk to, in its OWN virtual environment tests/peers/letta/.venv: its pins clash with the project's.
#
#   bash tests/peers/letta/install.sh          # install, or do nothing if up to date (well under 1 s)
#   bash tests/peers/letta/install.sh --force  # rebuild the venv from scratch
#
# What it installs, all from the committed, hash-pinned tests/peers/letta/requirements.lock:
#   - letta[server,postgres]==0.16.8  (the PyPI name `letta` is now "Letta Code"; 0.16.8 is the
#     last release of the server; its repository is archived)
#   - pgserver==0.1.4, a wheel that bundles PostgreSQL 16 + pgvector binaries (Debian has no
#     pgvector, and Letta >= 0.12 needs PostgreSQL with pgvector)
# and makes sure the unprivileged system user that runs that PostgreSQL exists (PostgreSQL refuses
# to run as root; tests here run as root). A stamp (hash of the lock + Python version + this
# script's version) in the venv makes a repeat run a no-op.
#
# The lock is regenerated (only when changing versions) with:
#   uv pip compile tests/peers/letta/requirements.in --python-version 3.11 \
#     --python-platform x86_64-unknown-linux-gnu --exclude-newer 2026-05-15T00:00:00Z \
#     --generate-hashes -o tests/peers/letta/requirements.lock
# (--exclude-newer matters: newer transitive releases break `import letta`.)
#
# Needs: Python 3.11 (python3.11 or $PYTHON), sha256sum, network access to PyPI for a cold install,
# a C compiler + libpq-dev (pg_config) because psycopg2 (a Letta dependency) has no wheel.
# Environment: PYTHON (interpreter), UV (a uv binary to use), LETTA_PG_USER (default blipflow-pg).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
venv="$here/.venv"
lock="$here/requirements.lock"
stamp="$venv/.blipflow-installed"
pg_user="${LETTA_PG_USER:-blipflow-pg}"
script_version=2

log() { echo "tests/peers/letta/install.sh: $*" >&2; }
die() { echo "tests/peers/letta/install.sh: ERROR: $*" >&2; exit 1; }

force=0
case "${1:-}" in
  --force) force=1 ;;
  "") ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

[ -f "$lock" ] || die "missing lock file $lock"
command -v sha256sum >/dev/null || die "sha256sum not found (coreutils)"

ensure_pg_user() {
  # PostgreSQL must not run as root: a dedicated system user, created once.
  if [ "$(id -u)" != 0 ]; then
    return 0  # not root: PostgreSQL runs as the current user
  fi
  if ! getent passwd "$pg_user" >/dev/null; then
    command -v useradd >/dev/null || die "useradd not found; create a non-root user '$pg_user' by hand"
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$pg_user" \
      || getent passwd "$pg_user" >/dev/null \
      || die "could not create system user '$pg_user'"
    log "created system user $pg_user (runs the test PostgreSQL)"
  fi
}

python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3
command -v "$python" >/dev/null 2>&1 || die "no Python found (set PYTHON to a Python 3.11 interpreter)"
"$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || die "letta 0.16.8 is locked for Python 3.11, found $("$python" --version 2>&1) (set PYTHON)"
pyver="$("$python" -c 'import sys; print(sys.version.split()[0])')"

want="$( { sha256sum "$lock" | cut -d' ' -f1; echo "python=$pyver script=$script_version"; } | sha256sum | cut -d' ' -f1)"

# One install at a time (two test sessions may start together): lock this script's own file.
if command -v flock >/dev/null; then
  exec 9<"${BASH_SOURCE[0]}"
  flock 9
fi

ensure_pg_user

if [ "$force" = 0 ] && [ -x "$venv/bin/letta" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi

start=$(date +%s)
log "installing letta 0.16.8 + pgserver into $venv from $(basename "$lock") ..."
if [ "$force" = 1 ] || [ ! -x "$venv/bin/python" ]; then
  rm -rf "$venv"
  "$python" -m venv "$venv" || die "could not create venv $venv (is python3.11-venv installed?)"
fi
rm -f "$stamp"

uv="${UV:-}"
if [ -z "$uv" ]; then
  if [ -x "$root/.venv/bin/uv" ]; then
    uv="$root/.venv/bin/uv"
  else
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check uv==0.13.9 \
      || die "could not pip install uv==0.13.9 into $venv"
    uv="$venv/bin/uv"
  fi
fi

# `sync` makes the venv exactly the lock (removes anything else); hashes in the lock are verified.
# Bytecode is compiled now, not at every server start (saves ~4 s per start, ~3 s per schema build).
"$uv" pip sync --quiet --compile-bytecode --python "$venv/bin/python" "$lock" \
  || die "uv pip sync of $lock failed (PyPI reachable? C compiler and pg_config for psycopg2?)"

"$venv/bin/python" - <<'EOF' || die "the installed Letta does not import or pgserver has no binaries"
import importlib.metadata as md, pathlib, pgserver, letta.orm  # noqa: F401
assert md.version("letta") == "0.16.8", md.version("letta")
pginstall = pathlib.Path(pgserver.__file__).parent / "pginstall"
for tool in ("bin/initdb", "bin/postgres", "bin/pg_ctl"):
    assert (pginstall / tool).is_file(), pginstall / tool
EOF
# The unprivileged PostgreSQL user must be able to read + run the bundled binaries.
chmod -R a+rX "$venv/lib" 2>/dev/null || true

echo "$want" > "$stamp"
log "done in $(( $(date +%s) - start )) s"
