"""The deploy loop's engine (servestack.engine.Engine) on the Pulumi Automation API.

One stack per candidate, named `<service>-<candidate id>` (servestack.engine.stack_name). The
loop calls `up`, then on failure `refresh`, `destroy`, `leftovers` (what is still in the stack's
state), `strays` (what still carries the candidate's tags in the cloud), `adopt` (import such
strays into the stack so a second destroy removes them) and `remove`. Each call returns an
`OpResult` with the engine's diagnostics, so failures are classified from the provider's own
error events, not from a regex over an exception's text.

`PulumiEngine` runs the real program (servestack.pulumi.program.main) as an inline program:
the stack config is the same `servestack:deployment` that `servestack generate` writes into
stack files, so `pulumi up -s <stack>` and `servestack deploy` build the same resources, while
the deploy needs no Python project on disk and no separate language host. State goes to
PULUMI_BACKEND_URL, or to a local file backend under the state dir. The deployment's secrets
(one env file, servestack.secrets) are handed to the inline program in memory, where it wraps
them in `pulumi.Output.secret`: they never go through `pulumi config set` (whose argv any local
user can read), a stack file or the environment of the CLI. The Pulumi CLI must be
installed: the Automation API drives it; without it you get a clear message, not a traceback.
Every CLI command runs under servestack.engine.process (timeout, interrupt, reaping).

A service over several pools has two more stacks in the same project and backend
(`up_shared`, `shared_outputs`, `destroy_shared`): its key stack and its front stack, the same
program in another `servestack:role`. Being in one project is what lets a pool's program read
the key stack, and the front's read the pools, by StackReference.

The read-only probes (sweep, group size, quota, identity) are programs of the cloud's
component module (components/<cloud>.py, its `PROBES`), run in throwaway stacks; the cloud's
probes and this engine's own abilities make its `Capabilities`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import import_module
from pathlib import Path
from types import ModuleType
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
    stack_name,
    sweep_failed,
)
from servestack.engine.process import run
from servestack.errors import UserError
from servestack.planner import Candidate

PROJECT = "servestack"
INTERRUPT_GRACE_SECONDS = 120
# Any single CLI command without an attempt's own timeout (refresh, destroy, import, export,
# config, the probes): long enough for a slow destroy, short of hanging forever.
COMMAND_TIMEOUT_SECONDS = 3600
TEXT_TAIL = 20000
# A hedged deploy drives several stacks from parallel threads. Their `up`s name their stack
# (--stack) and may run side by side, but selecting or creating a stack rewrites the
# workspace's shared files (Pulumi.yaml, the current-stack pointer; pulumi/pulumi#8186): those
# steps take turns.
_SELECTING = threading.RLock()
INSTALL_HELP = (
    "the Pulumi CLI is not installed or not on PATH; `servestack deploy` drives it through the "
    "Pulumi Automation API. Install it with `curl -fsSL https://get.pulumi.com | sh` (Linux, "
    "macOS), `brew install pulumi/tap/pulumi` or `choco install pulumi` (Windows), see "
    "https://www.pulumi.com/docs/iac/download-install/, then check that `pulumi version` "
    "works. Reviewing a stack needs no CLI: `servestack preview STACK --offline`.")
# Everything the Automation API can do, for any cloud; the cloud's probes narrow it.
ABILITIES = Capabilities(quota_precheck=True, group_size=True, cloud_sweep=True,
                         adopt_strays=True, credentials_check=True)
# Operations on a resource that may create something in the cloud
CREATING_OPS = ("create", "replace", "create-replacement")


class PulumiMissing(UserError):
    pass


class Deadline:
    """One operation's time budget, shared by the CLI commands it runs."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds
        self.fired = False

    def left(self) -> float:
        return max(self.end - time.monotonic(), 0.0)


