"""`servestack generate --format terraform`: the chosen candidate as a Terraform configuration.

Same plan, same candidate choice, same `Deployment` as the Pulumi stack file; the output is a
directory `stacks/<name>/` of its own (Terraform's working directory: its state and `.terraform/`
land there) with `main.tf.json` (Terraform JSON syntax), `terraform.tfvars.json` (the variables'
values, no secret) and a `.gitignore` that keeps the state, the downloaded providers and saved
plans out of git (the state holds every resource's attributes). Files are written atomically;
re-running with the same inputs gives the same bytes. The Hugging Face token is never written:
it is passed at apply time as TF_VAR_hf_token.

A placement over several pools (servestack.service) is written by `generate_service`: the key
stack's folder, every pool's (as `generate_terraform` writes one, the pool reading the key
stack's state), and the front's, side by side under `stacks/`, since each reads its
neighbours' local state as `../<stack>/terraform.tfstate`. The summary gives the apply order
(key, then the pools, which may run in parallel, then the front) and the reverse for destroy.
"""

from __future__ import annotations

import json
from pathlib import Path

from servestack import clouds
from servestack.deployment.model import OUTPUT_API_KEY, Choices, Deployment, ServiceStack
from servestack.inputs import Inputs
from servestack.planner import Plan
from servestack.pulumi.generate import (
    STORES,
    Generated,
    chosen_deployment,
    open_lines,
    written,
)
from servestack.service import GeneratedService, ServiceLayout
from servestack.terraform import TOKEN_VAR, render, tfvars
from servestack.terraform.shared import render_shared

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
    chosen, deployment = chosen_deployment(inputs, plan, rank=rank, pick=pick,
                                           choices=choices, stack=stack)
    path = write_pool(stacks_dir, deployment)
    return Generated(path=path, stack=deployment.stack, chosen=chosen, deployment=deployment,
                     secret_names=inputs.spec.secrets)


def write_stack(directory: Path, document: dict, variables: dict | None = None) -> Path:
    """One stack's folder: main.tf.json, its variables' values when it has any, and the
    .gitignore that keeps its state (which holds the API key) out of git."""
    from servestack.fsutil import write_atomic

    write_atomic(directory / ".gitignore", GITIGNORE)
    if variables is not None:
        write_atomic(directory / VARS_FILE, dump(variables))
    return write_atomic(directory / MAIN_FILE, dump(document))


def write_pool(stacks_dir: str | Path, d: Deployment) -> Path:
    return write_stack(stack_dir(stacks_dir, d.stack), render(d), tfvars(d))


def generate_service(inputs: Inputs, plan: Plan, layout: ServiceLayout, *,
                     stacks_dir: str) -> GeneratedService:
    """Every folder of a service over several pools, in apply order: the key stack's (unless
    --no-api-key), each pool's, the front's. `inputs` and `plan` built `layout`, which holds
    every decision (the engines share this signature)."""
    paths: dict[str, Path] = {}
    if layout.key_stack:
        key = ServiceStack("key", layout.key_stack, layout.service)
        paths[key.name] = write_stack(stack_dir(stacks_dir, key.name), render_shared(key))
    for d in layout.pools:
        paths[d.stack] = write_pool(stacks_dir, d)
    front = ServiceStack("front", layout.front_stack, layout.service, front=layout.front)
    paths[front.name] = write_stack(stack_dir(stacks_dir, front.name), render_shared(front))
    generated = GeneratedService(layout=layout, paths=paths, summary="",
                                 secret_names=inputs.spec.secrets)
    generated.summary = service_summary(generated)
    return generated


def summary(result: Generated) -> str:
    d = result.deployment
    directory = result.path.parent
    lines = written(result, f"{result.path} and {directory / VARS_FILE}")
    lines += clouds.get(d.cloud).setup_hints(d, "terraform")
    secrets = f"TF_VAR_{TOKEN_VAR}=\"$(cat secrets.env)\" " if d.secret else ""
    if d.secret:
        lone = "; a lone HF token works too" if set(result.secret_names) <= {"HF_TOKEN"} else ""
        lines.append(f"Secrets: put {_names(result.secret_names)} in an env file (NAME=value "
                     f"lines) and pass it as TF_VAR_{TOKEN_VAR}{lone}.")
    lines.append(f"Deploy: cd {directory} && terraform init && {secrets}terraform apply")
    lines += open_lines(d)
    return "\n".join(lines) + "\n"


