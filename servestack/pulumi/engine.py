"""The engine the deploy loop drives: a small interface, and its Pulumi Automation API version.

One stack per candidate, named `<service>-<candidate id>` (see `stack_name`). The loop calls
`up`, then on failure `refresh`, `destroy`, `leftovers` (what is still in the stack's state, and
what still carries the candidate's tags in the cloud), `adopt` (import such strays into the
stack so a second destroy removes them) and `remove`. Each call returns an `OpResult` with the
engine's diagnostics, so failures are classified from the provider's own error events, not from
a regex over an exception's text.

`PulumiEngine` runs the real program (servestack.pulumi.program.main) as an inline program:
the stack config is the same `servestack:deployment` that `servestack generate` writes into
stack files, so `pulumi up -s <stack>` and `servestack deploy` build the same resources, while
the deploy needs no Python project on disk and no separate language host. State goes to
PULUMI_BACKEND_URL, or to a local file backend under the state dir. The Pulumi CLI must be
installed: the Automation API drives it; without it you get a clear message, not a traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from servestack.deployment.model import Deployment
from servestack.errors import UserError
from servestack.planner import Candidate

PROJECT = "servestack"
STACK_NAME_MAX = 100
INTERRUPT_GRACE_SECONDS = 120
TEXT_TAIL = 20000
INSTALL_HELP = (
    "the Pulumi CLI is not installed or not on PATH; `servestack deploy` drives it through the "
    "Pulumi Automation API. Install it with `curl -fsSL https://get.pulumi.com | sh` (Linux, "
    "macOS), `brew install pulumi/tap/pulumi` or `choco install pulumi` (Windows), see "
    "https://www.pulumi.com/docs/iac/download-install/, then check that `pulumi version` "
    "works. Reviewing a stack needs no CLI: `servestack preview STACK --offline`.")
# EC2 Service Quotas (vCPUs) per quota family of servestack.deploy.failures.quota_families().
AWS_QUOTA_CODES = {"aws-G-ondemand": "L-DB2E81BA", "aws-P-ondemand": "L-417A185B",
                   "aws-G-spot": "L-3819A6DF", "aws-P-spot": "L-7212CCBC",
                   "aws-P5-spot": "L-C4BD4855"}


@dataclass(frozen=True, slots=True)
class StackRef:
    service: str
    candidate_id: str
    name: str


def stack_name(service: str, candidate_id: str) -> str:
    """`<service>-<candidate id>` with characters Pulumi refuses replaced, at most 100 chars."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{service}-{candidate_id}").strip("-.")
    if len(name) > STACK_NAME_MAX:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = name[:STACK_NAME_MAX - 9].rstrip("-.") + "-" + digest
    return name


def stack_ref(service: str, candidate_id: str) -> StackRef:
    return StackRef(service, candidate_id, stack_name(service, candidate_id))


@dataclass(frozen=True, slots=True)
class Diagnostic:
    severity: str  # "error" | "warning" | "info#err" | "info"
    message: str
    urn: str | None = None


@dataclass
class OpResult:
    ok: bool
    diagnostics: list[Diagnostic] = field(default_factory=list)
    text: str = ""  # the command's own output or error text
    outputs: dict = field(default_factory=dict)
    timed_out: bool = False
    failed_urns: list[str] = field(default_factory=list)

    def error_texts(self) -> list[str]:
        """Most specific first: the provider's error events, then the command's text."""
        errors = [d.message for d in self.diagnostics if d.severity in ("error", "info#err")]
        return [*errors, self.text] if self.text else errors


@dataclass(frozen=True, slots=True)
class Leftover:
    """Something of a candidate that still exists after its stack was destroyed."""

    type: str  # Pulumi type token, or the cloud's own resource type when unknown to Pulumi
    name: str
    id: str | None
    where: str  # "state" | "pending" (an interrupted create) | "cloud" (found by its tags)

    @property
    def adoptable(self) -> bool:
        return self.where == "cloud" and bool(self.id) and ":" in self.type

    @property
    def label(self) -> str:
        return f"{self.type} {self.name}" + (f" ({self.id})" if self.id else "") + \
            f" [{self.where}]"

    def to_json(self) -> dict:
        return asdict(self)


