"""The deploy loop's engine interface, driven by the Terraform CLI.

One working directory per candidate, `<work dir>/stacks/<stack name>/`, holding the rendered
`main.tf.json`, `terraform.tfvars.json` and its own local state, so every candidate's resources
live and die on their own. `up` is `terraform init` + `terraform apply -json`, `refresh` is
`apply -refresh-only`, `destroy` is `terraform destroy -json`. Each command's machine-readable
stream is parsed: `diagnostic` messages become the `Diagnostic`s the failure classifier reads
(the provider's own error text, e.g. a failed scaling activity's InsufficientInstanceCapacity),
`apply_errored` gives the failed addresses, `apply_start` the progress lines, `outputs` the
endpoint.

The Hugging Face token reaches Terraform only as TF_VAR_hf_token in the child's environment
(an ephemeral variable sent to write-only arguments): never on a command line, in a file, in the
plan or in the state. `overrides` are extra `*_override.tf.json` files written next to each
configuration; tests use one to point the AWS provider at a local API.

`leftovers` reports what the state still holds and, on AWS, what still carries the candidate's
tags (a read-only configuration of data sources, run in a throwaway directory). Terraform has
no counterpart of `pulumi import` without hand-written configuration, so `adopt` declines:
strays found by tags are reported, not removed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from servestack.deployment.model import Deployment
from servestack.errors import UserError
from servestack.fsutil import write_atomic
from servestack.planner import Candidate
from servestack.pulumi.engine import Diagnostic, Leftover, OpResult, StackRef
from servestack.terraform import TOKEN_VAR, provider_block, render, tfvars

INTERRUPT_GRACE_SECONDS = 120
TEXT_TAIL = 20000
PLACEHOLDER_TOKEN = "not-needed-for-this-command"
INSTALL_HELP = ("the terraform CLI (1.11 or newer) is not installed or not on PATH; see "
                "https://developer.hashicorp.com/terraform/install")
AWS_QUOTA_CODES = {"aws-G-ondemand": "L-DB2E81BA", "aws-P-ondemand": "L-417A185B",
                   "aws-G-spot": "L-3819A6DF", "aws-P-spot": "L-7212CCBC",
                   "aws-P5-spot": "L-C4BD4855"}
LIVE_INSTANCE_STATES = ["pending", "running", "stopping", "stopped"]


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
        return OpResult(self.code == 0 and not self.timed_out, diagnostics, text, outputs,
                        self.timed_out, [f for f in failed if f])


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

    def __init__(self, work_dir: str | os.PathLike, *, hf_token: str | None = None,
                 plugin_dir: str | os.PathLike | None = None,
                 overrides: dict[str, dict] | None = None, env: dict[str, str] | None = None,
                 gcp_project: str | None = None, binary: str = "terraform",
                 interrupt_grace_s: float = INTERRUPT_GRACE_SECONDS) -> None:
        self.binary = shutil.which(binary)
        if self.binary is None:
            raise TerraformMissing(INSTALL_HELP)
        self.work_dir = Path(work_dir).resolve()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.hf_token = hf_token
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
        """The token for commands that write it; a placeholder where the (required) ephemeral
        variable is only evaluated, never written (refresh, destroy)."""
        if deployment is None or deployment.secret is None:
            return None
        return self.hf_token if writing else (self.hf_token or PLACEHOLDER_TOKEN)

    def _terraform(self, directory: Path, args: list[str], *, token: str | None = None,
                   timeout_s: float | None = None,
                   on_event: Callable[[dict], None] | None = None) -> Run:
        run = Run()
        with subprocess.Popen([self.binary, *args], cwd=directory, env=self._environment(token),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              encoding="utf-8", errors="replace") as process:
            timers = self._watchdog(process, run, timeout_s)
            for line in process.stdout:
                _take(run, line.rstrip("\n"), on_event)
            run.code = process.wait()
            for timer in timers:
                timer.cancel()
        return run

    def _watchdog(self, process: subprocess.Popen, run: Run, timeout_s: float | None
                  ) -> list[threading.Timer]:
        """SIGINT after `timeout_s` (Terraform stops and saves its state), SIGKILL after the
        grace period."""
        if not timeout_s:
            return []

        def soft() -> None:
            if process.poll() is None:
                run.timed_out = True
                process.send_signal(signal.SIGINT)

        def hard() -> None:
            if process.poll() is None:
                process.kill()

        timers = [threading.Timer(timeout_s, soft), threading.Timer(timeout_s + self.grace_s,
                                                                      hard)]
        for timer in timers:
            timer.daemon = True
            timer.start()
        return timers

    def _init(self, directory: Path) -> Run:
        args = ["init", "-input=false", "-no-color"]
        if self.plugin_dir:
            args.append(f"-plugin-dir={self.plugin_dir}")
        return self._terraform(directory, args)

    def _command(self, directory: Path, args: list[str], deployment: Deployment | None, *,
                 writing: bool = False, timeout_s: float | None = None,
                 on_event: Callable[[dict], None] | None = None) -> OpResult:
        """init if needed, then `terraform <args> -json`; an init failure is the result."""
        if not (directory / ".terraform").is_dir():
            init = self._init(directory)
            if init.code != 0:
                return init.result()
        run = self._terraform(directory, [*args, "-input=false", "-json"],
                              token=self._token_for(deployment, writing), timeout_s=timeout_s,
                              on_event=on_event)
        return run.result()

    # --- the Engine interface ------------------------------------------------------------------

    def up(self, stack: StackRef, deployment: Deployment, *, timeout_s: float,
           on_progress: Callable[[str], None] | None = None) -> OpResult:
        if deployment.secret is not None and not self.hf_token:
            return OpResult(False, [Diagnostic(
                "error", f"No value for required variable {TOKEN_VAR}: the deployment reads "
                         f"the Hugging Face token from {deployment.secret.store} "
                         f"{deployment.secret.name}; pass the token (HF_TOKEN)")])
        directory = self.stack_dir(stack)
        self._write(directory, render(deployment), self._variables(deployment))
        return self._command(directory, ["apply", "-auto-approve"], deployment, writing=True,
                             timeout_s=timeout_s, on_event=_progress(on_progress))

    def _variables(self, deployment: Deployment) -> dict[str, Any]:
        values = tfvars(deployment)
        if deployment.cloud == "gcp" and "project" not in values and self.gcp_project:
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
        return self.state_leftovers(stack, deployment) + \
            self._cloud_leftovers(stack, deployment)

    def adopt(self, stack: StackRef, deployment: Deployment,
              leftovers: list[Leftover]) -> OpResult:
        names = "; ".join(item.label for item in leftovers)
        return OpResult(False, text=f"the terraform engine does not import strays; delete them "
                                    f"by hand: {names}")

    def remove(self, stack: StackRef, deployment: Deployment) -> OpResult:
        directory = self.stack_dir(stack)
        if self._state_leftovers(directory, deployment):
            return OpResult(False, text=f"{directory}: the state still holds resources")
        shutil.rmtree(directory, ignore_errors=True)
        return OpResult(True)

    def quota_limits(self, candidates: list[Candidate]) -> dict[tuple[str, str], float]:
        """AWS Service Quotas (vCPUs) per (region, quota family), through data sources."""
        from servestack.deploy.failures import quota_families

        wanted = sorted({(c.region, quota_families(c)[0]) for c in candidates
                         if c.cloud == "aws" and quota_families(c)[0] in AWS_QUOTA_CODES})
        if not wanted:
            return {}
        limits: dict[tuple[str, str], float] = {}
        for region in sorted({r for r, _ in wanted}):
            families = [f for r, f in wanted if r == region]
            outputs = self.probe(f"quota-aws-{region}", aws_quota_config(region, families))
            for family, value in (outputs.get("limits") or {}).items():
                if value is not None:
                    limits[(region, family)] = float(value)
        return limits

    def group_size(self, stack: StackRef, deployment: Deployment) -> int | None:
        """VMs of the group that exist, read through data sources (AWS: pending or running
        instances with the candidate's tags; GCP: the MIG's instance group size; Azure: None,
        its scale set fails `apply` itself when there is no capacity)."""
        if deployment.cloud == "aws":
            config = aws_size_config(deployment)
        elif deployment.cloud == "gcp":
            project = deployment.gcp_project or self.gcp_project
            name = self._outputs(stack).get("instance_group_name")
            if not project or not name:
                return None
            config = gcp_size_config(deployment, project, name)
        else:
            return None
        running = self.probe(f"{stack.name}-size", config).get("running")
        return int(running) if isinstance(running, int | float) else None

    def _outputs(self, stack: StackRef) -> dict[str, Any]:
        directory = self.stack_dir(stack)
        if not _has_state(directory):
            return {}
        run = self._terraform(directory, ["output", "-json", "-no-color"])
        try:
            values = json.loads("\n".join(run.lines)) if run.code == 0 and run.lines else \
                next(iter(run.events), {})
        except ValueError:
            return {}
        return {k: v.get("value") for k, v in values.items() if isinstance(v, dict)}

    # --- leftovers and probes -------------------------------------------------------------------

    def state_leftovers(self, stack: StackRef, deployment: Deployment) -> list[Leftover]:
        """The managed resources the candidate's state still holds."""
        return self._state_leftovers(self.stack_dir(stack), deployment)

    def _state_leftovers(self, directory: Path, deployment: Deployment) -> list[Leftover]:
        if not _has_state(directory):
            return []
        run = self._terraform(directory, ["show", "-json", "-no-color"],
                              token=self._token_for(deployment, writing=False))
        state = next((e for e in run.events if "format_version" in e), None)
        if run.code != 0 or state is None:
            return [Leftover("terraform state", str(directory), None, "state")]
        return [Leftover(r["type"], r["address"], _resource_id(r), "state")
                for r in _managed(state.get("values") or {})]

    def _cloud_leftovers(self, stack: StackRef, deployment: Deployment) -> list[Leftover]:
        if deployment.cloud != "aws":
            return []
        outputs = self.probe(f"{stack.name}-sweep", aws_sweep_config(deployment))
        if "error" in outputs:
            return [Leftover("sweep", "tag search failed", None, "cloud")]
        found = [Leftover(*_aws_type_and_name(arn), arn, "cloud")
                 for arn in outputs.get("arns") or [] if ":instance/" not in arn]
        found += [Leftover("aws_instance", i, i, "cloud") for i in outputs.get("instances") or []]
        return found

    def probe(self, name: str, document: dict) -> dict[str, Any]:
        """Apply a configuration of data sources only in a throwaway directory; its outputs,
        or {"error": text}."""
        directory = self.work_dir / "probes" / name
        shutil.rmtree(directory, ignore_errors=True)
        self._write(directory, document)
        try:
            result = self._command(directory, ["apply", "-auto-approve"], None)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        if not result.ok:
            return {"error": "\n".join(result.error_texts())[-2000:]}
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


