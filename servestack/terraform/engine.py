"""The deploy loop's engine interface, driven by the Terraform CLI.

One working directory per candidate, `<work dir>/stacks/<stack name>/`, holding the rendered
`main.tf.json`, `terraform.tfvars.json` and its own local state, so every candidate's resources
live and die on their own. `up` is `terraform init` + `terraform apply -json`, `refresh` is
`apply -refresh-only`, `destroy` is `terraform destroy -json`. Each command's machine-readable
stream is parsed: `diagnostic` messages become the `Diagnostic`s the failure classifier reads
(the provider's own error text, e.g. a failed scaling activity's InsufficientInstanceCapacity),
`apply_errored` gives the failed addresses, `apply_start` the progress lines, `outputs` the
endpoint.

The deployment's secrets (one env file, servestack.secrets; the variable keeps its historical
name) reach Terraform only as TF_VAR_hf_token in the child's environment (an ephemeral variable
sent to write-only arguments): never on a command line, in a file, in the plan or in the state.
`overrides` are extra `*_override.tf.json` files written next to each configuration that
configures a provider; tests use one to point the AWS provider at a local API.

A multi-pool service's own stacks (servestack.service) live beside the pools' folders:
`up_shared` renders the key stack (servestack.terraform.shared.render_key) or the front
(`ServiceStack.front`, servestack.front.terraform) into `<work dir>/stacks/<name>/` and applies
it; the pools read the key stack's state, and the front the pools', as
`../<stack>/terraform.tfstate`, so a pool's folder must be named by its `Deployment.stack`
(the StackRef name is the same when the service's stacks are prefixed with its name).
`destroy_shared` destroys one and removes its folder once its state is empty.

`leftovers` reports what the state still holds; `strays` what still carries the candidate's tags,
through the cloud's read-only probes (configurations of data sources in
servestack/terraform/<cloud>.py, applied in a throwaway directory), which also read quotas,
the group's size and who the credentials are (`identity`); the cloud's `PROBES` and this
engine's own abilities make its `Capabilities`. `adopt` imports strays the sweep names with an
import id (`terraform import ADDRESS ID`) at the address the candidate's configuration gives
their type, when exactly one such address is not in the state yet; the next destroy removes
them. Every terraform command runs under servestack.engine.process (timeout, interrupt,
reaping).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from servestack.deployment.model import OUTPUT_GROUP_NAME, Deployment, ServiceStack
from servestack.engine import (
    Capabilities,
    Diagnostic,
    Identity,
    Leftover,
    OpResult,
    QuotaLimit,
    StackRef,
    parse_limits,
    sweep_failed,
)
from servestack.engine.process import run
from servestack.errors import UserError
from servestack.fsutil import write_atomic
from servestack.planner import Candidate
from servestack.terraform import TOKEN_VAR, render, renderer, tfvars
from servestack.terraform.shared import render_shared

INTERRUPT_GRACE_SECONDS = 120
_INIT_TURNS = threading.Lock()
# Any command without an attempt's own timeout (init, refresh, destroy, show, output, the
# probes): long enough for a slow destroy, short of hanging forever.
COMMAND_TIMEOUT_SECONDS = 3600
TEXT_TAIL = 20000
PLACEHOLDER_TOKEN = "not-needed-for-this-command"
INSTALL_HELP = ("the terraform CLI (1.11 or newer) is not installed or not on PATH; see "
                "https://developer.hashicorp.com/terraform/install")
# What the CLI can do for any cloud; the cloud's probes narrow it.
ABILITIES = Capabilities(quota_precheck=True, group_size=True, cloud_sweep=True,
                         adopt_strays=True, credentials_check=True)
# apply_start actions that touch nothing in the cloud
READ_ONLY_ACTIONS = ("read", "noop")


class TerraformMissing(UserError):
    pass


class Run:
    """One terraform command: its exit code, JSON events, other output, and whether the
    per-attempt timeout interrupted it."""

    def __init__(self) -> None:
        self.code = 0
        self.events: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self.timed_out = False

    def result(self) -> OpResult:
        diagnostics = [d for d in map(_diagnostic, self.events) if d is not None]
        failed = [_address(e) for e in self.events if e.get("type") == "apply_errored"]
        outputs: dict[str, Any] = {}
        for event in self.events:
            if event.get("type") == "outputs":
                outputs = {k: v.get("value") for k, v in (event.get("outputs") or {}).items()}
        text = "\n".join(self.lines)[-TEXT_TAIL:]
        started = [e for e in self.events if e.get("type") == "apply_start"
                   and (e.get("hook") or {}).get("action") not in READ_ONLY_ACTIONS]
        return OpResult(self.code == 0 and not self.timed_out, diagnostics, text, outputs,
                        self.timed_out, [f for f in failed if f], created_any=bool(started))


def _diagnostic(event: dict[str, Any]) -> Diagnostic | None:
    if event.get("type") != "diagnostic":
        return None
    body = event.get("diagnostic") or {}
    message = body.get("summary", "")
    if body.get("detail"):
        message = f"{message}: {body['detail']}"
    return Diagnostic(body.get("severity", "error"), message.strip(), body.get("address"))


def _address(event: dict[str, Any]) -> str:
    return ((event.get("hook") or {}).get("resource") or {}).get("addr", "")


class TerraformEngine:
    """Terraform CLI engine: one working directory and local state per candidate."""

    name = "terraform"

    def __init__(self, work_dir: str | os.PathLike, *, secrets: str | None = None,
                 plugin_dir: str | os.PathLike | None = None,
                 overrides: dict[str, dict] | None = None, env: dict[str, str] | None = None,
                 gcp_project: str | None = None, binary: str = "terraform",
                 interrupt_grace_s: float = INTERRUPT_GRACE_SECONDS) -> None:
        found = shutil.which(binary)
        if found is None:
            raise TerraformMissing(INSTALL_HELP)
        self.binary = found
        self.work_dir = Path(work_dir).resolve()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.secrets = secrets  # the env file of the deployment's secrets
        self.plugin_dir = Path(plugin_dir).resolve() if plugin_dir else None
        self.overrides = dict(overrides or {})
        self.env = dict(env or {})
        self.gcp_project = gcp_project
        self.grace_s = interrupt_grace_s

    # --- files and processes --------------------------------------------------------------------

    def stack_dir(self, stack: StackRef) -> Path:
        return self.work_dir / "stacks" / stack.name

    def _write(self, directory: Path, document: dict, variables: dict | None = None) -> None:
        write_atomic(directory / "main.tf.json", json.dumps(document, indent=2) + "\n")
        if variables is not None:
            write_atomic(directory / "terraform.tfvars.json",
                         json.dumps(variables, indent=2) + "\n")
        if "provider" not in document:  # the key stack: an override has nothing to amend
            return  # (Terraform refuses a provider override without a base configuration)
        for name, content in self.overrides.items():
            write_atomic(directory / name, json.dumps(content, indent=2) + "\n", 0o600)

    def _environment(self, token: str | None) -> dict[str, str]:
        env = {**os.environ, **self.env, "TF_IN_AUTOMATION": "1", "TF_INPUT": "0",
               "CHECKPOINT_DISABLE": "1"}
        env.pop(f"TF_VAR_{TOKEN_VAR}", None)
        if token is not None:
            env[f"TF_VAR_{TOKEN_VAR}"] = token
        return env

    def _token_for(self, deployment: Deployment | None, writing: bool) -> str | None:
        """The secrets for commands that write them; a placeholder where the (required)
        ephemeral variable is only evaluated, never written (refresh, destroy)."""
        if deployment is None or deployment.secret is None:
            return None
        return self.secrets if writing else (self.secrets or PLACEHOLDER_TOKEN)

    def _terraform(self, directory: Path, args: list[str], *, token: str | None = None,
                   timeout_s: float | None = None,
                   on_event: Callable[[dict], None] | None = None) -> Run:
        """One terraform command under the watchdog: SIGINT at the timeout (Terraform stops
        and saves its state), killed after the grace period."""
        result = Run()
        finished = run([self.binary, *args], cwd=directory, env=self._environment(token),
                       timeout_s=timeout_s or COMMAND_TIMEOUT_SECONDS, grace_s=self.grace_s,
                       on_stdout=lambda line: _take(result, line, on_event))
        result.code, result.timed_out = finished.code, finished.timed_out
        return result

    def _init(self, directory: Path, timeout_s: float | None = None) -> Run:
        args = ["init", "-input=false", "-no-color"]
        if self.plugin_dir:
            args.append(f"-plugin-dir={self.plugin_dir}")
        # A hedged deploy runs pools' commands in parallel threads. Their folders are their
        # own, but a TF_PLUGIN_CACHE_DIR the user set is shared, and Terraform does not
        # promise concurrent inits into one cache are safe (CLI docs, "Provider Plugin
        # Cache"): inits take turns; applies still run side by side.
        with _INIT_TURNS:
            return self._terraform(directory, args, timeout_s=timeout_s)

    def _command(self, directory: Path, args: list[str], deployment: Deployment | None, *,
                 writing: bool = False, timeout_s: float | None = None,
                 on_event: Callable[[dict], None] | None = None) -> OpResult:
        """init if needed, then `terraform <args> -json`; an init failure is the result."""
        if not (directory / ".terraform").is_dir():
            init = self._init(directory, timeout_s)
            if init.code != 0:
                return init.result()
        run = self._terraform(directory, [*args, "-input=false", "-json"],
                              token=self._token_for(deployment, writing), timeout_s=timeout_s,
                              on_event=on_event)
        return run.result()

    # --- the Engine interface ------------------------------------------------------------------

    def capabilities(self, cloud: str) -> Capabilities:
        return ABILITIES & Capabilities.of(renderer(cloud).PROBES)

    def up(self, stack: StackRef, deployment: Deployment, *, timeout_s: float,
           on_progress: Callable[[str], None] | None = None) -> OpResult:
        if deployment.secret is not None and not self.secrets:
            return OpResult(False, [Diagnostic(
                "error", f"No value for required variable {TOKEN_VAR}: the deployment reads "
                         f"its secrets from {deployment.secret.store} "
                         f"{deployment.secret.name}; pass them (--secret NAME)")])
        directory = self.stack_dir(stack)
        document = render(deployment)
        self._write(directory, document, self._variables(deployment, document))
        result = self._command(directory, ["apply", "-auto-approve"], deployment, writing=True,
                               timeout_s=timeout_s, on_event=_progress(on_progress))
        if result.ok and deployment.api_key is not None:
            # apply's `outputs` event leaves sensitive values out; `terraform output -json`
            # has them: the API key, for the readiness probe, in memory only
            result.outputs.update(self.outputs(stack, deployment))
        return result

    def outputs(self, stack: StackRef, deployment: Deployment) -> dict[str, Any]:
        """The stack's outputs, sensitive ones in plain text (the API key): for the caller's
        memory only (the readiness probe's header); `servestack endpoint` drops the key."""
        return self._outputs(stack)

    def _variables(self, deployment: Deployment, document: dict[str, Any]) -> dict[str, Any]:
        """The deployment's values, and --gcp-project for a configuration that declares a
        project variable the deployment leaves open."""
        values = tfvars(deployment)
        if "project" in document.get("variable", {}) and "project" not in values \
                and self.gcp_project:
            values["project"] = self.gcp_project
        return values

    def refresh(self, stack: StackRef, deployment: Deployment) -> OpResult:
        directory = self.stack_dir(stack)
        if not _has_state(directory):
            return OpResult(True, text="no state")
        return self._command(directory, ["apply", "-refresh-only", "-auto-approve"],
                             deployment)

    def destroy(self, stack: StackRef, deployment: Deployment) -> OpResult:
        directory = self.stack_dir(stack)
        if not _has_state(directory):
            return OpResult(True, text="no state")
        return self._command(directory, ["destroy", "-auto-approve"], deployment)

    def leftovers(self, stack: StackRef, deployment: Deployment) -> list[Leftover]:
        """The managed resources the candidate's state still holds."""
        return self._state_leftovers(self.stack_dir(stack), deployment)

    def strays(self, stack: StackRef, deployment: Deployment) -> list[Leftover]:
        probes = renderer(deployment.cloud)
        outputs = self.probe(f"{stack.name}-sweep", probes.sweep_config(deployment))
        if "error" in outputs:
            return [sweep_failed(outputs["error"])]
        return [Leftover(item["type"], item["name"], item["id"], "cloud")
                for item in probes.sweep_found(outputs)]

    def adopt(self, stack: StackRef, deployment: Deployment,
              leftovers: list[Leftover]) -> OpResult:
        """`terraform import` each stray at the one address of its type that the candidate's
        configuration has and its state lacks; a type with none or several such addresses (an
        ASG's instances: the configuration has no aws_instance) is left for the report."""
        directory = self.stack_dir(stack)
        if not (directory / "main.tf.json").is_file():
            return OpResult(False, text=f"{directory}: no configuration to import into")
        free = _free_addresses(json.loads((directory / "main.tf.json").read_text()),
                               {x.name for x in self._state_leftovers(directory, deployment)})
        imported, texts = 0, []
        for item in leftovers:
            addresses = free.get(item.type, [])
            if not item.adoptable or len(addresses) != 1:
                continue
            # `terraform import [options] ADDRESS ID` has no -json; options go first
            result = self._terraform(
                directory, ["import", "-input=false", "-no-color", addresses[0], item.id or ""],
                token=self._token_for(deployment, writing=False)).result()
            imported += result.ok
            texts += result.error_texts()
            if result.ok:
                free.pop(item.type)
        return OpResult(imported > 0, text="\n".join(texts)[-TEXT_TAIL:])

    def remove(self, stack: StackRef, deployment: Deployment) -> OpResult:
        directory = self.stack_dir(stack)
        if self._state_leftovers(directory, deployment):
            return OpResult(False, text=f"{directory}: the state still holds resources")
        shutil.rmtree(directory, ignore_errors=True)
        return OpResult(True)

    def quota_limits(self, cloud: str, candidates: list[Candidate]) -> list[QuotaLimit]:
        """The limits the cloud's probes read, one data-source configuration each."""
        probes = renderer(cloud)
        limits: list[QuotaLimit] = []
        for name, document in probes.quota_configs(probes.quota_wanted(candidates)):
            outputs = self.probe(f"quota-{cloud}-{name}", document)
            limits += parse_limits(cloud, probes.QUOTA_UNIT, outputs.get("limits") or {})
        return limits

    def group_size(self, stack: StackRef, deployment: Deployment) -> int | None:
        """VMs of the group that got capacity, read through data sources; None when the
        probe cannot be asked yet (no project or group name) or failed."""
        project = deployment.gcp_project or self.gcp_project
        name = self._outputs(stack).get(OUTPUT_GROUP_NAME)
        config = renderer(deployment.cloud).size_config(deployment, project, name)
        if config is None:
            return None
        running = self.probe(f"{stack.name}-size", config).get("running")
        return int(running) if isinstance(running, int | float) else None

    def _outputs(self, stack: StackRef) -> dict[str, Any]:
        return self._outputs_in(self.stack_dir(stack))

    def _outputs_in(self, directory: Path) -> dict[str, Any]:
        if not _has_state(directory):
            return {}
        run = self._terraform(directory, ["output", "-json", "-no-color"])
        try:
            values = json.loads("\n".join(run.lines)) if run.code == 0 and run.lines else \
                next(iter(run.events), {})
        except ValueError:
            return {}
        return {k: v.get("value") for k, v in values.items() if isinstance(v, dict)}

    # --- a multi-pool service's key and front stacks -------------------------------------------

    def shared_dir(self, stack: ServiceStack) -> Path:
        return self.work_dir / "stacks" / stack.name

    def up_shared(self, stack: ServiceStack, *, timeout_s: float) -> OpResult:
        """Render and apply the key or front stack; its outputs (the key stack's sensitive
        api_key too, read by `terraform output -json`) in the result, in memory only."""
        directory = self.shared_dir(stack)
        self._write(directory, render_shared(stack))
        result = self._command(directory, ["apply", "-auto-approve"], None,
                               timeout_s=timeout_s)
        if result.ok:
            result.outputs.update(self._outputs_in(directory))
        return result

    def shared_outputs(self, stack: ServiceStack) -> dict[str, Any]:
        return self._outputs_in(self.shared_dir(stack))

    def destroy_shared(self, stack: ServiceStack) -> OpResult:
        """Destroy the stack (its last configuration, as applied) and remove its folder once
        its state holds nothing; a folder without state is removed at once."""
        directory = self.shared_dir(stack)
        if _has_state(directory):
            result = self._command(directory, ["destroy", "-auto-approve"], None)
            if not result.ok:
                return result
            left = self._state_leftovers(directory, None)
            if left:
                return OpResult(False, text=f"{directory}: the state still holds "
                                            f"{', '.join(x.name for x in left)}")
        shutil.rmtree(directory, ignore_errors=True)
        return OpResult(True)

    # --- state and probes ------------------------------------------------------------------------

    def _state_leftovers(self, directory: Path, deployment: Deployment | None
                         ) -> list[Leftover]:
        if not _has_state(directory):
            return []
        run = self._terraform(directory, ["show", "-json", "-no-color"],
                              token=self._token_for(deployment, writing=False))
        state = next((e for e in run.events if "format_version" in e), None)
        if run.code != 0 or state is None:
            return [Leftover("terraform state", str(directory), None, "state")]
        return [Leftover(r["type"], r["address"], _resource_id(r), "state")
                for r in _managed(state.get("values") or {})]

    def identity(self, cloud: str, *, timeout_s: float) -> Identity:
        """Who the cloud's credentials are: its identity data sources, applied within
        `timeout_s` (init included)."""
        outputs = self.probe(f"identity-{cloud}", renderer(cloud).identity_config(),
                             timeout_s=timeout_s)
        if "error" in outputs:
            return Identity(cloud, False, error=outputs["error"])
        return Identity(cloud, True, who=str(outputs.get("identity", "")))

    def probe(self, name: str, document: dict, timeout_s: float | None = None
              ) -> dict[str, Any]:
        """Apply a configuration of data sources only in a throwaway directory; its outputs,
        or {"error": the first error, most specific first}."""
        # its own folder per call: the lanes of a hedged deploy probe (identity, quotas) at
        # the same time, and one call's cleanup must not delete another's files
        root = self.work_dir / "probes"
        root.mkdir(parents=True, exist_ok=True)
        directory = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))
        self._write(directory, document)
        try:
            result = self._command(directory, ["apply", "-auto-approve"], None,
                                   timeout_s=timeout_s)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        if result.timed_out:
            return {"error": f"no answer within {timeout_s or COMMAND_TIMEOUT_SECONDS:.0f} s"}
        if not result.ok:
            texts = result.error_texts() or ["failed without an error message"]
            return {"error": texts[0][-2000:]}
        return result.outputs


