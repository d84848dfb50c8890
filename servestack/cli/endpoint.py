"""`servestack endpoint SERVICE`: where the live service answers, and how to get its API key.

It reads the live stack's outputs through the engine, as the deploy loop does (`--engine`,
`--state-dir` and `--backend` as for `deploy` and `destroy`), and prints the endpoint, the
cloud CLI command that reads the key from the secret-store entry the `api_key_secret` output
names, and an example request with `Authorization: Bearer $KEY`. It never prints the key:
the engines return it with the other outputs (the probe needs it), and it is dropped here
before anything is shown. `--json` prints the same as one object.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from servestack.cli import options
from servestack.cli.options import StateRequest
from servestack.deployment.model import (
    OUTPUT_API_KEY,
    OUTPUT_API_KEY_REF,
    OUTPUT_ENDPOINT,
    Deployment,
)
from servestack.engine.interface import StackRef
from servestack.errors import UserError

# The ids the stacks export for the key's entry: GCP's secret id path, Azure's ARM id of the
# secret (Pulumi's id, Terraform's resource_versionless_id) or its vault URL.
GCP_SECRET = re.compile(r"projects/(?P<project>[^/]+)/(?:locations/(?P<location>[^/]+)/)?"
                        r"secrets/(?P<name>[^/]+)")
AZURE_SECRET = re.compile(r"/vaults/(?P<vault>[^/]+)/secrets/(?P<name>[^/]+)|"
                          r"https://(?P<host>[^./]+)\.vault\.azure\.net/secrets/(?P<url>[^/?]+)")


@dataclass(frozen=True)
class EndpointRequest:
    service: str | None
    state: StateRequest
    json: bool = False


def register(sub) -> None:
    parser = sub.add_parser("endpoint", help="the live service's URL and how to get its API key",
                            description=__doc__.split("\n\n")[1])
    parser.add_argument("service", nargs="?", type=options.safe_name,
                        help="service name (default: the only one)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    options.add_state_options(parser)
    parser.set_defaults(handler=lambda args: run_endpoint(EndpointRequest(
        args.service, options.state_request(args), args.json)))


def run_endpoint(request: EndpointRequest) -> int:
    from servestack.cli import deploy as deploy_cli
    from servestack.deploy.journal import Journal

    service = deploy_cli._service(request.service, request.state.state_dir)
    if deploy_cli.service_journal_path(request.state.state_dir, service).exists():
        return _service_endpoint(request, service)
    journal = Journal.open(request.state.state_dir, service)
    live = journal.live
    if live is None or live.stack not in journal.stacks:
        raise UserError(f"{service} is not live (`servestack status {service}` tells what the "
                        "last deploy did)")
    deployment = journal.stacks[live.stack].deployment
    engine = deploy_cli.make_engine(request.state, service, deployment.gcp_project)
    outputs = engine.outputs(StackRef(deployment.service, live.candidate, live.stack),
                             deployment)
    outputs.pop(OUTPUT_API_KEY, None)  # the key itself is never shown
    info = endpoint_info(deployment, outputs, fallback=live.endpoint)
    sys.stdout.write(json.dumps(info, indent=2) + "\n" if request.json else endpoint_text(info))
    return 0


def _service_endpoint(request: EndpointRequest, service: str) -> int:
    """A service over several pools: the front's URL (from the front stack's outputs) and
    the shared key's command (the key stack's key, kept in each pool's secret store: read
    from the first kept pool's outputs)."""
    from servestack.cli import deploy as deploy_cli
    from servestack.deploy.service_journal import PoolState

    journal, pools = deploy_cli.open_service(request.state.state_dir, service)
    kept = [p for p in journal.in_state(PoolState.KEPT) if p.key in pools]
    deployments = [e.deployment for p in kept for e in pools[p.key].stacks.values()
                   if e.name == p.stack]
    if not deployments or journal.front is None or journal.front.state != "up":
        raise UserError(f"{service} is not live behind its front (`servestack status "
                        f"{service}` tells what the last deploy did)")
    parts = deploy_cli.recorded_parts(journal)
    engine = deploy_cli.make_engine(request.state, service, deployments[0].gcp_project)
    front = engine.shared_outputs(parts.front(deployments))
    first = deployments[0]
    outputs = engine.outputs(StackRef(first.service, first.candidate_id, first.stack), first)
    outputs.pop(OUTPUT_API_KEY, None)  # the key itself is never shown
    front.pop(OUTPUT_API_KEY, None)
    info = endpoint_info(first, {**outputs, OUTPUT_ENDPOINT: front.get(OUTPUT_ENDPOINT)},
                         fallback=journal.front.endpoint)
    info.update(candidate=None, cloud=None, region=None, front=journal.front.name,
                pools=[{"cloud": p.cloud, "region": p.region, "replicas": p.share,
                        "endpoint": p.endpoint} for p in kept])
    sys.stdout.write(json.dumps(info, indent=2) + "\n" if request.json else endpoint_text(info))
    return 0