def _resource_id(resource: dict) -> str | None:
    values = resource.get("values") or {}
    return values.get("id") or values.get("arn") or None


AWS_ARN_TYPES = (
    (":autoScalingGroup:", "aws_autoscaling_group"), (":launch-template/", "aws_launch_template"),
    (":security-group-rule/", "aws_vpc_security_group_rule"),
    (":security-group/", "aws_security_group"), (":loadbalancer/", "aws_lb"),
    (":listener/", "aws_lb_listener"), (":targetgroup/", "aws_lb_target_group"),
    (":parameter/", "aws_ssm_parameter"), (":volume/", "aws_ebs_volume"),
)


def _aws_type_and_name(arn: str) -> tuple[str, str]:
    kind = next((t for marker, t in AWS_ARN_TYPES if marker in arn), "aws resource")
    return kind, arn.rsplit("/", 1)[-1]


def _aws_terraform_block() -> dict:
    return provider_block("aws")


def aws_sweep_config(deployment: Deployment) -> dict:
    """Data sources listing what still carries the candidate's tags (instances apart: only
    live ones count, a terminated instance keeps its tags for a while)."""
    tags = {k: deployment.tags[k] for k in ("servestack-service", "servestack-candidate")}
    mapping = "data.aws_resourcegroupstaggingapi_resources.tagged.resource_tag_mapping_list"
    return {
        "terraform": _aws_terraform_block(),
        "provider": {"aws": {"region": deployment.region}},
        "data": {
            "aws_resourcegroupstaggingapi_resources": {"tagged": {
                "tag_filter": [{"key": k, "values": [v]} for k, v in tags.items()]}},
            "aws_instances": {"live": {"instance_tags": tags,
                                       "instance_state_names": LIVE_INSTANCE_STATES}}},
        "output": {"arns": {"value": "${[for m in " + mapping + " : m.resource_arn]}"},
                   "instances": {"value": "${data.aws_instances.live.ids}"}},
    }


