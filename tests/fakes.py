"""Doubles the deploy-loop tests, the CLI tests and the fallback simulator share.

`ReplayEngine` keeps a `Cloud` (what exists, in state and untracked) that outlives an engine, so
a run can crash and a new run resume against the same cloud. It records a violation if `up` ever
starts while another stack still holds resources: never two candidates live. `SimClock` is the
simulated clock: timeouts, backoffs and readiness waits take no real time. Clouds named in
`no_credentials` answer every call the way the real providers do without credentials (the
texts in fixtures/errors): `identity` and the search by tags fail, `up` fails before creating
anything. `PLAN` is the plan of
the embedded Mixtral spec, and `build` makes a candidate's Deployment from it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from servestack.deploy.journal import Journal
from servestack.deploy.readiness import ProbeAnswer
from servestack.deployment.build import build_deployment
from servestack.engine import (
    ALL,
    Capabilities,
    Diagnostic,
    Identity,
    Leftover,
    OpResult,
    QuotaLimit,
    sweep_failed,
)
from servestack.inputs import load_inputs
from servestack.planner import plan

FIXTURES = Path(__file__).parent / "fixtures" / "errors"
DESTROY_FAILS = ("error: deleting EC2 Security Group (sg-0a1b2c3d4e5f67890): operation error "
                 "EC2: DeleteSecurityGroup, api error DependencyViolation: resource "
                 "sg-0a1b2c3d4e5f67890 has a dependent object")


def fixture_text(name: str) -> str:
    lines = (FIXTURES / f"{name}.txt").read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines if not line.startswith("# "))


class Crash(BaseException):
    """The process was killed (BaseException: nothing in the loop may swallow it)."""


class KillableJournal(Journal):
    """Killed right after its n-th write reached the disk."""

    kill_at: int | None = None
    saves = 0

    def save(self) -> None:
        super().save()
        self.saves += 1
        if self.kill_at is not None and self.saves == self.kill_at:
            raise Crash(f"killed after journal write {self.saves}")


class SimClock:
    def __init__(self, start: float = 1_000_000.0) -> None:
        self.t = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


@dataclass
class Step:
    """What one `up` of a candidate does: ok / fail (with a fixture) / hang / crash."""

    kind: str = "ok"
    fixture: str | None = None
    seconds: float = 60.0
    strays: tuple[str, ...] = ()  # created in the cloud but missing from the state
    running: int | None = 2  # VMs of the group that start after an ok `up` (None: unknown)


@dataclass
class Cloud:
    state: dict[str, set[str]] = field(default_factory=dict)  # stack -> resources in state
    untracked: dict[str, set[str]] = field(default_factory=dict)  # stack -> strays
    ready_after: dict[str, float] = field(default_factory=dict)  # endpoint -> time ready
    running: dict[str, int | None] = field(default_factory=dict)  # stack -> running VMs
    violations: list[str] = field(default_factory=list)

    def holding(self) -> set[str]:
        return {s for s, r in self.state.items() if r} | \
            {s for s, r in self.untracked.items() if r}


class ReplayEngine:
    name = "replay"

    def __init__(self, cloud: Cloud, clock: SimClock, script: dict[str, list[Step]] | None = None,
                 *, destroy_fails: tuple[str, ...] = (), crash_at: int | None = None,
                 limits: list[QuotaLimit] | None = None, ready_in: float = 600.0,
                 can: Capabilities = ALL, no_credentials: dict[str, str] | None = None) -> None:
        self.cloud, self.clock, self.script = cloud, clock, script or {}
        self.destroy_fails, self.crash_at, self.limits = destroy_fails, crash_at, limits or []
        self.ready_in, self.can = ready_in, can
        self.no_credentials = no_credentials or {}  # cloud -> its no-credentials fixture
        self.calls: list[tuple[str, str]] = []
        self.checked: list[str] = []  # clouds whose credentials were asked for

    def capabilities(self, cloud: str) -> Capabilities:
        return self.can

    def _call(self, op: str, name: str) -> None:
        self.calls.append((op, name))
        if self.crash_at is not None and len(self.calls) == self.crash_at:
            raise Crash(f"killed during {op} {name}")

    def _denied(self, cloud: str) -> str | None:
        """The provider's error text when `cloud` has no credentials."""
        fixture = self.no_credentials.get(cloud)
        return fixture_text(fixture) if fixture else None

    def identity(self, cloud: str, *, timeout_s: float) -> Identity:
        self.checked.append(cloud)
        self.clock.t += 3
        denied = self._denied(cloud)
        if denied:
            return Identity(cloud, False, error=denied)
        return Identity(cloud, True, who=f"test account of {cloud}")

    def up(self, stack, deployment, *, timeout_s, on_progress=None) -> OpResult:
        others = self.cloud.holding() - {stack.name}
        if others:
            self.cloud.violations.append(f"up {stack.name} while {sorted(others)} hold resources")
        denied = self._denied(deployment.cloud)
        if denied:  # the provider cannot authenticate: nothing is created
            self._call("up", stack.name)
            self.clock.t += 20
            return OpResult(False, [Diagnostic("error", denied)], "error: update failed",
                            created_any=False)
        steps = self.script.get(stack.candidate_id) or []
        step = steps.pop(0) if steps else Step()
        resources = self.cloud.state.setdefault(stack.name, set())
        resources.update({"sg", "lb", "template"})
        self.cloud.untracked.setdefault(stack.name, set()).update(step.strays)
        if on_progress:
            on_progress("create security group")
        self._call("up", stack.name)
        if step.kind == "sigterm":  # the CI job is cancelled while `up` runs
            os.kill(os.getpid(), signal.SIGTERM)
        if step.kind == "hang":
            self.clock.t += timeout_s
            resources.add("group")
            return OpResult(False, [], "error: update canceled", timed_out=True)
        self.clock.t += step.seconds
        if step.kind == "fail":
            return OpResult(False, [Diagnostic("error", fixture_text(step.fixture))],
                            "code: 255\n stdout: Updating ... error: update failed")
        resources.add("group")
        endpoint = f"http://{stack.name}.lb.example"
        self.cloud.running[stack.name] = step.running
        starved = step.running is not None and step.running < 2
        self.cloud.ready_after[endpoint] = float("inf") if starved else self.clock.t + self.ready_in
        return OpResult(True, outputs={"endpoint": endpoint, "candidate_id": stack.candidate_id})

    def group_size(self, stack, deployment) -> int | None:
        self.calls.append(("group_size", stack.name))
        return self.cloud.running.get(stack.name)

    def refresh(self, stack, deployment) -> OpResult:
        self._call("refresh", stack.name)
        self.clock.t += 5
        denied = self._denied(deployment.cloud)
        return OpResult(False, [Diagnostic("error", denied)]) if denied else OpResult(True)

    def destroy(self, stack, deployment) -> OpResult:
        self._call("destroy", stack.name)
        self.clock.t += 90
        if stack.name in self.destroy_fails:
            self.cloud.state.get(stack.name, set()).discard("lb")
            return OpResult(False, [Diagnostic("error", DESTROY_FAILS)], "error: destroy failed")
        self.cloud.state[stack.name] = set()
        return OpResult(True)

    def leftovers(self, stack, deployment) -> list[Leftover]:
        self._call("leftovers", stack.name)
        return [Leftover("test:state", r, f"id-{r}", "state")
                for r in sorted(self.cloud.state.get(stack.name, ()))]

    def strays(self, stack, deployment) -> list[Leftover]:
        self._call("strays", stack.name)
        denied = self._denied(deployment.cloud)
        if denied:
            return [sweep_failed(denied)]
        return [Leftover("aws:autoscaling/group:Group", r, r, "cloud")
                for r in sorted(self.cloud.untracked.get(stack.name, ()))]

    def adopt(self, stack, deployment, leftovers) -> OpResult:
        self._call("adopt", stack.name)
        names = {x.name for x in leftovers}
        self.cloud.untracked[stack.name] -= names
        self.cloud.state.setdefault(stack.name, set()).update(names)
        return OpResult(True)

    def remove(self, stack, deployment) -> OpResult:
        self._call("remove", stack.name)
        self.cloud.state.pop(stack.name, None)
        return OpResult(True)

    def quota_limits(self, cloud, candidates) -> list[QuotaLimit]:
        return [limit for limit in self.limits if limit.cloud == cloud]


