"""Shared options: each is checked the same way by every command that takes it, a bad one ends
in one line `servestack: error: ...` and exit code 2, and nothing is written."""

from __future__ import annotations

import argparse

import pytest

from servestack.cli import options
from servestack.cli.main import main, plan_mixtral
from servestack.cli.options import PlanRequest, TableView


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty current folder (where stacks/ and .servestack/ would go) and, beside it, a file
    and a folder to pass as arguments."""
    (tmp_path / "work").mkdir()
    (tmp_path / "a-file").write_text("{}")
    (tmp_path / "a-folder").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return tmp_path


def one_line_error(capsys, prog: str = "servestack") -> str:
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1 and err.startswith(f"{prog}: error: "), err
    return err.strip()


BAD = [
    (["generate", "--candidate", "0"], "argument --candidate: 0 is not a rank: candidates are "
                                       "numbered from 1"),
    (["generate", "--candidate", "-3"], "argument --candidate: -3 is not a rank"),
    (["generate", "--candidate", "two"], "argument --candidate: 'two' is not a whole number"),
    (["generate", "--stack", "x/../../y"], "argument --stack: 'x/../../y' is not a name"),
    (["generate", "--stack", ".hidden"], "argument --stack: '.hidden' is not a name"),
    (["generate", "--stack", "s" * 101], "argument --stack: 'sss"),
    (["generate", "--format", "terraform", "--stack", ".."], "argument --stack: '..' is not"),
    (["preview", "../../etc", "--offline"], "argument stack: '../../etc' is not a name"),
    (["status", "../x"], "argument service: '../x' is not a name"),
    (["destroy", "../x", "--yes"], "argument service: '../x' is not a name"),
    (["plan", "--model-config", "{tmp}/a-folder"], "{tmp}/a-folder is not a file"),
    (["plan", "--model-config", "{tmp}/missing.json"], "{tmp}/missing.json: no such file"),
    (["plan", "--catalog-dir", "{tmp}/a-file"], "argument --catalog-dir: {tmp}/a-file is not a "
                                                "folder"),
    (["gpus", "--catalog-dir", "{tmp}/missing"], "argument --catalog-dir: {tmp}/missing: no such"),
    (["plan", "-o", "{tmp}/a-folder"], "argument -o/--output: {tmp}/a-folder is a folder"),
    (["deploy", "--report", "{tmp}/a-folder"], "argument --report: {tmp}/a-folder is a folder"),
    (["generate", "--stacks-dir", "{tmp}/a-file"], "argument --stacks-dir: {tmp}/a-file is not"),
    (["deploy", "--state-dir", "{tmp}/a-file"], "argument --state-dir: {tmp}/a-file is not a"),
    (["generate", "--stacks-dir", ""], "argument --stacks-dir: expected a path, got ''"),
    (["plan", "--catalog-dir", ""], "argument --catalog-dir: expected a path, got ''"),
    (["plan", "--region", ""], "--region: unknown region ''"),
    (["plan", "--env", "1FOO=x"], "argument --env: '1FOO' is not an environment variable name"),
    (["deploy", "--env", "=x"], "argument --env: '' is not an environment variable name"),
    (["deploy", "--secret", "A-B=hf_x"], "argument --secret: 'A-B' is not an environment"),
    (["deploy", "--max-attempts", "0"], "argument --max-attempts: must be at least 1"),
    (["deploy", "--ready-replicas", "x"], "argument --ready-replicas: 'x' is not a whole number"),
    (["deploy", "--attempt-timeout", "20x"], "'20x' is not a duration such as 20m, 90s, 1h"),
    (["plan", "--cloud", "aws", "--region", "us-east-7"], "--region: unknown region "
                                                          "'us-east-7' of aws"),
    (["gpus", "--region", "us-centrall1"], "unknown region 'us-centrall1'; did you mean "
                                           "'us-central1'?"),
    (["deploy", "--cloud", "gcp", "--region", "us-east-1"], "unknown region 'us-east-1' of gcp"),
    (["plan", "--no-such-flag"], "unrecognized arguments: --no-such-flag (see servestack --help)"),
    (["generate", "--cloud", "oci"], "argument --cloud: invalid choice: 'oci'"),
]


@pytest.mark.parametrize(("argv", "message"), BAD, ids=[" ".join(a)[:40] for a, _ in BAD])
def test_a_bad_option_is_one_line_exit_2_and_writes_nothing(workdir, capsys, argv, message):
    argv = [arg.replace("{tmp}", str(workdir)) for arg in argv]
    assert main(argv) == 2
    assert message.replace("{tmp}", str(workdir)) in one_line_error(capsys)
    assert list((workdir / "work").iterdir()) == []


@pytest.mark.parametrize("flag", ["--allow-cidr", "--ssh-cidr"])
def test_generate_and_deploy_refuse_the_same_bad_cidr(workdir, capsys, flag):
    messages = []
    for command in ("generate", "deploy"):
        assert main([command, flag, "10.0.0.300/8"]) == 2
        messages.append(one_line_error(capsys).replace(f"servestack {command} ", "servestack "))
    assert plan_mixtral(["--generate", flag, "10.0.0.300/8"]) == 2
    assert "is not a CIDR range" in one_line_error(capsys, "plan-mixtral")
    assert messages[0] == messages[1]
    assert f"argument {flag}: '10.0.0.300/8' is not a CIDR range such as 203.0.113.0/24" \
        in messages[0]
    assert list((workdir / "work").iterdir()) == []


@pytest.mark.parametrize("text", ["prod", "mixtral-prod_2", "v1.2", "a", "s" * 100, "-x"])
def test_names_pulumi_accepts(text):
    assert options.safe_name(text) == text


@pytest.mark.parametrize("text", ["", ".", "..", ".x", "a/b", "a b", "a\\b", "é", "s" * 101])
def test_names_that_could_leave_their_folder_or_pulumi_refuses(text):
    with pytest.raises(argparse.ArgumentTypeError):
        options.safe_name(text)


def test_durations():
    assert options.duration("90s") == 90 and options.duration("600") == 600
    assert options.duration("1h30m") == 5400 and options.duration(" 20M ") == 1200
    for bad in ("20x", "m", "-5", "0", "1h 30m", "inf"):
        with pytest.raises(argparse.ArgumentTypeError):
            options.duration(bad)


def parse(*argv: str) -> argparse.Namespace:
    parser = options.Parser(prog="servestack")
    options.add_view_options(parser)
    options.add_filter_options(parser)
    options.add_generate_options(parser)
    return parser.parse_args(argv)


def test_the_plan_request_holds_typed_values():
    args = parse("--cloud", "gcp", "--region", "us-central1", "--on-demand", "--env", "A=1",
                 "--env", "B=x=y", "--model", "m")
    assert options.plan_request(args, "serve.yaml") == PlanRequest(
        spec="serve.yaml", cloud="gcp", region="us-central1", spot=False, model="m",
        env={"A": "1", "B": "x=y"})


def test_the_generate_request_lists_the_plan_only_when_asked():
    request = options.generate_request(parse("--candidate", "2", "--allow-cidr", "10.0.0.0/8"),
                                       None)
    assert (request.rank, request.stack, request.stacks_dir, request.table) == \
        (2, None, "stacks", None)
    assert request.deployment.allow_cidrs == ("10.0.0.0/8",)
    assert options.generate_request(parse("--explain"), None).table == TableView(explain=True)
    assert options.generate_request(parse(), None, list_candidates=True).table == TableView()


@pytest.mark.parametrize("argv", [
    ["catalog", "validate", "--catalog-dir", "/nonexistent-servestack"],
    ["catalog", "show", "--catalog-dir", "/etc/hostname"],
    ["plan", "--model", ""],
])
def test_catalog_folders_and_model_names_are_checked_like_every_option(argv, capsys):
    from servestack.cli.main import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("servestack: error: argument") and err.count("\n") == 1
