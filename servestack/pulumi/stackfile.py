"""Pulumi stack files: the chosen candidate, its ranked fallbacks and the deployment as config.

`servestack generate` writes `stacks/Pulumi.<stack>.yaml`; `pulumi up -s <stack>` at the repo
root then runs the program with it. Re-running with the same inputs gives the same file. What
the user set themselves (the secret `servestack:hfToken`, `encryptionsalt`, other keys) is
kept; the keys servestack manages are replaced. Secrets are named (`servestack:secrets`), never
valued: see servestack.pulumi.program.

A service over several pools has stacks of two more roles (`servestack:role`): its key stack
(`key_stack_config`) and its front stack (`front_stack_config`); a pool's stack file is the
single-region one, whose deployment names the key stack it reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from servestack import clouds
from servestack.deployment.model import Deployment
from servestack.errors import UserError
from servestack.front import aws as front_aws
from servestack.front.model import FrontPlan
from servestack.fsutil import write_atomic
from servestack.planner import Candidate

NAMESPACE = "servestack"
SECRETS_KEY = f"{NAMESPACE}:secrets"
# Which of a service's stacks the program builds (servestack.pulumi.program): absent = pool.
ROLE_KEY = f"{NAMESPACE}:role"
POOL_ROLE, KEY_ROLE, FRONT_ROLE = "pool", "key", "front"
MANAGED = (f"{NAMESPACE}:deployment", f"{NAMESPACE}:candidate", f"{NAMESPACE}:fallbacks",
           f"{NAMESPACE}:spec", SECRETS_KEY, ROLE_KEY, f"{NAMESPACE}:service",
           f"{NAMESPACE}:front")
# The secret env file of all the deployment's secrets (historical name: it first held only the
# Hugging Face token, and a bare token there still means HF_TOKEN).
TOKEN_KEY = f"{NAMESPACE}:hfToken"
FALLBACK_FIELDS = ("rank", "id", "cloud", "region", "zone", "instance_type", "accelerator",
                   "accelerator_count", "use_spot", "price_per_hour", "total_price_per_hour")


def provider_config(deployment: Deployment) -> dict[str, str]:
    """The cloud provider's keys (region, project, ...) for the deployment."""
    return clouds.get(deployment.cloud).stack_config(deployment)


def stack_config(deployment: Deployment, chosen: Candidate, ranked: list[Candidate],
                 spec_file: str, secret_names: tuple[str, ...] = ()) -> dict[str, object]:
    """The config map servestack owns in a stack (provider keys + servestack:*); the secrets
    only by name, which the program reads from the environment at `pulumi up`."""
    fallbacks = [{k: c.to_json()[k] for k in FALLBACK_FIELDS} for c in ranked if c.id != chosen.id]
    config: dict[str, object] = {
        **provider_config(deployment),
        f"{NAMESPACE}:spec": spec_file,
        f"{NAMESPACE}:candidate": chosen.to_json(),
        f"{NAMESPACE}:fallbacks": fallbacks,
        f"{NAMESPACE}:deployment": deployment.to_config(),
    }
    if secret_names:
        config[SECRETS_KEY] = list(secret_names)
    return config


def key_stack_config(service: str) -> dict[str, object]:
    """The key stack's config: the service whose one key it draws (no cloud, no provider)."""
    return {ROLE_KEY: KEY_ROLE, f"{NAMESPACE}:service": service}


def front_stack_config(plan: FrontPlan) -> dict[str, object]:
    """The front stack's config: the provider's region (Route 53's API region, or Global
    Accelerator's, which its own provider names again) and the plan."""
    return {"aws:region": front_aws.provider_region(plan), ROLE_KEY: FRONT_ROLE,
            f"{NAMESPACE}:front": plan.to_config()}


def flat_config(config: dict[str, object]) -> dict[str, str]:
    """Config values as the Automation API sets them: structured ones as JSON text."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}


def stack_path(stacks_dir: str | Path, stack: str) -> Path:
    return Path(stacks_dir) / f"Pulumi.{stack}.yaml"


def write_stack_file(path: Path, config: dict[str, object], header: str) -> Path:
    existing = read_stack_file(path) if path.exists() else {}
    kept = {k: v for k, v in (existing.get("config") or {}).items()
            if k not in config and k not in MANAGED}
    document = {k: v for k, v in existing.items() if k != "config"}
    document["config"] = {**config, **dict(sorted(kept.items()))}
    text = header + yaml.safe_dump(document, sort_keys=False, default_flow_style=False,
                                   width=100, allow_unicode=True)
    return write_atomic(path, text)


def read_stack_file(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError("no such stack file; run `servestack generate` first",
                        file=str(path)) from None
    except yaml.YAMLError as exc:
        raise UserError(f"not a valid stack file: {exc}", file=str(path)) from None
    if not isinstance(data, dict):
        raise UserError("not a Pulumi stack file (expected a mapping with config:)",
                        file=str(path))
    return data


def runtime_config(stack_file: dict) -> tuple[dict[str, str], list[str]]:
    """Stack file config -> (the flat string map the Pulumi runtime reads, secret keys).

    Structured values become JSON text, as the Pulumi CLI hands them to programs. Encrypted
    (`secure:`) values cannot be decrypted without the CLI, so previews see a placeholder that
    stays marked secret.
    """
    flat: dict[str, str] = {}
    secrets: list[str] = []
    for key, value in (stack_file.get("config") or {}).items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            flat[key] = "preview-placeholder-secret"
            secrets.append(key)
        elif isinstance(value, str):
            flat[key] = value
        else:
            flat[key] = json.dumps(value)
    return flat, secrets
