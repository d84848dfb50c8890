"""`servestack plan` and `plan-mixtral` end to end, as a user runs them: real processes, exit
codes, no tracebacks."""

from __future__ import annotations

import json

import pytest

from tests.conftest import SHARED_MIXTRAL


def test_plan_mixtral_candidates_table(run_cli):
    result = run_cli("plan-mixtral", "--candidates")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.split()[:2] == ["#", "INFRA"])
    for column in ("INSTANCE", "vCPUs", "Mem(GB)", "GPUS", "$/h", "CHOSEN"):
        assert column in header
    chosen = [line for line in lines if "\u2714" in line]
    assert len(chosen) == 1 and "Standard_NC48ads_A100_v4" in chosen[0]


def test_plan_mixtral_json_is_the_documented_contract(run_cli):
    result = run_cli("plan-mixtral", "--candidates", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["candidates"][0]["rank"] == 1
    assert data["model"] == "mistralai/Mixtral-8x7B-Instruct-v0.1"
    assert any(d["what"] == "A10:8" for d in data["dropped"])


def test_explain_all_and_filters(run_cli):
    result = run_cli("plan-mixtral", "--explain", "--all", "--cloud", "aws", "--spot")
    assert result.returncode == 0, result.stderr
    assert "Dropped:" in result.stdout and "A10:8" in result.stdout
    rows = [line for line in result.stdout.splitlines() if line.split()[1:2] == ["AWS"]]
    assert rows and all("[Spot]" in line for line in rows)


@pytest.mark.skipif(not SHARED_MIXTRAL.exists(), reason="shared/ not beside the checkout")
def test_servestack_plan_on_skypilots_file(run_cli):
    result = run_cli("servestack", "plan", str(SHARED_MIXTRAL))
    assert result.returncode == 0, result.stderr
    assert "g6.48xlarge" in result.stdout


def test_bad_spec_is_one_line_exit_2_no_traceback(run_cli, tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("resources:\n  accelerators: A1000:4\n")
    result = run_cli("servestack", "plan", str(spec))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert f"{spec}:2: resources.accelerators: unknown accelerator 'A1000'" in result.stderr


def test_nothing_fits_exits_2_with_reasons(run_cli, tmp_path):
    spec = tmp_path / "a100x3.yaml"
    spec.write_text("resources:\n  accelerators: A100:3\n")
    result = run_cli("servestack", "plan", str(spec))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "counts that exist: 1, 2, 4, 8, 16" in result.stderr


def test_unknown_region_flag_is_a_clear_error(run_cli):
    result = run_cli("plan-mixtral", "--cloud", "aws", "--region", "us-east-7")
    assert result.returncode == 2 and "unknown region 'us-east-7' of aws" in result.stderr