def probes(cloud: Cloud, clock: SimClock, replicas: int = 2, named: bool = True):
    """Each endpoint answers 503 until it is ready, then round-robins over its replicas."""

    def factory(endpoint, deployment):
        turn = iter(range(10**9))

        def probe() -> ProbeAnswer:
            ready_at = cloud.ready_after.get(endpoint)
            if ready_at is None or clock.now() < ready_at:
                return ProbeAnswer(False, 503, None, "HTTP 503")
            name = f"replica-{next(turn) % replicas}" if named else None
            return ProbeAnswer(True, 200, name)

        return probe

    return factory


# The frozen test catalog (see its README): candidate order here does not move with refreshes.
FROZEN_CATALOG = str(Path(__file__).parent / "fixtures" / "catalog" / "frozen")
INPUTS = load_inputs(None, catalog_dir=FROZEN_CATALOG)
PLAN = plan(INPUTS.spec, INPUTS.catalog, INPUTS.facts, model=INPUTS.model)
C = {c.id: c for c in PLAN.candidates}
GCP1, GCP2, GCP3 = (c.id for c in PLAN.candidates[:3])  # a2-ultragpu-2g: us-central1, eu-west4..
AZ1 = PLAN.candidates[3].id  # azure eastus Standard_NC48ads_A100_v4