class Engine(Protocol):
    name: str

    def up(self, stack: StackRef, deployment: Deployment, *, timeout_s: float,
           on_progress: Callable[[str], None] | None = None) -> OpResult: ...

    def refresh(self, stack: StackRef, deployment: Deployment) -> OpResult: ...

    def destroy(self, stack: StackRef, deployment: Deployment) -> OpResult: ...

    def leftovers(self, stack: StackRef, deployment: Deployment) -> list[Leftover]: ...

    def adopt(self, stack: StackRef, deployment: Deployment,
              leftovers: list[Leftover]) -> OpResult: ...

    def remove(self, stack: StackRef, deployment: Deployment) -> OpResult: ...

    def quota_limits(self, candidates: list[Candidate]) -> dict[tuple[str, str], float]: ...

    def group_size(self, stack: StackRef, deployment: Deployment) -> int | None:
        """How many VMs of the stack's group exist (got capacity); None when it cannot tell."""
        ...


# --- Pulumi ---------------------------------------------------------------------------------------

class PulumiMissing(UserError):
    pass


def _watched_command_class():
    from pulumi.automation import CommandResult, PulumiCommand
    from pulumi.automation.errors import create_command_error

    class WatchedCommand(PulumiCommand):
        """The Pulumi CLI, run so that a per-attempt timeout can interrupt the running command."""

        def __init__(self, root: str | None = None) -> None:
            super().__init__(root=root, skip_version_check=False)
            self.process: subprocess.Popen | None = None

        def run(self, args, cwd, additional_env, on_output=None, on_error=None) -> CommandResult:
            args = list(args)
            cut = args.index("--") if "--" in args else len(args)
            if "--non-interactive" not in args[:cut]:
                args.insert(0, "--non-interactive")
            env = {**os.environ, **additional_env, "PULUMI_AUTOMATION_API": "true"}
            chunks: dict[str, list[str]] = {"out": [], "err": []}
            with subprocess.Popen([self.command, *args], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, cwd=cwd, env=env,
                                  encoding="utf-8") as process:
                self.process = process
                readers = [threading.Thread(target=_pump, args=(process.stdout, on_output,
                                                                chunks["out"])),
                           threading.Thread(target=_pump, args=(process.stderr, on_error,
                                                                chunks["err"]))]
                for reader in readers:
                    reader.start()
                try:
                    for reader in readers:
                        reader.join()
                except KeyboardInterrupt:  # Ctrl-C or SIGTERM: let Pulumi cancel cleanly
                    process.send_signal(signal.SIGINT)
                    raise
                code = process.wait()
            self.process = None
            result = CommandResult(stdout="\n".join(chunks["out"]),
                                   stderr="\n".join(chunks["err"]), code=code)
            if code != 0:
                raise create_command_error(result)
            return result

        def interrupt(self, hard: bool = False) -> None:
            process = self.process
            if process is not None and process.poll() is None:
                process.kill() if hard else process.send_signal(signal.SIGINT)

    return WatchedCommand


def _pump(stream, callback, chunks: list[str]) -> None:
    for line in iter(stream.readline, ""):
        line = line.rstrip()
        if callback:
            callback(line)
        chunks.append(line)
    stream.close()


def pulumi_command(root: str | None = None):
    """The CLI wrapper, or PulumiMissing (exit 2, one line, how to install it)."""
    try:
        return _watched_command_class()(root)
    except ImportError as exc:
        raise PulumiMissing(f"the Pulumi SDK is missing: pip install 'servestack[pulumi]' "
                            f"({exc})") from None
    except FileNotFoundError:
        raise PulumiMissing(INSTALL_HELP) from None
    except (subprocess.CalledProcessError, OSError) as exc:
        raise PulumiMissing(f"`pulumi version` failed ({exc}); {INSTALL_HELP}") from None


class _Watchdog:
    """SIGINT to the running CLI after `timeout_s` (Pulumi cancels gracefully), kill after
    `grace_s` more."""

    def __init__(self, command, timeout_s: float, grace_s: float) -> None:
        self.command, self.timeout_s, self.grace_s = command, timeout_s, grace_s
        self.fired = False
        self._timers: list[threading.Timer] = []

    def __enter__(self) -> _Watchdog:
        self._start(self.timeout_s, self._soft)
        return self

    def __exit__(self, *exc) -> None:
        for timer in self._timers:
            timer.cancel()

    def _start(self, delay: float, action) -> None:
        timer = threading.Timer(delay, action)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _soft(self) -> None:
        self.fired = True
        self.command.interrupt()
        self._start(self.grace_s, self._hard)

    def _hard(self) -> None:
        self.command.interrupt(hard=True)


