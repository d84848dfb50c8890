"""Run the CLI as a user does: a real process, its exit code and its two streams."""

from __future__ import annotations

import subprocess
import sys

import pytest

CODE = ("import sys; from servestack.cli.main import main, plan_mixtral; "
        "f = plan_mixtral if sys.argv[1] == 'plan-mixtral' else main; sys.exit(f(sys.argv[2:]))")


@pytest.fixture
def run_cli():
    """run_cli("servestack", "plan", ...) or run_cli("plan-mixtral", ...)."""

    def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", CODE, *args], capture_output=True,
                              text=True, cwd=cwd, timeout=60)

    return run