def aws_size_config(deployment: Deployment) -> dict:
    tags = {k: deployment.tags[k] for k in ("servestack-service", "servestack-candidate")}
    return {
        "terraform": _aws_terraform_block(),
        "provider": {"aws": {"region": deployment.region}},
        "data": {"aws_instances": {"group": {"instance_tags": tags,
                                             "instance_state_names": ["pending", "running"]}}},
        "output": {"running": {"value": "${length(data.aws_instances.group.ids)}"}},
    }


def gcp_size_config(deployment: Deployment, project: str, group: str) -> dict:
    return {
        "terraform": provider_block("gcp"),
        "provider": {"google": {"project": project, "region": deployment.region}},
        "data": {"google_compute_region_instance_group": {"group": {
            "name": group, "region": deployment.region, "project": project}}},
        "output": {"running": {"value": "${data.google_compute_region_instance_group.group.size}"}},
    }


def aws_quota_config(region: str, families: list[str]) -> dict:
    """One region's EC2 vCPU quotas, one data source per quota family."""
    quotas = {f"q{i}": {"service_code": "ec2", "quota_code": AWS_QUOTA_CODES[family]}
              for i, family in enumerate(families)}
    limits = ", ".join(f'"{family}" = data.aws_servicequotas_service_quota.q{i}.value'
                       for i, family in enumerate(families))
    return {
        "terraform": _aws_terraform_block(),
        "provider": {"aws": {"region": region}},
        "data": {"aws_servicequotas_service_quota": quotas},
        "output": {"limits": {"value": "${{" + limits + "}}"}},
    }
