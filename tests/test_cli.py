"""The CLI end to end, as a user runs it: real processes, exit codes, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from .conftest import SHARED_MIXTRAL


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    code = "import sys; from servestack.cli.main import main, plan_mixtral; " \
           "f = plan_mixtral if sys.argv[1] == 'plan-mixtral' else main; " \
           "sys.exit(f(sys.argv[2:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=cwd, timeout=60)


def test_plan_mixtral_candidates_table():
    result = run("plan-mixtral", "--candidates")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.split()[:1] == ["INFRA"] for line in lines)
    header = next(line for line in lines if line.lstrip().startswith("INFRA"))
    for column in ("INSTANCE", "vCPUs", "Mem(GB)", "GPUS", "$/h", "CHOSEN"):
        assert column in header
    chosen = [line for line in lines if "\u2714" in line]
    assert len(chosen) == 1 and "a2-ultragpu-2g" in chosen[0]


def test_plan_mixtral_json_is_the_documented_contract():
    result = run("plan-mixtral", "--candidates", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["candidates"][0]["rank"] == 1
    assert data["model"] == "mistralai/Mixtral-8x7B-Instruct-v0.1"
    assert any(d["what"] == "A10:8" for d in data["dropped"])


def test_explain_all_and_filters():
    result = run("plan-mixtral", "--explain", "--all", "--cloud", "aws", "--spot")
    assert result.returncode == 0, result.stderr
    assert "Dropped:" in result.stdout and "A10:8" in result.stdout
    rows = [line for line in result.stdout.splitlines() if line.startswith(" AWS")]
    assert rows and all("[Spot]" in line for line in rows)


@pytest.mark.skipif(not SHARED_MIXTRAL.exists(), reason="shared/ not beside the checkout")
def test_servestack_plan_on_skypilots_file():
    result = run("servestack", "plan", str(SHARED_MIXTRAL))
    assert result.returncode == 0, result.stderr
    assert "g6.48xlarge" in result.stdout


def test_bad_spec_is_one_line_exit_2_no_traceback(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("resources:\n  accelerators: A1000:4\n")
    result = run("servestack", "plan", str(spec))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert f"{spec}:2: resources.accelerators: unknown accelerator 'A1000'" in result.stderr


def test_nothing_fits_exits_2_with_reasons(tmp_path):
    spec = tmp_path / "a100x3.yaml"
    spec.write_text("resources:\n  accelerators: A100:3\n")
    result = run("servestack", "plan", str(spec))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "counts that exist: 1, 2, 4, 8, 16" in result.stderr


def test_gpus_listing_and_detail():
    summary = run("servestack", "gpus")
    assert summary.returncode == 0 and "A100-80GB" in summary.stdout
    detail = run("servestack", "gpus", "a100-80gb", "--cloud", "gcp")
    assert detail.returncode == 0 and "a2-ultragpu-2g" in detail.stdout
    wrong = run("servestack", "gpus", "A1000")
    assert wrong.returncode == 2 and "did you mean" in wrong.stderr


def test_generate_writes_the_same_stack_file_twice_and_keeps_user_secrets(tmp_path):
    args = ("plan-mixtral", "--generate", "--cloud", "aws", "--stack", "mix")
    first = run(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    path = tmp_path / "stacks" / "Pulumi.mix.yaml"
    text = path.read_text()
    data = yaml.safe_load(text)["config"]
    assert data["aws:region"] == "us-east-1"
    assert data["servestack:deployment"]["candidate_id"] == data["servestack:candidate"]["id"]
    assert data["servestack:fallbacks"][0]["rank"] == 2
    assert "hfToken" not in json.dumps(data)
    doc = yaml.safe_load(text)
    doc["config"]["servestack:hfToken"] = {"secure": "v1:abc"}
    doc["encryptionsalt"] = "v1:salt"
    path.write_text(yaml.safe_dump(doc))
    second = run(*args, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    again = yaml.safe_load(path.read_text())
    assert again["config"]["servestack:hfToken"] == {"secure": "v1:abc"}
    assert again["encryptionsalt"] == "v1:salt"
    run("plan-mixtral", "--generate", "--cloud", "aws", "--stack", "mix2", cwd=tmp_path)
    run("plan-mixtral", "--generate", "--cloud", "aws", "--stack", "mix2", cwd=tmp_path)
    assert (tmp_path / "stacks" / "Pulumi.mix2.yaml").read_text() == text.replace("mix ", "mix2 ")\
        .replace("-s mix\n", "-s mix2\n")
    assert not list((tmp_path / "stacks").glob(".*.tmp"))


def test_generate_rejects_bad_pick_and_cidr(tmp_path):
    bad_pick = run("servestack", "generate", "--pick", "nope", cwd=tmp_path)
    assert bad_pick.returncode == 2 and "no candidate with that id" in bad_pick.stderr
    bad_cidr = run("servestack", "generate", "--allow-cidr", "10.0.0.300/8", cwd=tmp_path)
    assert bad_cidr.returncode == 2 and "not a CIDR" in bad_cidr.stderr
    assert not (tmp_path / "stacks").exists()


def test_unknown_region_flag_is_a_clear_error():
    result = run("plan-mixtral", "--cloud", "aws", "--region", "us-east-7")
    assert result.returncode == 2 and "unknown region 'us-east-7' of aws" in result.stderr