def _watched_command_class():
    from pulumi.automation import CommandResult, PulumiCommand
    from pulumi.automation.errors import create_command_error

    class WatchedCommand(PulumiCommand):
        """The Pulumi CLI, every command under the watchdog: the current `deadline` (an
        attempt's timeout) or COMMAND_TIMEOUT_SECONDS, SIGINT then kill after the grace."""

        def __init__(self, root: str | None = None,
                     grace_s: float = INTERRUPT_GRACE_SECONDS) -> None:
            super().__init__(root=root, skip_version_check=False)
            self.grace_s = grace_s
            self.current: Deadline | None = None

        @contextmanager
        def deadline(self, seconds: float | None) -> Iterator[Deadline]:
            """Commands run inside share `seconds`; `fired` tells whether it ran out."""
            self.current = Deadline(seconds or COMMAND_TIMEOUT_SECONDS)
            try:
                yield self.current
            finally:
                self.current = None

        def run(self, args, cwd, additional_env, on_output=None, on_error=None) -> CommandResult:
            args = list(args)
            cut = args.index("--") if "--" in args else len(args)
            if "--non-interactive" not in args[:cut]:
                args.insert(0, "--non-interactive")
            env = {**os.environ, **additional_env, "PULUMI_AUTOMATION_API": "true"}
            out: list[str] = []
            err: list[str] = []
            deadline = self.current or Deadline(COMMAND_TIMEOUT_SECONDS)
            finished = run([self.command, *args], cwd=cwd, env=env,
                           timeout_s=deadline.left(), grace_s=self.grace_s,
                           on_stdout=_collect(out, on_output),
                           on_stderr=_collect(err, on_error))
            deadline.fired = deadline.fired or finished.timed_out
            result = CommandResult(stdout="\n".join(out), stderr="\n".join(err),
                                   code=finished.code)
            if finished.code != 0:
                raise create_command_error(result)
            return result

    return WatchedCommand


def _collect(lines: list[str], callback: Callable[[str], None] | None) -> Callable[[str], None]:
    def take(line: str) -> None:
        if callback:
            callback(line)
        lines.append(line)

    return take


def pulumi_command(root: str | None = None, grace_s: float = INTERRUPT_GRACE_SECONDS):
    """The CLI wrapper, or PulumiMissing (exit 2, one line, how to install it)."""
    try:
        return _watched_command_class()(root, grace_s)
    except ImportError as exc:
        raise PulumiMissing(f"the Pulumi SDK is missing: pip install 'servestack[pulumi]' "
                            f"({exc})") from None
    except FileNotFoundError:
        raise PulumiMissing(INSTALL_HELP) from None
    except (subprocess.CalledProcessError, OSError) as exc:
        raise PulumiMissing(f"`pulumi version` failed ({exc}); {INSTALL_HELP}") from None


def probes(cloud: str) -> ModuleType:
    """The cloud's component module: its Service, and the read-only probe programs."""
    return import_module(f"servestack.components.{cloud}")


class _Events:
    """on_event callback: keeps error/warning diagnostics and failed URNs, whether a cloud
    resource's create began, reports progress."""

    def __init__(self, on_progress: Callable[[str], None] | None = None) -> None:
        self.diagnostics: list[Diagnostic] = []
        self.failed: list[str] = []
        self.created = False
        self.on_progress = on_progress

    def __call__(self, event) -> None:
        diagnostic = event.diagnostic_event
        if diagnostic is not None and diagnostic.severity in ("error", "warning", "info#err"):
            self.diagnostics.append(Diagnostic(diagnostic.severity, diagnostic.message.strip(),
                                               diagnostic.urn))
        failed = event.res_op_failed_event
        if failed is not None:
            self.failed.append(failed.metadata.urn)
        pre = event.resource_pre_event
        if pre is not None and not pre.planning:
            meta = pre.metadata
            # a component has no provider, and a provider resource is no cloud resource
            self.created = self.created or (
                meta.op.value in CREATING_OPS and bool(meta.provider)
                and not meta.type.startswith("pulumi:providers:"))
            if self.on_progress:
                self.on_progress(f"{meta.op.value} {meta.type} {meta.urn.rsplit('::', 1)[-1]}")