def endpoint_info(d: Deployment, outputs: dict[str, Any], fallback: str | None = None) -> dict:
    """What `endpoint` prints, from the stack's outputs (the key already dropped)."""
    endpoint = str(outputs.get(OUTPUT_ENDPOINT) or fallback or "")
    ref = outputs.get(OUTPUT_API_KEY_REF)
    command = key_command(d, str(ref)) if d.api_key is not None and ref else None
    url = endpoint.rstrip("/") + "/v1/models"
    auth = ' -H "Authorization: Bearer $KEY"' if command else ""
    return {"service": d.service, "candidate": d.candidate_id, "cloud": d.cloud,
            "region": d.region, "endpoint": endpoint,
            "api_key": {"secret": str(ref), "command": command} if command else None,
            "example": (f"KEY=$({command})\n" if command else "") + f"curl{auth} {url}",
            "open": open_lines(d)}


def key_command(d: Deployment, ref: str) -> str:
    """The cloud CLI command that prints the key kept in the entry `ref` names, by the kind
    of store the deployment keeps it in."""
    store = d.api_key_secret.store
    if store not in KEY_COMMANDS:
        raise UserError(f"servestack endpoint does not know the secret store {store!r}")
    return KEY_COMMANDS[store](d, ref)


def _aws_command(d: Deployment, ref: str) -> str:
    return shlex.join(["aws", "ssm", "get-parameter", "--region", d.region, "--name", ref,
                       "--with-decryption", "--query", "Parameter.Value", "--output", "text"])


def _gcloud_command(d: Deployment, ref: str) -> str:
    found = GCP_SECRET.fullmatch(ref)
    name, location = (found["name"], found["location"]) if found else (ref, None)
    project = found["project"] if found else d.gcp_project
    words = ["gcloud", "secrets", "versions", "access", "latest", f"--secret={name}"]
    words += [f"--project={project}"] if project else []
    words += [f"--location={location}"] if location else []
    return shlex.join(words)


def _az_command(d: Deployment, ref: str) -> str:
    found = AZURE_SECRET.search(ref)
    if found is None:
        raise UserError(f"the stack's {OUTPUT_API_KEY_REF} output ({ref}) names no Key Vault "
                        "secret")
    vault = found["vault"] or found["host"]
    name = found["name"] or found["url"] or d.api_key_secret.name
    return shlex.join(["az", "keyvault", "secret", "show", "--vault-name", vault,
                       "--name", name, "--query", "value", "-o", "tsv"])


# The command per kind of store (servestack.deployment.model.SecretRef.store).
KEY_COMMANDS: dict[str, Callable[[Deployment, str], str]] = {
    "ssm": _aws_command, "secret-manager": _gcloud_command, "key-vault": _az_command}


def open_lines(d: Deployment) -> list[str]:
    from servestack.report import security_notes

    return security_notes(d)


def endpoint_text(info: dict) -> str:
    where = info["candidate"] or f"front {info.get('front')} over " + ", ".join(
        f"{p['cloud']} {p['region']}" for p in info.get("pools", []))
    lines = [f"Service {info['service']}: {info['endpoint']} ({where})"]
    if info["api_key"]:
        lines += ["API key (kept in the cloud's secret store, never printed here):",
                  f"  KEY=$({info['api_key']['command']})"]
    else:
        lines.append("No API key: the endpoint answers anyone it lets in.")
    lines += ["Example:", *(f"  {line}" for line in info["example"].splitlines()[-1:])]
    lines += [f"note: {line}" for line in info["open"]]
    return "\n".join(lines) + "\n"
