"""`servestack generate --format terraform`: the chosen candidate as a Terraform configuration.

Same plan, same candidate choice, same `Deployment` as the Pulumi stack file; the output is a
directory `stacks/<name>/` of its own (Terraform's working directory: its state and `.terraform/`
land there) with `main.tf.json` (Terraform JSON syntax), `terraform.tfvars.json` (the variables'
values, no secret) and a `.gitignore` that keeps the state, the downloaded providers and saved
plans out of git (the state holds every resource's attributes). Files are written atomically;
re-running with the same inputs gives the same bytes. The Hugging Face token is never written:
it is passed at apply time as TF_VAR_hf_token.
"""

from __future__ import annotations

import json
from pathlib import Path

from servestack import clouds
from servestack.deployment.model import Choices
from servestack.inputs import Inputs
from servestack.planner import Plan
from servestack.pulumi.generate import Generated, chosen_deployment, open_lines, written
from servestack.terraform import TOKEN_VAR, render, tfvars

MAIN_FILE = "main.tf.json"
VARS_FILE = "terraform.tfvars.json"
GITIGNORE = """\
# written by servestack generate: Terraform's state, providers and saved plans stay out of git
.terraform/
terraform.tfstate
terraform.tfstate.*
*.tfplan
"""


def stack_dir(stacks_dir: str | Path, name: str) -> Path:
    return Path(stacks_dir) / name


def dump(document: dict) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def generate_terraform(inputs: Inputs, plan: Plan, *, rank: int | None, pick: str | None,
                       stack: str | None, stacks_dir: str,
                       choices: Choices) -> Generated:
    """Plan -> candidate -> Deployment -> stacks/<name>/main.tf.json + terraform.tfvars.json.

    The arguments are those of `servestack.pulumi.generate.generate`, so the CLI can dispatch on
    `--format` alone. `Generated.path` is the main.tf.json written."""
    from servestack.fsutil import write_atomic

    chosen, deployment = chosen_deployment(inputs, plan, rank=rank, pick=pick,
                                           choices=choices, stack=stack)
    name = deployment.stack
    directory = stack_dir(stacks_dir, name)
    write_atomic(directory / ".gitignore", GITIGNORE)
    write_atomic(directory / VARS_FILE, dump(tfvars(deployment)))
    path = write_atomic(directory / MAIN_FILE, dump(render(deployment)))
    return Generated(path=path, stack=name, chosen=chosen, deployment=deployment)


def summary(result: Generated) -> str:
    d = result.deployment
    directory = result.path.parent
    lines = written(result, f"{result.path} and {directory / VARS_FILE}")
    lines += clouds.get(d.cloud).setup_hints(d, "terraform")
    secrets = f"TF_VAR_{TOKEN_VAR}=\"$(cat secrets.env)\" " if d.secret else ""
    if d.secret:
        lines.append(f"Secrets: put them in an env file (NAME=value lines, e.g. HF_TOKEN=...) "
                     f"and pass it as TF_VAR_{TOKEN_VAR}; a lone token works too.")
    lines.append(f"Deploy: cd {directory} && terraform init && {secrets}terraform apply")
    lines += open_lines(d)
    return "\n".join(lines) + "\n"