class PulumiEngine:
    """Automation API engine: one stack per candidate, inline program, configurable backend."""

    name = "pulumi"

    def __init__(self, work_dir: str | os.PathLike, backend_url: str | None = None, *,
                 secrets: str | None = None, command=None, gcp_project: str | None = None,
                 interrupt_grace_s: float = INTERRUPT_GRACE_SECONDS) -> None:
        self.work_dir = Path(work_dir).resolve()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.backend_url = backend_url or os.environ.get("PULUMI_BACKEND_URL") or \
            f"file://{self.work_dir / 'state'}"
        self._check_secrets_setup()
        self.command = command or pulumi_command(grace_s=interrupt_grace_s)
        self.secrets = secrets  # the env file of the deployment's secrets
        self.gcp_project = gcp_project
        self._snapshots: dict[str, list[dict]] = {}

    def _check_secrets_setup(self) -> None:
        if not self.backend_url.startswith("file://"):
            return
        Path(self.backend_url.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
        if "PULUMI_CONFIG_PASSPHRASE" not in os.environ and \
                "PULUMI_CONFIG_PASSPHRASE_FILE" not in os.environ:
            raise UserError("the local Pulumi backend encrypts stack secrets with a passphrase: "
                            "set PULUMI_CONFIG_PASSPHRASE (or PULUMI_CONFIG_PASSPHRASE_FILE), "
                            "or point PULUMI_BACKEND_URL at another backend")

    # --- plumbing -----------------------------------------------------------------------------

    def _workspace(self, program):
        from pulumi import automation as auto

        settings = auto.ProjectSettings(name=PROJECT, runtime="python",
                                        backend=auto.ProjectBackend(url=self.backend_url))
        return auto.LocalWorkspace(work_dir=str(self.work_dir), program=program,
                                   project_settings=settings, pulumi_command=self.command,
                                   env_vars={"PULUMI_SKIP_UPDATE_CHECK": "true"})

    def _stack(self, name: str, config: dict[str, str], program: Callable[[], None]):
        """Select (or create) the stack and set its whole config (never a secret)."""
        from pulumi import automation as auto

        with _SELECTING:
            stack = auto.Stack.create_or_select(name, self._workspace(program))
            stack.set_all_config({k: auto.ConfigValue(v) for k, v in config.items()})
        return stack

    def _select(self, name: str):
        from pulumi import automation as auto

        with _SELECTING:
            return auto.Stack.select(name, self._workspace(None))

    def _candidate(self, stack: StackRef, deployment: Deployment):
        """The candidate's stack running servestack's program with the secrets in memory."""
        from servestack.pulumi.program import main
        from servestack.pulumi.stackfile import provider_config

        config = {**provider_config(deployment),
                  "servestack:deployment": json.dumps(deployment.to_config())}
        secrets = self.secrets if deployment.secret else None
        return self._stack(stack.name, config, lambda: main(secrets))

    def _run(self, operation: Callable, events: _Events, timeout_s: float | None = None
             ) -> OpResult:
        from pulumi.automation.errors import CommandError

        with self.command.deadline(timeout_s) as deadline:
            try:
                result = operation(events)
            except CommandError as exc:
                return OpResult(False, events.diagnostics, str(exc)[-TEXT_TAIL:],
                                timed_out=deadline.fired, failed_urns=events.failed,
                                created_any=events.created or deadline.fired)
        outputs = {k: v.value for k, v in (getattr(result, "outputs", None) or {}).items()}
        return OpResult(True, events.diagnostics, (result.stdout or "")[-TEXT_TAIL:], outputs)

    # --- the Engine interface ------------------------------------------------------------------

    def capabilities(self, cloud: str) -> Capabilities:
        return ABILITIES & Capabilities.of(probes(cloud).PROBES)

    def up(self, stack: StackRef, deployment: Deployment, *, timeout_s: float,
           on_progress: Callable[[str], None] | None = None) -> OpResult:
        handle = self._candidate(stack, deployment)
        # The outputs come back in plain text (the Automation API reads them with
        # --show-secrets after `up`): the API key the readiness probe sends, in memory only.
        # `up` itself prints no outputs and no secrets in its summary.
        return self._run(lambda ev: handle.up(on_event=ev, color="never", show_secrets=False,
                                              suppress_outputs=True),
                         _Events(on_progress), timeout_s)

    def outputs(self, stack: StackRef, deployment: Deployment) -> dict[str, Any]:
        """The stack's outputs, secrets in plain text (the API key): for the caller's memory
        only (the readiness probe's header); `servestack endpoint` drops the key."""
        return self._outputs_of(stack.name)

    def _outputs_of(self, name: str) -> dict[str, Any]:
        from pulumi.automation.errors import CommandError

        try:  # select, not create: reading outputs creates no stack and writes no config
            found = self._select(name).outputs()
        except CommandError:  # StackNotFoundError among them
            return {}
        return {k: v.value for k, v in found.items()}

    def refresh(self, stack: StackRef, deployment: Deployment) -> OpResult:
        handle = self._candidate(stack, deployment)
        result = self._run(lambda ev: handle.refresh(on_event=ev, color="never"), _Events())
        if not result.ok and "pending" in result.text.lower():
            # an interrupted create: remember it, then drop it from the state so destroy can run
            self._snapshots[stack.name] = self._state(handle)
            result = self._run(lambda ev: handle.refresh(on_event=ev, color="never",
                                                         clear_pending_creates=True), _Events())
        self._snapshots.setdefault(stack.name, self._state(handle))
        return result

    def destroy(self, stack: StackRef, deployment: Deployment) -> OpResult:
        handle = self._candidate(stack, deployment)
        return self._run(lambda ev: handle.destroy(on_event=ev, color="never"), _Events())

    def remove(self, stack: StackRef, deployment: Deployment) -> OpResult:
        return self._remove(stack.name)

    def _remove(self, name: str) -> OpResult:
        from pulumi.automation.errors import CommandError, StackNotFoundError

        workspace = self._workspace(None)
        try:
            with _SELECTING:
                workspace.remove_stack(name)
        except StackNotFoundError:
            return OpResult(True, text="no such stack")
        except CommandError as exc:
            return OpResult(False, text=str(exc)[-TEXT_TAIL:])
        self._snapshots.pop(name, None)
        return OpResult(True)

    def leftovers(self, stack: StackRef, deployment: Deployment) -> list[Leftover]:
        handle = self._candidate(stack, deployment)
        return [_leftover_from_state(r) for r in self._state(handle)]

    def strays(self, stack: StackRef, deployment: Deployment) -> list[Leftover]:
        """What the cloud's sweep finds by tags; it may use the state as it was before the
        cleanup (Azure: the resource groups the stack had)."""
        from servestack.pulumi.stackfile import provider_config

        snapshot = self._snapshots.get(stack.name, [])
        program = probes(deployment.cloud).sweep_program(deployment, snapshot)
        if program is None:  # the state named nothing the sweep could look for
            return []
        outputs = self._probe(f"{stack.name}-sweep", provider_config(deployment), program)
        if "error" in outputs:
            return [sweep_failed(outputs["error"])]
        return [Leftover(item["type"], item["name"], item.get("id"), "cloud")
                for item in outputs.get("found") or []]

    def adopt(self, stack: StackRef, deployment: Deployment,
              leftovers: list[Leftover]) -> OpResult:
        from pulumi.automation.errors import CommandError

        handle = self._candidate(stack, deployment)
        resources = [{"type": item.type, "name": _import_name(item), "id": item.id}
                     for item in leftovers if item.adoptable]
        if not resources:
            return OpResult(False, text="nothing adoptable")
        try:
            handle.import_resources(resources=resources, protect=False, generate_code=False)
        except CommandError as exc:
            return OpResult(False, text=str(exc)[-TEXT_TAIL:])
        return OpResult(True)

    def quota_limits(self, cloud: str, candidates: list[Candidate]) -> list[QuotaLimit]:
        """The limits the cloud's probe reads (AWS Service Quotas in vCPUs, GCP Cloud Quotas
        in GPUs), through one no-resource stack."""
        module = probes(cloud)
        wanted = module.quota_wanted(candidates)
        if not wanted:
            return []
        config, program = module.quota_probe(wanted, self.gcp_project)
        outputs = self._probe(f"quota-{cloud}", config, program)
        return parse_limits(cloud, module.QUOTA_UNIT, outputs.get("limits") or {})

    def group_size(self, stack: StackRef, deployment: Deployment) -> int | None:
        """VMs of the group that got capacity, read through a no-resource stack; None when
        the probe could not tell (e.g. the group has no name in the outputs yet)."""
        from servestack.pulumi.stackfile import provider_config

        outputs = self._candidate(stack, deployment).outputs()
        group = outputs.get(OUTPUT_GROUP_NAME)
        name = group.value if group is not None else None
        program = probes(deployment.cloud).group_program(deployment, name)
        found = self._probe(f"{stack.name}-size", provider_config(deployment), program)
        running = found.get("running")
        return int(running) if isinstance(running, int | float) else None

    def identity(self, cloud: str, *, timeout_s: float) -> Identity:
        """Who the cloud's credentials are: the cloud's identity invoke in a throwaway stack,
        every CLI command of it within `timeout_s`."""
        config, program = probes(cloud).identity_probe()
        with self.command.deadline(timeout_s) as deadline:
            outputs = self._probe(f"identity-{cloud}", config, program)
        if deadline.fired:
            return Identity(cloud, False, error=f"no answer within {timeout_s:.0f} s")
        if "error" in outputs:
            return Identity(cloud, False, error=outputs["error"])
        return Identity(cloud, True, who=str(outputs.get("identity", "")))

    # --- a multi-pool service's own stacks: the key and the front -----------------------------

    def up_shared(self, stack: ServiceStack, *, timeout_s: float) -> OpResult:
        """Up the key or front stack; its outputs (the key in plain text) in memory only."""
        handle = self._shared(stack)
        return self._run(lambda ev: handle.up(on_event=ev, color="never", show_secrets=False,
                                              suppress_outputs=True),
                         _Events(), timeout_s)

    def shared_outputs(self, stack: ServiceStack) -> dict[str, Any]:
        return self._outputs_of(stack.name)

    def destroy_shared(self, stack: ServiceStack) -> OpResult:
        """Destroy the stack, then remove it (and its config) from the backend."""
        from pulumi.automation.errors import CommandError

        try:  # nothing to destroy is no failure: a deploy may end before the front
            self._select(stack.name)
        except CommandError:
            return OpResult(True, text="no such stack")
        handle = self._shared(stack)
        result = self._run(lambda ev: handle.destroy(on_event=ev, color="never"), _Events())
        if not result.ok:
            return result
        return self._remove(stack.name)

    def _shared(self, stack: ServiceStack):
        """The key or front stack, running the program in that role with its whole config."""
        from servestack.front.model import FrontPlan
        from servestack.pulumi.program import main
        from servestack.pulumi.stackfile import flat_config, front_stack_config, key_stack_config

        if stack.kind == "key":
            config = key_stack_config(stack.service)
        elif stack.kind == "front" and isinstance(stack.front, FrontPlan):
            config = front_stack_config(stack.front)
        else:
            raise ValueError(f"shared stack {stack.name}: kind {stack.kind!r} without its "
                             "plan (key, or front with a FrontPlan)")
        return self._stack(stack.name, flat_config(config), lambda: main(None))

    # --- helpers ------------------------------------------------------------------------------

    def _state(self, handle) -> list[dict]:
        from pulumi.automation.errors import CommandError

        try:
            exported = handle.export_stack().deployment or {}
        except CommandError:
            return []
        pending = [dict(op.get("resource") or {}, pending=True)
                   for op in exported.get("pending_operations") or []]
        return [r for r in (exported.get("resources") or []) + pending if _in_cloud(r)]

    def _probe(self, name: str, config: dict[str, str], program: Callable[[], None]
               ) -> dict[str, Any]:
        """Run a program that only reads (invokes) in a throwaway stack; return its outputs."""
        from pulumi.automation.errors import CommandError

        handle = self._stack(stack_name(PROJECT, name), config, program)
        events = _Events()
        try:
            result = handle.up(color="never", on_event=events)
            return {k: v.value for k, v in result.outputs.items()}
        except CommandError as exc:
            errors = [d.message for d in events.diagnostics if d.severity == "error"]
            return {"error": (errors or [str(exc)])[0][-2000:]}
        finally:
            try:
                handle.workspace.remove_stack(handle.name, force=True)  # no cloud resources
            except CommandError:
                pass


def _in_cloud(resource: dict) -> bool:
    """A custom resource other than a provider: what exists in the cloud. The stack itself
    and servestack's components are logical and never block a cleanup (a failed `up` without
    credentials leaves the components in the state)."""
    return bool(resource.get("custom")) and \
        not str(resource.get("type", "")).startswith("pulumi:providers:")


def _leftover_from_state(resource: dict) -> Leftover:
    urn = str(resource.get("urn", ""))
    return Leftover(str(resource.get("type", "?")), urn.rsplit("::", 1)[-1] or "?",
                    resource.get("id") or None, "pending" if resource.get("pending") else "state")


def _import_name(item: Leftover) -> str:
    return re.sub(r"[^A-Za-z0-9-]+", "-", f"stray-{item.name}")[:60].strip("-")