class _Events:
    """on_event callback: keeps error/warning diagnostics and failed URNs, reports progress."""

    def __init__(self, on_progress: Callable[[str], None] | None = None) -> None:
        self.diagnostics: list[Diagnostic] = []
        self.failed: list[str] = []
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
        if pre is not None and self.on_progress and not pre.planning:
            meta = pre.metadata
            self.on_progress(f"{meta.op.value} {meta.type} {meta.urn.rsplit('::', 1)[-1]}")


class PulumiEngine:
    """Automation API engine: one stack per candidate, inline program, configurable backend."""

    name = "pulumi"

    def __init__(self, work_dir: str | os.PathLike, backend_url: str | None = None, *,
                 hf_token: str | None = None, command=None, gcp_project: str | None = None,
                 interrupt_grace_s: float = INTERRUPT_GRACE_SECONDS) -> None:
        self.work_dir = Path(work_dir).resolve()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.backend_url = backend_url or os.environ.get("PULUMI_BACKEND_URL") or \
            f"file://{self.work_dir / 'state'}"
        self._check_secrets_setup()
        self.command = command or pulumi_command()
        self.hf_token = hf_token
        self.gcp_project = gcp_project
        self.grace_s = interrupt_grace_s
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

    def _stack(self, ref: StackRef | str, deployment: Deployment, program=None,
               config: dict | None = None):
        from pulumi import automation as auto

        from servestack.pulumi.program import main

        name = ref if isinstance(ref, str) else ref.name
        stack = auto.Stack.create_or_select(name, self._workspace(program or main))
        values = config if config is not None else self._config(deployment)
        stack.set_all_config({k: auto.ConfigValue(v, secret=k == "servestack:hfToken")
                              for k, v in values.items()})
        return stack

    def _config(self, deployment: Deployment) -> dict[str, str]:
        from servestack.pulumi.stackfile import TOKEN_KEY, provider_config

        config = {**provider_config(deployment),
                  "servestack:deployment": json.dumps(deployment.to_config())}
        if deployment.secret and self.hf_token:
            config[TOKEN_KEY] = self.hf_token
        return config

    def _run(self, operation: Callable, events: _Events, timeout_s: float | None = None
             ) -> OpResult:
        from pulumi.automation.errors import CommandError

        watchdog = _Watchdog(self.command, timeout_s, self.grace_s) if timeout_s else None
        try:
            if watchdog:
                with watchdog:
                    result = operation(events)
            else:
                result = operation(events)
        except CommandError as exc:
            return OpResult(False, events.diagnostics, str(exc)[-TEXT_TAIL:],
                            timed_out=bool(watchdog and watchdog.fired),
                            failed_urns=events.failed)
        outputs = {k: v.value for k, v in (getattr(result, "outputs", None) or {}).items()}
        return OpResult(True, events.diagnostics, (result.stdout or "")[-TEXT_TAIL:], outputs)

    # --- the Engine interface ------------------------------------------------------------------

    def up(self, stack: StackRef, deployment: Deployment, *, timeout_s: float,
           on_progress: Callable[[str], None] | None = None) -> OpResult:
        handle = self._stack(stack, deployment)
        return self._run(lambda ev: handle.up(on_event=ev, color="never"), _Events(on_progress),
                         timeout_s)

    def refresh(self, stack: StackRef, deployment: Deployment) -> OpResult:
        handle = self._stack(stack, deployment)
        result = self._run(lambda ev: handle.refresh(on_event=ev, color="never"), _Events())
        if not result.ok and "pending" in result.text.lower():
            # an interrupted create: remember it, then drop it from the state so destroy can run
            self._snapshots[stack.name] = self._state(handle)
            result = self._run(lambda ev: handle.refresh(on_event=ev, color="never",
                                                         clear_pending_creates=True), _Events())
        self._snapshots.setdefault(stack.name, self._state(handle))
        return result

    def destroy(self, stack: StackRef, deployment: Deployment) -> OpResult:
        handle = self._stack(stack, deployment)
        return self._run(lambda ev: handle.destroy(on_event=ev, color="never"), _Events())

    def remove(self, stack: StackRef, deployment: Deployment) -> OpResult:
        from pulumi.automation.errors import CommandError, StackNotFoundError

        workspace = self._workspace(None)
        try:
            workspace.remove_stack(stack.name)
        except StackNotFoundError:
            return OpResult(True, text="no such stack")
        except CommandError as exc:
            return OpResult(False, text=str(exc)[-TEXT_TAIL:])
        self._snapshots.pop(stack.name, None)
        return OpResult(True)

    def leftovers(self, stack: StackRef, deployment: Deployment) -> list[Leftover]:
        handle = self._stack(stack, deployment)
        found = [_leftover_from_state(r) for r in self._state(handle)]
        found += self._cloud_leftovers(stack, deployment)
        return found

    def adopt(self, stack: StackRef, deployment: Deployment,
              leftovers: list[Leftover]) -> OpResult:
        from pulumi.automation.errors import CommandError

        handle = self._stack(stack, deployment)
        resources = [{"type": item.type, "name": _import_name(item), "id": item.id}
                     for item in leftovers if item.adoptable]
        if not resources:
            return OpResult(False, text="nothing adoptable")
        try:
            handle.import_resources(resources=resources, protect=False, generate_code=False)
        except CommandError as exc:
            return OpResult(False, text=str(exc)[-TEXT_TAIL:])
        return OpResult(True)

    def quota_limits(self, candidates: list[Candidate]) -> dict[tuple[str, str], float]:
        """Quota limits per (region, quota family), read through no-resource stacks: AWS
        Service Quotas (vCPUs), GCP Cloud Quotas (GPUs; region "*" = every region not listed,
        "global" = GPUS_ALL_REGIONS). Azure offers no quota data source here."""
        from servestack.deploy.failures import quota_families

        limits: dict[tuple[str, str], float] = {}
        aws = sorted({(c.region, quota_families(c)[0]) for c in candidates
                      if c.cloud == "aws" and quota_families(c)[0] in AWS_QUOTA_CODES})
        if aws:
            outputs = self._probe("quota-aws", {"aws:region": aws[0][0]}, aws_quota_program(aws))
            limits.update(_limits(outputs))
        gcp = sorted({quota_families(c)[0] for c in candidates if c.cloud == "gcp"})
        if gcp:
            region = next(c.region for c in candidates if c.cloud == "gcp")
            config = {"gcp:region": region,
                      **({"gcp:project": self.gcp_project} if self.gcp_project else {})}
            outputs = self._probe("quota-gcp", config, gcp_quota_program(gcp, self.gcp_project))
            limits.update(_limits(outputs))
        return limits

    def group_size(self, stack: StackRef, deployment: Deployment) -> int | None:
        """Running VMs of the group, read through a no-resource stack (GCP: the MIG's
        instances; AWS: running instances with the candidate's tags; Azure: None, its scale
        set fails `up` itself when there is no capacity)."""
        if deployment.cloud == "azure":
            return None
        from servestack.pulumi.stackfile import provider_config

        outputs = self._stack(stack, deployment).outputs()
        group = outputs.get("instanceGroupName")
        name = group.value if group is not None else None
        program = group_program(deployment, name)
        found = self._probe(f"{stack.name}-size", provider_config(deployment), program)
        running = found.get("running")
        return int(running) if isinstance(running, int | float) else None

    # --- helpers ------------------------------------------------------------------------------

    def _state(self, handle) -> list[dict]:
        from pulumi.automation.errors import CommandError

        try:
            exported = handle.export_stack().deployment or {}
        except CommandError:
            return []
        resources = [r for r in exported.get("resources") or []
                     if not str(r.get("type", "")).startswith(("pulumi:pulumi:Stack",
                                                                "pulumi:providers:"))]
        pending = [dict(op.get("resource") or {}, pending=True)
                   for op in exported.get("pending_operations") or []]
        return resources + pending

    def _cloud_leftovers(self, stack: StackRef, deployment: Deployment) -> list[Leftover]:
        from servestack.pulumi.stackfile import provider_config

        program = sweep_program(deployment, self._snapshots.get(stack.name, []))
        if program is None:
            return []
        outputs = self._probe(f"{stack.name}-sweep", provider_config(deployment), program)
        return [Leftover(item["type"], item["name"], item.get("id"), "cloud")
                for item in outputs.get("found") or []]

    def _probe(self, name: str, config: dict, program) -> dict:
        """Run a program that only reads (invokes) in a throwaway stack; return its outputs."""
        from pulumi.automation.errors import CommandError

        handle = self._stack(stack_name(PROJECT, name), None, program, config)
        try:
            result = handle.up(color="never")
            return {k: v.value for k, v in result.outputs.items()}
        except CommandError as exc:
            return {"error": str(exc)[-2000:]}
        finally:
            try:
                handle.workspace.remove_stack(handle.name, force=True)  # no cloud resources
            except CommandError:
                pass


