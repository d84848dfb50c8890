"""The deployment's secrets: which names are secret, and the env file that carries their values.

A name is secret when the spec lists it under `secrets:`, when `--secret` gives it, or when an
`envs` entry says it is a credential (HF_TOKEN, *_API_KEY, *PASSWORD*, WANDB_KEY, GITHUB_PAT,
..., or a value that is a URL with a password: SkyPilot's examples keep HF_TOKEN under `envs`).
Values come, highest first, from `--secret NAME=VALUE` / `--env NAME=VALUE`, the spec's
`secrets:` then `envs:` values, then the deployer's environment
(`--secret NAME` / `--env NAME` without a value, and a name with no value in the spec, read it
from there, as SkyPilot does).

All the secrets of a deployment travel as ONE env file (`NAME=<shell-quoted value>` lines) in
the one secret-store entry the deployment already has (`Deployment.secret`: SSM SecureString,
Secret Manager secret, Key Vault secret). The engines hand it over without a file or an argv:
Pulumi's inline program gets it in memory and wraps it in `pulumi.Output.secret` (stack config
key `servestack:hfToken` for a hand-run `pulumi up`), Terraform through TF_VAR_hf_token, an
ephemeral variable sent to write-only arguments. The key and the variable keep their historical
names; they carry the env file, not only the Hugging Face token. On the VM, servestack-secret
fetches it, checks every line, and writes /etc/servestack/secret.env (0600, root), which the
vLLM unit sources.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

from servestack.errors import UserError

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Names that say their value is a credential. PASSWORD, PASSWD, API_KEY, ACCESS_KEY and
# PRIVATE_KEY anywhere (DB_PASSWORD, AWS_SECRET_ACCESS_KEY); SECRET as a word (CLIENT_SECRET,
# SECRET_KEY, not SECRETS_DIR); TOKEN, KEY, PAT, PASS and CREDENTIAL(S) as the last word (HF_TOKEN,
# WANDB_KEY, GITHUB_PAT, DB_PASS, AUTH_CREDENTIALS). Not MAX_TOKENS, TOKENIZERS_PARALLELISM,
# TOKEN_BUDGET, KEY_PREFIX or PASS_THROUGH: a plain env taken for a secret loses its place in
# the probe's $NAME substitution, and a Terraform user must hand its value over at apply.
CREDENTIAL_NAME = re.compile(
    r"PASSWORD|PASSWD|API_?KEY|ACCESS_KEY|PRIVATE_KEY|(?:^|_)SECRET(?:_|$)"
    r"|(?:^|_)(?:TOKEN|KEY|PAT|PASS|CREDENTIALS?)$", re.IGNORECASE)
# A URL with a password in it (postgres://user:password@host/db).
URL_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@\s:]*:[^/@\s]+@")
# An SSM standard parameter holds at most 4 KB, the smallest of the three stores (Key Vault
# 25 KB, Secret Manager 64 KiB): https://docs.aws.amazon.com/systems-manager/latest/userguide/
# parameter-store-advanced-parameters.html
STORE_LIMIT = 4096


def is_credential_name(name: str) -> bool:
    """Whether an `envs` name says its value is a credential (kept out of the spec's envs)."""
    return CREDENTIAL_NAME.search(name) is not None


def is_credential(name: str, value: object) -> bool:
    """Whether an `envs` entry is a credential: by its name, or a URL with a password."""
    return is_credential_name(name) or \
        (isinstance(value, str) and URL_PASSWORD.match(value) is not None)


def resolve(name: str, cli: list[Mapping[str, str | None]], spec: list[Mapping[str, object]],
            environ: Mapping[str, str]) -> str | None:
    """The value of `name`: the first command-line layer that gives it (no value there means
    the deployer's environment), else the first spec layer with a value, else the environment.
    """
    for layer in cli:
        if name in layer:
            value = layer[name]
            return value if value is not None else environ.get(name)
    for given in spec:
        if given.get(name) is not None:
            return str(given[name])
    return environ.get(name)


def env_file(values: Mapping[str, str]) -> str:
    """The secrets as `NAME=<shell-quoted value>` lines, sorted by name: what the secret store
    holds and the VM sources. Raises UserError (naming names, never values) when it cannot."""
    lines = []
    for name in sorted(values):
        if not ENV_NAME.fullmatch(name):
            raise UserError(f"secret {name!r} is not a valid environment variable name")
        if "\0" in values[name]:
            raise UserError(f"secret {name}: the value holds a NUL byte")
        lines.append(f"{name}={shlex.quote(values[name])}")
    text = "".join(f"{line}\n" for line in lines)
    if len(text.encode()) > STORE_LIMIT:
        raise UserError(f"the secrets ({', '.join(sorted(values))}) take "
                        f"{len(text.encode())} bytes, over the {STORE_LIMIT}-byte limit of an "
                        "SSM parameter; keep large credentials elsewhere")
    return text

