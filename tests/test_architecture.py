"""The house rules the folder tree states: dependencies one way (import-linter's contracts in
pyproject.toml) and library modules small enough to read, unless they say why not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LONG_MODULE_LINES = 400
LONG_MODULE_REASON = "Long because"


@pytest.mark.process
def test_dependencies_go_one_way() -> None:
    checked = subprocess.run([Path(sys.executable).parent / "lint-imports", "--no-cache"], cwd=PROJECT_ROOT,
                             capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "0 broken" in checked.stdout


def test_library_modules_over_400_lines_say_why_at_their_top() -> None:
    unexplained = []
    for module in sorted((PROJECT_ROOT / "blipflow").rglob("*.py")):
        lines = module.read_text(encoding="utf-8").splitlines()
        if len(lines) > LONG_MODULE_LINES and not any(LONG_MODULE_REASON in line for line in lines[:15]):
            unexplained.append(f"{module.relative_to(PROJECT_ROOT)} ({len(lines)} lines)")
    assert not unexplained, f"split these, or say '{LONG_MODULE_REASON} ...' in their docstring: {unexplained}"
