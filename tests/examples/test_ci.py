"""The CI example: the deploy script passes shellcheck and the workflow runs the script that
exists beside it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

CI = Path(__file__).resolve().parents[2] / "examples" / "ci"


@pytest.mark.parametrize("script", ["ci-deploy.sh", "ci-reconcile.sh"])
def test_ci_scripts_pass_shellcheck(script):
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck is not installed")
    result = subprocess.run(["shellcheck", "-s", "bash", str(CI / script)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_scheduled_reconcile_job_with_the_deploys_secrets():
    workflow = yaml.safe_load((CI / "github-actions.yml").read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    assert triggers["schedule"][0]["cron"] and "workflow_dispatch" in triggers
    assert "reconcile" in triggers["workflow_dispatch"]["inputs"]["action"]["options"]
    deploy, reconcile = workflow["jobs"]["deploy"], workflow["jobs"]["reconcile"]
    assert "schedule" in reconcile["if"] and "reconcile" in reconcile["if"]
    assert "workflow_dispatch" in deploy["if"]  # a scheduled run does not deploy
    secrets = {k: v for k, v in deploy["env"].items() if "secrets." in str(v)}
    assert secrets and all(reconcile["env"].get(k) == v for k, v in secrets.items())
    runs = [step.get("run", "") for step in reconcile["steps"]]
    assert "examples/ci/ci-reconcile.sh" in runs
    restores = [s for s in reconcile["steps"] if "cache/restore" in s.get("uses", "")]
    assert restores and restores[0]["with"]["path"] == deploy["env"]["SERVESTACK_STATE_DIR"]


def test_workflow_runs_the_script_beside_it():
    workflow = yaml.safe_load((CI / "github-actions.yml").read_text())
    runs = [step.get("run", "") for job in workflow["jobs"].values()
            for step in job.get("steps", [])]
    scripts = [word for run in runs for word in run.split() if word.endswith(".sh")]
    assert scripts, "the workflow runs no script"
    repo = CI.parents[1]
    for script in scripts:
        assert (repo / script).is_file(), f"{script} does not exist"


def test_the_reconcile_script_runs_one_pass_with_the_state_dir(tmp_path):
    """With a stand-in `servestack` on PATH that records its arguments and exits 6."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "servestack"
    stub.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$ARGS_FILE"\nexit 6\n')
    stub.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "ARGS_FILE": str(tmp_path / "args"),
           "SERVESTACK_STATE_DIR": "state", "SERVESTACK_ARTIFACTS": str(tmp_path / "out")}
    result = subprocess.run(["bash", str(CI / "ci-reconcile.sh"), "mixtral"], env=env,
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 6  # servestack's own exit status (6: locked)
    args = (tmp_path / "args").read_text().split()
    assert args == ["reconcile", "mixtral", "--engine", "pulumi", "--state-dir", "state",
                    "--report", f"{tmp_path}/out/reconcile-report.json"]
    assert "exited with 6" in result.stderr