def _leftover_from_state(resource: dict) -> Leftover:
    urn = str(resource.get("urn", ""))
    return Leftover(str(resource.get("type", "?")), urn.rsplit("::", 1)[-1] or "?",
                    resource.get("id") or None, "pending" if resource.get("pending") else "state")


def _import_name(item: Leftover) -> str:
    return re.sub(r"[^A-Za-z0-9-]+", "-", f"stray-{item.name}")[:60].strip("-")


# --- read-only programs (invokes only) -----------------------------------------------------------

def sweep_program(deployment: Deployment, snapshot: list[dict]) -> Callable[[], None] | None:
    """A program that exports `found`: what still carries this candidate's tags in the cloud."""
    if deployment.cloud == "aws":
        return lambda: _export_found(_aws_tagged(deployment))
    if deployment.cloud == "gcp":
        return lambda: _export_found(_gcp_labelled(deployment))
    groups = [r for r in snapshot if r.get("type") == "azure-native:resources:ResourceGroup"]
    if not groups:
        return None
    return lambda: _export_found(_azure_groups(groups))


def _export_found(found: list[dict]) -> None:
    import pulumi

    pulumi.export("found", found)


def _aws_tagged(deployment: Deployment) -> list[dict]:
    import pulumi_aws as aws

    tags = deployment.tags
    filters = [{"key": "servestack-service", "values": [tags["servestack-service"]]},
               {"key": "servestack-candidate", "values": [tags["servestack-candidate"]]}]
    mapped = aws.resourcegroupstaggingapi.get_resources(tag_filters=filters,
                                                        region=deployment.region)
    found = [_aws_from_arn(m.resource_arn) for m in mapped.resource_tag_mapping_lists
             if ":instance/" not in m.resource_arn]  # instances: the authoritative call below
    running = aws.ec2.get_instances(
        instance_tags={k: tags[k] for k in ("servestack-service", "servestack-candidate")},
        instance_state_names=["pending", "running", "stopping", "stopped"],
        region=deployment.region)
    found += [{"type": "aws:ec2/instance:Instance", "name": i, "id": i} for i in running.ids]
    return found


