"""`servestack generate` and `plan-mixtral --generate`: the stack file a candidate gets."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from servestack.cli.main import main


@pytest.fixture(autouse=True)
def hf_token(monkeypatch):
    """The embedded example declares the secret HF_TOKEN: generate wants a value for it (from
    the deployer's environment, here a stand-in that no file may contain)."""
    monkeypatch.setenv("HF_TOKEN", "hf_stand_in_for_the_generate_tests")


def test_generate_writes_the_same_stack_file_twice_and_keeps_user_secrets(run_cli, tmp_path):
    args = ("plan-mixtral", "--generate", "--cloud", "aws", "--stack", "mix")
    first = run_cli(*args, cwd=tmp_path)
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
    second = run_cli(*args, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    again = yaml.safe_load(path.read_text())
    assert again["config"]["servestack:hfToken"] == {"secure": "v1:abc"}
    assert again["encryptionsalt"] == "v1:salt"
    run_cli("plan-mixtral", "--generate", "--cloud", "aws", "--stack", "mix2", cwd=tmp_path)
    run_cli("plan-mixtral", "--generate", "--cloud", "aws", "--stack", "mix2", cwd=tmp_path)
    # the same file but for the stack's name, which the deployment carries, and the names
    # derived from it (the secret's, so that two stacks never share one)
    other = (tmp_path / "stacks" / "Pulumi.mix2.yaml").read_text().splitlines()
    changed = [(a, b) for a, b in zip(text.splitlines(), other, strict=True) if a != b]
    assert [a.strip() for a, _ in changed][:1] == ["stack: mix"]
    assert all(b == a.replace(": mix", ": mix2") or a.endswith(("/hf-token", "/api-key"))
               for a, b in changed)
    assert not list((tmp_path / "stacks").glob(".*.tmp"))


def test_generate_rejects_bad_pick_and_cidr(run_cli, tmp_path):
    bad_pick = run_cli("servestack", "generate", "--pick", "nope", cwd=tmp_path)
    assert bad_pick.returncode == 2 and "no candidate with that id" in bad_pick.stderr
    bad_cidr = run_cli("servestack", "generate", "--allow-cidr", "10.0.0.300/8", cwd=tmp_path)
    assert bad_cidr.returncode == 2 and "not a CIDR" in bad_cidr.stderr
    assert not (tmp_path / "stacks").exists()


def test_the_options_reach_the_stack_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--candidate", "2", "--allow-cidr", "203.0.113.0/24",
                 "--ssh-cidr", "198.51.100.7/32", "--stack", "prod", "--explain"]) == 0
    out = capsys.readouterr().out
    assert "Dropped:" in out and "Wrote stacks/Pulumi.prod.yaml for candidate 2:" in out
    config = yaml.safe_load((tmp_path / "stacks" / "Pulumi.prod.yaml").read_text())["config"]
    assert config["servestack:candidate"]["rank"] == 2
    deployment = config["servestack:deployment"]
    assert (deployment["allow_cidrs"], deployment["ssh_cidrs"]) == (["203.0.113.0/24"],
                                                                    ["198.51.100.7/32"])


def test_terraform_goes_into_the_stacks_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--format", "terraform", "--stack", "tf.prod", "--stacks-dir",
                 "out", "--cloud", "aws"]) == 0
    out = capsys.readouterr().out
    assert "cd out/tf.prod && terraform init" in out
    # the embedded probe posts a body with the key: the balancer checks /health and says so
    assert "Health check: the balancer checks /health, as it cannot send what the readiness " \
        "probe POST /v1/chat/completions needs" in out
    assert sorted(p.name for p in (tmp_path / "out" / "tf.prod").iterdir()) == [
        ".gitignore", "main.tf.json", "terraform.tfvars.json"]


def _rows(table: str) -> dict[str, str]:
    """The table's rows by the number in their first column."""
    return {line.split()[0]: line for line in table.splitlines()
            if line.split()[:1] and line.split()[0].isdigit()}


def test_candidate_n_generates_exactly_the_row_shown_as_n(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["plan"]) == 0
    rows = _rows(capsys.readouterr().out)
    # the default table shows one row per group: its numbers are ranks with gaps, not 1, 2, 3
    numbers = list(rows)
    assert numbers[0] == "1" and numbers[1] != "2"
    for number in numbers[:4]:
        assert main(["generate", "--candidate", number, "--stack", f"s{number}"]) == 0
        out = capsys.readouterr().out
        wrote = next(line for line in out.splitlines() if line.startswith("Wrote "))
        infra, instance = re.split(r"\s{2,}", rows[number].strip())[1:3]
        assert f"for candidate {number}: {infra} {instance.split()[0]} " in wrote
    # generate's own table (printed with --all or --explain) numbers its rows the same way
    assert main(["generate", "--explain", "--candidate", numbers[1], "--stack", "t"]) == 0
    assert _rows(capsys.readouterr().out)[numbers[1]] == rows[numbers[1]]


@pytest.mark.parametrize("engine", ["terraform", "pulumi"])
def test_a_stacks_dir_that_cannot_be_written_is_one_line_exit_2(tmp_path, monkeypatch, capsys,
                                                                engine):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("")
    assert main(["generate", "--format", engine, "--stacks-dir", "a_file/sub",
                 "--cloud", "aws"]) == 2
    err = capsys.readouterr().err
    assert "--stacks-dir a_file/sub: cannot write a_file/sub" in err
    assert "Traceback" not in err and not (tmp_path / "a_file" / "sub").exists()
