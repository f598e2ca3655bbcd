"""The control plane is library: importing it loads neither Prefect nor the Prefect layer nor the DuckDB
store it replaces for dispatch and publish."""

from __future__ import annotations

import subprocess
import sys

MODULES = ("engine", "tables", "schema", "facts", "blips", "ledger", "outbox", "circuits", "leases")


def test_the_control_plane_imports_no_prefect_and_no_duckdb_store() -> None:
    script = ("import sys\n"
              + "".join(f"import blipflow.control.{module}\n" for module in MODULES)
              + "print(sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'flows', 'tasks', 'blocks', "
                "'cli', 'duckdb') or m.startswith(('blipflow.store', 'blipflow.dispatch', 'blipflow.publish'))))")
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    assert loaded.stdout.strip() == "[]"