AWS_ARN_TYPES = (
    (r":autoScalingGroup:.*:autoScalingGroupName/(.+)$", "aws:autoscaling/group:Group", 1),
    (r":launch-template/(lt-[0-9a-f]+)$", "aws:ec2/launchTemplate:LaunchTemplate", 1),
    (r":security-group/(sg-[0-9a-f]+)$", "aws:ec2/securityGroup:SecurityGroup", 1),
    (r":loadbalancer/(?:app|net)/([^/]+)/.+$", "aws:lb/loadBalancer:LoadBalancer", 0),
    (r":targetgroup/([^/]+)/.+$", "aws:lb/targetGroup:TargetGroup", 0),
)


def _aws_from_arn(arn: str) -> dict:
    for pattern, type_token, id_group in AWS_ARN_TYPES:
        match = re.search(pattern, arn)
        if match:
            name = match.group(1)
            return {"type": type_token, "name": name, "id": arn if id_group == 0 else name}
    service = arn.split(":")[2] if arn.count(":") >= 2 else "aws"
    return {"type": f"aws {service}", "name": arn.rsplit("/", 1)[-1], "id": arn}


GCP_ASSET_TYPES = {
    "compute.googleapis.com/Instance": "gcp:compute/instance:Instance",
    "compute.googleapis.com/InstanceTemplate": "gcp:compute/instanceTemplate:InstanceTemplate",
    "compute.googleapis.com/RegionInstanceTemplate":
        "gcp:compute/regionInstanceTemplate:RegionInstanceTemplate",
    "compute.googleapis.com/Disk": "gcp:compute/disk:Disk",
}