def _take(run: Run, line: str, on_event: Callable[[dict], None] | None) -> None:
    if line.startswith("{"):
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if isinstance(event, dict):
            run.events.append(event)
            if event.get("@level") == "error" and event.get("type") != "diagnostic":
                run.lines.append(event.get("@message", ""))
            if on_event:
                on_event(event)
            return
    run.lines.append(line)


def _progress(on_progress: Callable[[str], None] | None) -> Callable[[dict], None] | None:
    if on_progress is None:
        return None

    def on_event(event: dict) -> None:
        if event.get("type") == "apply_start":
            action = (event.get("hook") or {}).get("action", "apply")
            on_progress(f"{action} {_address(event)}")

    return on_event


def _has_state(directory: Path) -> bool:
    state = directory / "terraform.tfstate"
    return state.is_file() and state.stat().st_size > 0


def _managed(module: dict) -> list[dict]:
    root = module.get("root_module") or module
    found = [r for r in root.get("resources") or [] if r.get("mode") == "managed"]
    for child in root.get("child_modules") or []:
        found += _managed(child)
    return found


def _free_addresses(document: dict, in_state: set[str]) -> dict[str, list[str]]:
    """Resource type -> the configuration's addresses of that type not in the state (single
    instances only: a `count`/`for_each` address needs an index the sweep cannot give)."""
    free: dict[str, list[str]] = {}
    for kind, blocks in (document.get("resource") or {}).items():
        for name, body in blocks.items():
            address = f"{kind}.{name}"
            if address not in in_state and "count" not in body and "for_each" not in body:
                free.setdefault(kind, []).append(address)
    return free


def _resource_id(resource: dict) -> str | None:
    values = resource.get("values") or {}
    return values.get("id") or values.get("arn") or None