def build(candidate, pool):
    return build_deployment(INPUTS.spec, candidate, pool, model=INPUTS.model)


def name_tags(value: object) -> set[str]:
    """Every AWS Name tag under `value`: a tags map, or a group's tag list/blocks."""
    found: set[str] = set()
    if isinstance(value, dict):
        if "Name" in value:
            found.add(value["Name"])
        if value.get("key") == "Name":
            found.add(value["value"])
        for item in value.values():
            found |= name_tags(item)
    elif isinstance(value, list):
        for item in value:
            found |= name_tags(item)
    return found


# --- terraform validate with the offline AWS provider ----------------------------------------

PLUGIN_DIR = Path(os.environ.get("SERVESTACK_TF_PLUGIN_DIR", "/opt/tf-plugins"))
AWS_PROVIDER = PLUGIN_DIR / "registry.terraform.io" / "hashicorp" / "aws" / "5.100.0"
needs_terraform_aws = pytest.mark.skipif(
    shutil.which("terraform") is None or not AWS_PROVIDER.is_dir(),
    reason=f"terraform on PATH and hashicorp/aws 5.100.0 in {PLUGIN_DIR} are needed")


def terraform_validate(documents: list[dict], folder: Path) -> None:
    """`terraform validate` each Terraform JSON document in `folder` (one `init` against the
    offline provider mirror, then one document at a time): valid, and without warnings."""
    env = {**os.environ, "TF_CLI_CONFIG_FILE": "/dev/null", "CHECKPOINT_DISABLE": "1"}
    main = folder / "main.tf.json"
    main.write_text(json.dumps(documents[0]))
    init = subprocess.run(["terraform", "init", "-backend=false", "-input=false", "-no-color",
                           f"-plugin-dir={PLUGIN_DIR}"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stdout + init.stderr
    for document in documents:
        main.write_text(json.dumps(document))
        checked = subprocess.run(["terraform", "validate", "-json", "-no-color"], cwd=folder,
                                 env=env, capture_output=True, text=True, timeout=120)
        report = json.loads(checked.stdout)
        assert report["valid"] and report["warning_count"] == 0, report["diagnostics"]


def e2e_skip(duration: str) -> pytest.MarkDecorator:
    """The skip mark of an end-to-end Terraform test module: it runs with SERVESTACK_E2E=1,
    terraform on PATH and the offline AWS provider; `duration` says what a run costs."""
    reason = None
    if os.environ.get("SERVESTACK_E2E") != "1":
        reason = f"end-to-end Terraform tests run with SERVESTACK_E2E=1 ({duration})"
    elif shutil.which("terraform") is None:
        reason = "terraform is not on PATH"
    elif not AWS_PROVIDER.is_dir():
        reason = f"no hashicorp/aws 5.100.0 in the provider mirror {PLUGIN_DIR}"
    return pytest.mark.skipif(reason is not None, reason=reason or "")


# --- Terraform arguments against a provider's schema -----------------------------------------

# Terraform's meta-arguments: every resource takes them, no provider schema lists them.
TERRAFORM_META = frozenset({"depends_on", "lifecycle", "count", "for_each", "provider"})


def unknown_arguments(body: dict, schema: dict, where: str,
                      skip: frozenset[str] = frozenset()) -> list[str]:
    """The argument paths (`where.key...`) of the Terraform block `body` that `schema` lacks
    (schema: argument -> the nested block's schema, or None for a plain argument); the
    meta-arguments and the paths in `skip` pass."""
    found = []
    for key, value in body.items():
        path = f"{where}.{key}"
        if key in TERRAFORM_META or path in skip:
            continue
        if key not in schema:
            found.append(path)
        elif schema[key] is not None:
            for item in value if isinstance(value, list) else [value]:
                found += unknown_arguments(item, schema[key], path, skip)
    return found


def weight_cache_deployment(cloud: str, service: str = "mixtral", stack: str | None = None,
                            cache: bool = True, gcp_project: str | None = None):
    """The embedded Mixtral spec's first candidate on `cloud`, with --weight-cache (or not)."""
    from servestack import planner
    from servestack.deployment.model import Choices

    inputs = load_inputs(None, catalog_dir=FROZEN_CATALOG)
    found = plan(inputs.spec, inputs.catalog, inputs.facts, planner.Options(cloud=cloud),
                 model=inputs.model)
    return build_deployment(inputs.spec, found.candidates[0], found.candidates,
                            model=inputs.model, service_name=service, stack=stack,
                            choices=Choices(weight_cache=cache, gcp_project=gcp_project))