def _gcp_labelled(deployment: Deployment) -> list[dict]:
    import pulumi_gcp as gcp

    project = deployment.gcp_project or gcp.organizations.get_project().project_id
    query = f"labels.servestack-candidate={deployment.tags['servestack-candidate']}"
    result = gcp.cloudasset.get_search_all_resources(scope=f"projects/{project}", query=query)
    found = []
    for item in result.results:
        resource_id = item.name.removeprefix("//compute.googleapis.com/")
        found.append({"type": GCP_ASSET_TYPES.get(item.asset_type, item.asset_type),
                      "name": item.name.rsplit("/", 1)[-1], "id": resource_id})
    return found


def _azure_groups(groups: list[dict]) -> list[dict]:
    import pulumi_azure_native as azure_native

    found = []
    for group in groups:
        name = (group.get("outputs") or {}).get("name") or str(group.get("id", "")).rsplit("/")[-1]
        try:
            azure_native.resources.get_resource_group(resource_group_name=name)
        except Exception:  # noqa: BLE001 - a failed lookup means the group is gone
            continue
        found.append({"type": "azure-native:resources:ResourceGroup", "name": name,
                      "id": group.get("id")})
    return found


def group_program(deployment: Deployment, group_name: str | None) -> Callable[[], None]:
    """A program that exports `running`: the group's VMs that got capacity."""

    def program() -> None:
        import pulumi

        pulumi.export("running", _running(deployment, group_name))

    return program


def _running(deployment: Deployment, group_name: str | None) -> int | None:
    tags = deployment.tags
    if deployment.cloud == "aws":
        import pulumi_aws as aws

        found = aws.ec2.get_instances(
            instance_tags={k: tags[k] for k in ("servestack-service", "servestack-candidate")},
            instance_state_names=["running"], region=deployment.region)
        return len(found.ids)
    if deployment.cloud == "gcp" and group_name:
        import pulumi_gcp as gcp

        group = gcp.compute.get_region_instance_group(name=group_name, region=deployment.region,
                                                      project=deployment.gcp_project)
        # a VM that exists at all (PROVISIONING, STAGING, RUNNING) got capacity; without
        # capacity or quota the MIG's creates fail and no instance exists
        return sum(1 for i in group.instances if i.status not in ("STOPPING", "TERMINATED"))
    return None


def _limits(outputs: dict) -> dict[tuple[str, str], float]:
    found = outputs.get("limits") or {}
    return {tuple(key.split("|", 1)): float(v) for key, v in found.items() if v is not None}


def gcp_quota_id(metric: str) -> str:
    """NVIDIA_A100_80GB_GPUS -> NVIDIA-A100-80GB-GPUS-per-project-region (Cloud Quotas ids)."""
    return metric.replace("_", "-") + "-per-project-region"


def gcp_quota_program(metrics: list[str], project: str | None) -> Callable[[], None]:
    def program() -> None:
        import pulumi
        import pulumi_gcp as gcp

        parent = f"projects/{project or gcp.organizations.get_project().project_id}" \
            "/locations/global"
        limits: dict[str, float | None] = {}
        wanted = [("GPUS_ALL_REGIONS", "GPUS-ALL-REGIONS-per-project")]
        wanted += [(m, gcp_quota_id(m)) for m in metrics]
        for metric, quota_id in wanted:
            try:
                info = gcp.cloudquota.get_s_quota_info(parent=parent, quota_id=quota_id,
                                                       service="compute.googleapis.com")
            except Exception:  # noqa: BLE001 - API off or unknown id: no answer, no block
                continue
            for dims in info.dimensions_infos:
                value = float(dims.details[0].value) if dims.details else None
                if metric == "GPUS_ALL_REGIONS":
                    limits[f"global|{metric}"] = value
                else:
                    limits[f"{dims.dimensions.get('region', '*')}|{metric}"] = value
        pulumi.export("limits", limits)

    return program


def aws_quota_program(wanted: list[tuple[str, str]]) -> Callable[[], None]:
    def program() -> None:
        import pulumi
        import pulumi_aws as aws

        limits = {}
        for region, family in wanted:
            try:
                quota = aws.servicequotas.get_service_quota(
                    service_code="ec2", quota_code=AWS_QUOTA_CODES[family], region=region)
                limits[f"{region}|{family}"] = quota.value
            except Exception:  # noqa: BLE001 - no answer is not a zero quota
                limits[f"{region}|{family}"] = None
        pulumi.export("limits", limits)

    return program
