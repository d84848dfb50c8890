"""`servestack plan` and `plan-mixtral` end to end, as a user runs them: real processes, exit
codes, no tracebacks."""

from __future__ import annotations

import json

import pytest
import yaml

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
    rows = [line for line in result.stdout.splitlines()
            if line.split()[:1] and line.split()[0].isdigit() and line.split()[1] == "AWS"]
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


QWEN = "Qwen/Qwen2.5-72B-Instruct"


def _deployment(tmp_path, monkeypatch, *args: str) -> dict:
    from servestack.cli.main import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_TOKEN", "hf_stand_in")
    assert main(["generate", *args, "--cloud", "aws", "--stack", "m"]) == 0
    text = (tmp_path / "stacks" / "Pulumi.m.yaml").read_text()
    return yaml.safe_load(text)["config"]["servestack:deployment"]


def test_model_sets_the_env_through_which_run_names_its_model(tmp_path, monkeypatch):
    # the embedded example serves $MODEL_NAME and probes with {"model": "$MODEL_NAME"}
    deployment = _deployment(tmp_path, monkeypatch, "--model", QWEN)
    assert deployment["model"] == QWEN and deployment["envs"]["MODEL_NAME"] == QWEN
    assert json.loads(deployment["readiness"]["post_data"])["model"] == QWEN
    assert "vllm serve $MODEL_NAME" in deployment["run"]


def test_model_is_what_the_default_command_serves_without_run(tmp_path, monkeypatch):
    spec = tmp_path / "no-run.yaml"
    spec.write_text("resources:\n  accelerators: A100-80GB:8\n")
    deployment = _deployment(tmp_path, monkeypatch, str(spec), "--model", QWEN)
    assert deployment["model"] == QWEN and deployment["run"] is None


@pytest.mark.parametrize("run, error", [
    ("vllm serve Qwen/Qwen2.5-7B-Instruct", "the spec's run serves 'Qwen/Qwen2.5-7B-Instruct'"),
    ("python serve.py", "the spec's run names no model"),
])
def test_model_is_refused_when_run_would_ignore_it(run_cli, tmp_path, run, error):
    spec = tmp_path / "serve.yaml"
    spec.write_text(f"resources:\n  accelerators: A100-80GB:2\nrun: {run}\n")
    result = run_cli("servestack", "plan", str(spec), "--model", QWEN)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"--model '{QWEN}': {error}" in result.stderr


def test_model_equal_to_what_run_serves_is_accepted(run_cli, tmp_path):
    spec = tmp_path / "serve.yaml"
    spec.write_text(f"resources:\n  accelerators: A100-80GB:2\nrun: vllm serve {QWEN}\n")
    result = run_cli("servestack", "plan", str(spec), "--model", QWEN)
    assert result.returncode == 0, result.stderr


def test_the_heading_gives_each_clouds_oldest_to_newest_price_date(run_cli):
    from servestack.inputs import load_inputs

    files = load_inputs(None).catalog.files
    heading = run_cli("plan-mixtral").stdout.splitlines()[1]
    for cloud, file in files.items():
        span = file.newest if file.oldest == file.newest else f"{file.oldest}..{file.newest}"
        assert f"{cloud} {span}" in heading
    assert any(file.oldest != file.newest for file in files.values())  # azure today