def service_summary(generated: GeneratedService) -> str:
    """The folders in apply order, then the exact commands: key, the pools (in parallel if
    you like: none reads another), the front; destroy in the reverse order."""
    layout, paths = generated.layout, generated.paths
    lines = [f"Wrote the {len(paths)} Terraform stacks of service {layout.service}, in apply "
             "order:"]
    if layout.key_stack:
        lines.append(f"  key:   {paths[layout.key_stack].parent} (draws the API key the "
                     "pools share; no cloud resource)")
    lines += [f"  pool:  {paths[d.stack].parent} ({_pool_line(d)})" for d in layout.pools]
    lines.append(f"  front: {paths[layout.front_stack].parent} ({_front_line(layout)})")
    for d in layout.pools:
        lines += clouds.get(d.cloud).setup_hints(d, "terraform")
    token = any(d.secret for d in layout.pools)
    if token:
        lines.append(f"Secrets: put {_names(generated.secret_names)} in an env file (NAME=value "
                     f"lines) and pass it to each pool as TF_VAR_{TOKEN_VAR} (never written "
                     "here).")
    lines += _commands(generated, token)
    lines += _key_lines(layout, generated.paths[layout.key_stack].parent
                        if layout.key_stack else None)
    return "\n".join(lines) + "\n"


def _names(names: tuple[str, ...]) -> str:
    """The secrets the VMs need, by name (the values are never shown)."""
    return ", ".join(names) if names else "the secrets"


def _commands(generated: GeneratedService, token: bool) -> list[str]:
    layout = generated.layout
    folder = {name: path.parent for name, path in generated.paths.items()}
    pool_names = {d.stack for d in layout.pools}

    def run(name: str, verb: str) -> str:
        env = f"TF_VAR_{TOKEN_VAR}=\"$(cat secrets.env)\" " if token and name in pool_names \
            else ""
        return (f"  terraform -chdir={folder[name]} init && "
                f"{env}terraform -chdir={folder[name]} {verb}")

    key = [layout.key_stack] if layout.key_stack else []
    pools = [d.stack for d in layout.pools]
    lines = ["Apply, in this order (each pool reads the key stack's state, the front reads "
             "the pools' load balancers from theirs):"]
    lines += [run(name, "apply") for name in key]
    lines.append("  then the pools (they may run in parallel):" if key else
                 "  the pools (they may run in parallel):")
    lines += [run(name, "apply") for name in pools]
    lines.append("  then the front:")
    lines.append(run(layout.front_stack, "apply"))
    lines.append("Destroy in the reverse order: the front, the pools, then the key:")
    lines += [run(name, "destroy") for name in reversed([*key, *pools, layout.front_stack])]
    return lines


def _pool_line(d: Deployment) -> str:
    replicas = str(d.min_replicas) if d.min_replicas == d.max_replicas else \
        f"{d.min_replicas}-{d.max_replicas}"
    types = ", ".join(i.instance_type for i in d.instances)
    return f"{d.cloud} {d.region}, {types}{' [Spot]' if d.use_spot else ''}, " \
        f"{replicas} replica(s)"


def _front_line(layout: ServiceLayout) -> str:
    plan = layout.front
    if plan.kind == "route53":
        return (f"Route 53 {plan.routing} records for {plan.domain} in hosted zone "
                f"{plan.hosted_zone_id}, one health check per pool")
    return "a Global Accelerator; its DNS name is the front's endpoint output"


def _key_lines(layout: ServiceLayout, key_folder: Path | None) -> list[str]:
    """Where the shared key is kept, and what stays open by choice (each note once); the
    layout's notes are the CLI's to print."""
    from servestack.report import security_notes

    lines = []
    kept = [f"{STORES[d.api_key.store]} {d.api_key.name} ({d.cloud} {d.region})"
            for d in layout.pools if d.api_key is not None]
    if layout.key_stack and kept:
        lines.append(f"API key: drawn once at the key stack's first apply (its sensitive "
                     f"{OUTPUT_API_KEY} output: terraform -chdir={key_folder} output -raw "
                     f"{OUTPUT_API_KEY}); every pool keeps it in its {'; '.join(kept)}.")
    notes = dict.fromkeys(note for d in layout.pools for note in security_notes(d))
    return lines + [f"Open by your choice: {note}" for note in notes]
