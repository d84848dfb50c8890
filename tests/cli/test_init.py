"""`servestack init` and generate in a folder of the user's: an installed package, no repo
files around (the tests run in an empty temporary folder, outside any Pulumi project)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

SPEC = """\
name: qwen
resources:
  accelerators: L4:1
run: vllm serve Qwen/Qwen2.5-7B-Instruct
"""
REPO = Path(__file__).resolve().parents[2]


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "my-service"
    folder.mkdir()
    (folder / "serve.yaml").write_text(SPEC)
    assert not any((p / "Pulumi.yaml").exists() for p in (folder, *folder.parents))
    return folder


def test_generate_says_to_run_init_until_the_folder_is_a_project(run_cli, tmp_path):
    folder = _folder(tmp_path)
    before = run_cli("servestack", "generate", "serve.yaml", "--cloud", "aws", cwd=folder)
    assert before.returncode == 0, before.stderr
    assert "run `servestack init` first" in before.stdout
    assert sorted(p.name for p in folder.iterdir()) == ["serve.yaml", "stacks"]

    init = run_cli("servestack", "init", cwd=folder)
    assert init.returncode == 0, init.stderr
    assert sorted(p.name for p in folder.iterdir()) == [
        ".gitignore", "Pulumi.yaml", "__main__.py", "serve.yaml", "stacks"]
    project = yaml.safe_load((folder / "Pulumi.yaml").read_text())
    assert project["name"] == "my-service" and project["runtime"]["name"] == "python"
    assert (project["main"], project["stackConfigDir"]) == ("__main__.py", "stacks")
    program = (folder / "__main__.py").read_text()
    compile(program, "__main__.py", "exec")
    assert "from servestack.pulumi.program import main" in program

    after = run_cli("servestack", "generate", "serve.yaml", "--cloud", "aws", cwd=folder)
    assert after.returncode == 0, after.stderr
    assert "servestack init" not in after.stdout
    assert "pulumi up -s qwen" in after.stdout
    assert (folder / "stacks" / "Pulumi.qwen.yaml").is_file()


def test_init_keeps_what_exists_unless_forced(run_cli, tmp_path):
    folder = tmp_path / "new" / "project"  # created
    assert run_cli("servestack", "init", str(folder), cwd=tmp_path).returncode == 0
    (folder / ".gitignore").write_text("mine\n")
    again = run_cli("servestack", "init", str(folder), cwd=tmp_path)
    assert again.returncode == 0 and "Kept" in again.stdout
    assert (folder / ".gitignore").read_text() == "mine\n"
    forced = run_cli("servestack", "init", str(folder), "--force", cwd=tmp_path)
    assert forced.returncode == 0
    assert "terraform.tfstate" in (folder / ".gitignore").read_text()
    bad = run_cli("servestack", "init", str(folder / "__main__.py"), cwd=tmp_path)
    assert bad.returncode == 2 and "is not a folder" in bad.stderr


def _ignored(repo: Path, paths: list[str]) -> set[str]:
    found = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=repo,
                           capture_output=True, text=True)
    return set(found.stdout.split())


TERRAFORM_LEFTOVERS = ["stacks/qwen/terraform.tfstate", "stacks/qwen/terraform.tfstate.backup",
                       "stacks/qwen/.terraform/providers/x", "stacks/qwen/up.tfplan"]
KEPT = ["stacks/qwen/main.tf.json", "stacks/qwen/terraform.tfvars.json"]


def test_terraform_stacks_have_their_own_folder_whose_state_git_ignores(run_cli, tmp_path):
    folder = _folder(tmp_path)
    subprocess.run(["git", "init", "-q"], cwd=folder, check=True)
    result = run_cli("servestack", "generate", "serve.yaml", "--cloud", "aws", "--format",
                     "terraform", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert "cd stacks/qwen && terraform init" in result.stdout
    assert _ignored(folder, TERRAFORM_LEFTOVERS + KEPT) == set(TERRAFORM_LEFTOVERS)


def test_the_repo_ignores_terraform_state_too():
    assert _ignored(REPO, TERRAFORM_LEFTOVERS + KEPT) == set(TERRAFORM_LEFTOVERS)
