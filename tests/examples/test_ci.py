"""The CI example: the deploy script passes shellcheck and the workflow runs the script that
exists beside it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

CI = Path(__file__).resolve().parents[2] / "examples" / "ci"


def test_ci_deploy_script_passes_shellcheck():
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck is not installed")
    result = subprocess.run(["shellcheck", "-s", "bash", str(CI / "ci-deploy.sh")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_runs_the_script_beside_it():
    workflow = yaml.safe_load((CI / "github-actions.yml").read_text())
    runs = [step.get("run", "") for job in workflow["jobs"].values()
            for step in job.get("steps", [])]
    scripts = [word for run in runs for word in run.split() if word.endswith(".sh")]
    assert scripts, "the workflow runs no script"
    repo = CI.parents[1]
    for script in scripts:
        assert (repo / script).is_file(), f"{script} does not exist"
