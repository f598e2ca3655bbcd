"""Coordination is library: importing it loads neither Prefect, the Prefect layer, the CLI nor dispatch."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import blipflow.coordination


def test_coordination_imports_no_prefect_and_no_dispatch() -> None:
    modules = [module.name for module in pkgutil.iter_modules(blipflow.coordination.__path__)]
    script = ("import sys\n" + "".join(f"import blipflow.coordination.{module}\n" for module in modules)
              + "print(sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'flows', 'tasks', 'blocks') "
                "or m in ('blipflow.cli', 'blipflow.dispatch', 'blipflow.publish')))")
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    assert len(modules) >= 15 and loaded.stdout.strip() == "[]"
