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
import threading
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

    def advance(self, seconds: float) -> None:
        """Time an engine call takes (not a sleep of the code under test)."""
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
    where: dict[str, tuple[str, str]] = field(default_factory=dict)  # stack -> (cloud, region)
    shared: dict[str, dict] = field(default_factory=dict)  # key/front stack -> its outputs
    fronts: dict[str, list[str]] = field(default_factory=dict)  # front -> the pools it names
    refuse: set[str] = field(default_factory=set)  # regions without capacity for any type

    def holding(self) -> set[str]:
        return {s for s, r in self.state.items() if r} | \
            {s for s, r in self.untracked.items() if r}


# What a region without capacity for any type answers, per cloud (Cloud.refuse).
REFUSED = {"gcp": "gcp_zone_exhausted_details", "aws": "aws_insufficient_capacity",
           "azure": "azure_allocation_failed"}


class Lockstep(SimClock):
    """A simulated clock that is also the lanes' runner (servestack.deploy.pools.Runner):
    lanes are threads, but only one runs at a time, and the next to run is the one whose
    simulated time comes first (ties: the order they were started), so a parallel run is
    the same run every time. A lane that raises (a Crash) stops everything at that moment,
    as a killed process would: the waiting thread re-raises it, the other lanes never run
    again (each is woken only to unwind)."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        super().__init__(start)
        self.cond = threading.Condition()
        self.order: list[int] = []  # participants (thread idents), main thread first
        self.state: dict[int, tuple] = {}  # ("run",) | ("sleep", t) | ("wait", until) | ("done",)
        self.running: int | None = None
        self.error: BaseException | None = None
        self.killed = False

    def _me(self) -> int:
        me = threading.get_ident()
        if me not in self.state:
            self.order.append(me)
            self.state[me] = ("run",)
            self.running = me
        return me

    def _schedule(self) -> None:
        waiting = [p for p in self.order if self.state[p][0] == "wait"
                   and (self.error is not None or self.state[p][1]())]
        if waiting:
            self.running = waiting[0]
        else:
            sleeping = [p for p in self.order if self.state[p][0] == "sleep"]
            if not sleeping:
                raise RuntimeError("lockstep: every participant waits: deadlock")
            self.running = min(sleeping, key=lambda p: self.state[p][1])
            self.t = max(self.t, self.state[self.running][1])
        self.state[self.running] = ("run",)
        self.cond.notify_all()

    def _block(self, me: int) -> None:
        while self.running != me:
            if self.killed and me != self.order[0]:
                raise Crash("killed with the process")
            self.cond.wait()

    def _yield(self, state: tuple) -> None:
        with self.cond:
            me = self._me()
            self.state[me] = state
            self._schedule()
            self._block(me)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self._yield(("sleep", self.t + seconds))

    def advance(self, seconds: float) -> None:
        self._yield(("sleep", self.t + seconds))

    # --- the Runner --------------------------------------------------------------------------

    def spawn(self, name: str, work) -> None:
        with self.cond:
            self._me()
        started = threading.Event()

        def body() -> None:
            me = threading.get_ident()
            with self.cond:
                self.order.append(me)
                self.state[me] = ("sleep", self.t)  # runnable now, after the spawner
                started.set()
                try:
                    self._block(me)
                except Crash:
                    self.state[me] = ("done",)
                    return
            try:
                work()
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                with self.cond:
                    self.error = self.error or exc
            with self.cond:
                self.state[me] = ("done",)
                if not self.killed:
                    self._schedule()

        thread = threading.Thread(target=body, name=name, daemon=True)
        thread.start()
        started.wait()

    def notify(self) -> None:
        pass  # waits are re-checked at every switch

    def wait(self, until) -> None:
        self._yield(("wait", until))
        if self.error is not None:
            error, self.error = self.error, None
            with self.cond:
                self.killed = True
                self.cond.notify_all()
            raise error

    def kill(self) -> None:
        """The process died in the main thread: the lanes unwind and never run again."""
        with self.cond:
            self.killed = True
            self.cond.notify_all()

    def join(self) -> None:
        main = threading.get_ident()
        self.wait(lambda: all(self.state[p][0] == "done" for p in self.order if p != main))


class ReplayEngine:
    name = "replay"

    def __init__(self, cloud: Cloud, clock: SimClock, script: dict[str, list[Step]] | None = None,
                 *, destroy_fails: tuple[str, ...] = (), crash_at: int | None = None,
                 limits: list[QuotaLimit] | None = None, ready_in: float = 600.0,
                 can: Capabilities = ALL, no_credentials: dict[str, str] | None = None,
                 per_pool: bool = False) -> None:
        self.cloud, self.clock, self.script = cloud, clock, script or {}
        self.destroy_fails, self.crash_at, self.limits = destroy_fails, crash_at, limits or []
        self.ready_in, self.can = ready_in, can
        self.no_credentials = no_credentials or {}  # cloud -> its no-credentials fixture
        self.calls: list[tuple[str, str]] = []
        self.checked: list[str] = []  # clouds whose credentials were asked for
        # per_pool: a service over several pools holds one stack per region at once; only two
        # stacks of one region (cloud x region) holding resources is a violation
        self.per_pool = per_pool
        self.lock = threading.RLock()  # lanes call it from threads

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
        self.clock.advance(3)
        denied = self._denied(cloud)
        if denied:
            return Identity(cloud, False, error=denied)
        return Identity(cloud, True, who=f"test account of {cloud}")

    def up(self, stack, deployment, *, timeout_s, on_progress=None) -> OpResult:
        where = (deployment.cloud, deployment.region)
        self.cloud.where[stack.name] = where
        others = self.cloud.holding() - {stack.name}
        if self.per_pool:
            others = {o for o in others if self.cloud.where.get(o) == where}
        if others:
            self.cloud.violations.append(f"up {stack.name} while {sorted(others)} hold resources")
        denied = self._denied(deployment.cloud)
        if denied:  # the provider cannot authenticate: nothing is created
            self._call("up", stack.name)
            self.clock.advance(20)
            return OpResult(False, [Diagnostic("error", denied)], "error: update failed",
                            created_any=False)
        steps = self.script.get(stack.candidate_id) or []
        step = steps.pop(0) if steps else Step()
        if deployment.region in self.cloud.refuse:
            step = Step("fail", REFUSED[deployment.cloud], 40)
        resources = self.cloud.state.setdefault(stack.name, set())
        resources.update({"sg", "lb", "template"})
        self.cloud.untracked.setdefault(stack.name, set()).update(step.strays)
        if on_progress:
            on_progress("create security group")
        self._call("up", stack.name)
        if step.kind == "sigterm":  # the CI job is cancelled while `up` runs
            os.kill(os.getpid(), signal.SIGTERM)
        if step.kind == "hang":
            self.clock.advance(timeout_s)
            resources.add("group")
            return OpResult(False, [], "error: update canceled", timed_out=True)
        self.clock.advance(step.seconds)
        if step.kind == "fail":
            return OpResult(False, [Diagnostic("error", fixture_text(step.fixture))],
                            "code: 255\n stdout: Updating ... error: update failed")
        resources.add("group")
        endpoint = f"http://{stack.name}.lb.example"
        self.cloud.running[stack.name] = step.running
        starved = step.running is not None and step.running < 2
        self.cloud.ready_after[endpoint] = float("inf") if starved else self.clock.t + self.ready_in
        return OpResult(True, outputs={"endpoint": endpoint, "candidate_id": stack.candidate_id})

    def outputs(self, stack, deployment) -> dict:
        """A live stack's outputs: its endpoint, the key's secret-store entry, the key."""
        self.calls.append(("outputs", stack.name))
        if not self.cloud.state.get(stack.name):
            return {}
        return {"endpoint": f"http://{stack.name}.lb.example", "api_key": "sk-pool-key",
                "api_key_secret": f"projects/test-project/secrets/{stack.name}-api-key"}

    def group_size(self, stack, deployment) -> int | None:
        self.calls.append(("group_size", stack.name))
        return self.cloud.running.get(stack.name)

    def refresh(self, stack, deployment) -> OpResult:
        self._call("refresh", stack.name)
        self.clock.advance(5)
        denied = self._denied(deployment.cloud)
        return OpResult(False, [Diagnostic("error", denied)]) if denied else OpResult(True)

    def destroy(self, stack, deployment) -> OpResult:
        self._call("destroy", stack.name)
        self.clock.advance(90)
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

    # --- a service's key and front stacks -------------------------------------------------

    def up_shared(self, stack, *, timeout_s) -> OpResult:
        self._call("up_shared", stack.name)
        self.clock.advance(5)
        if stack.kind == "key":
            outputs = self.cloud.shared.get(stack.name) or {"api_key": f"sk-{stack.name}"}
        else:
            pools = [p.stack for p in stack.front.pools]
            missing = [p for p in pools if not self.cloud.state.get(p)]
            if missing:
                self.cloud.violations.append(f"front {stack.name} names {missing}, not up")
            self.cloud.fronts[stack.name] = pools
            outputs = {"endpoint": f"http://{stack.name}.front.example"}
            self.cloud.ready_after[outputs["endpoint"]] = self.clock.now()
        self.cloud.state[stack.name] = {stack.kind}
        self.cloud.where[stack.name] = ("shared", stack.name)
        self.cloud.shared[stack.name] = outputs
        return OpResult(True, outputs=dict(outputs))

    def shared_outputs(self, stack) -> dict:
        self._call("shared_outputs", stack.name)
        return dict(self.cloud.shared.get(stack.name) or {})

    def destroy_shared(self, stack) -> OpResult:
        self._call("destroy_shared", stack.name)
        self.clock.advance(30)
        self.cloud.state.pop(stack.name, None)
        self.cloud.shared.pop(stack.name, None)
        self.cloud.fronts.pop(stack.name, None)
        return OpResult(True)


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


def e2e_skip(duration: str, *, extended: bool = False) -> pytest.MarkDecorator:
    """The skip mark of an end-to-end Terraform test module: it runs with SERVESTACK_E2E=1,
    terraform on PATH and the offline AWS provider; `duration` says what a run costs.
    `extended`: a module whose ground another e2e module covers too; it runs only with
    SERVESTACK_E2E_ALL=1 as well, which keeps CI's time in bounds."""
    reason = None
    if os.environ.get("SERVESTACK_E2E") != "1":
        reason = f"end-to-end Terraform tests run with SERVESTACK_E2E=1 ({duration})"
    elif extended and os.environ.get("SERVESTACK_E2E_ALL") != "1":
        reason = f"an extended end-to-end test: SERVESTACK_E2E_ALL=1 runs it ({duration})"
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


# --- a service over several pools (servestack.deploy.pools) -----------------------------------

SERVICE = "mixtral"


def pool_builder(share: int):
    """A pool's Deployment for `share` replicas, as the deploy builds it (shared key)."""
    from dataclasses import replace

    from servestack.deployment.choices import Choices
    from servestack.placement import Pool
    from servestack.service import key_stack_name, pool_deployment

    def builder(candidate, open_pool):
        pool = Pool(candidate.cloud, candidate.region, candidate.use_spot, share,
                    (candidate.instance_type,), candidate.price_per_hour, (candidate.id,),
                    tuple(candidate.zones))
        return pool_deployment(INPUTS, replace(PLAN, candidates=list(open_pool)), pool,
                               choices=Choices(), stack_prefix=SERVICE,
                               replicas=(share, share), key_stack=key_stack_name(SERVICE))

    return builder


def service_parts():
    """The key stack and a Route 53 front (the test plan's pools are GCP and Azure)."""
    from servestack.deploy.pools import ServiceParts
    from servestack.deployment.choices import Choices
    from servestack.deployment.model import ServiceStack
    from servestack.service import front_plan, front_stack_name, key_stack_name

    choices = Choices(front="route53", domain="mixtral.example.com",
                      hosted_zone_id="Z0123456789ABCDEFGHIJ")
    name = front_stack_name(SERVICE)

    def front(deployments):
        return ServiceStack("front", name, SERVICE,
                            front=front_plan(SERVICE, deployments, choices, stack=name))

    return ServiceParts(build=pool_builder, key=ServiceStack("key", key_stack_name(SERVICE),
                                                             SERVICE),
                        front=front, front_name=name)


@dataclass
class ServiceHarness:
    tmp: Path
    cloud: Cloud = field(default_factory=Cloud)
    lines: list[str] = field(default_factory=list)
    t: float = 1_000_000.0

    def _service(self, kind, settings=None, script=None, crash_at=None):
        from servestack.deploy.layout import service_journal_path
        from servestack.deploy.pools import HedgeSettings, pool_options
        from servestack.deploy.service_journal import ServiceJournal

        self.clock = Lockstep(self.t)
        self.engine = ReplayEngine(self.cloud, self.clock, script, per_pool=True,
                                   crash_at=crash_at)
        self.journal = ServiceJournal.at(service_journal_path(self.tmp, SERVICE), SERVICE)
        return kind(self.engine, self.journal, pool_options(PLAN.candidates), service_parts(),
                    clock=self.clock, settings=settings or HedgeSettings(),
                    probe_factory=probes(self.cloud, self.clock), progress=self.lines.append,
                    runner=self.clock)

    def _ran(self, work):
        try:
            self.outcome = work()
        finally:
            self.clock.kill()
            self.t = self.clock.t
        return self.outcome

    def run(self, *, max_pools=2, spread=True, settings=None, script=None, crash_at=None):
        """A hedged deploy of the test plan's replicas over `max_pools` pools; `crash_at`:
        killed during that engine call."""
        from servestack.deploy.pools import HedgedDeploy
        from servestack.placement import place

        deploy = self._service(HedgedDeploy, settings, script, crash_at)
        pools = place(PLAN, PLAN.replicas, max_pools=max_pools, spread=spread)
        return self._ran(lambda: deploy.run([(f"{p.cloud}-{p.region}", p.replicas)
                                             for p in pools], PLAN.replicas))

    def reconcile(self, script=None):
        """One reconcile pass."""
        from servestack.deploy.reconcile import Reconcile

        service = self._service(Reconcile, script=script)
        return self._ran(lambda: service.run(PLAN))

    def destroy(self):
        from servestack.deploy.pools import Service

        service = self._service(Service)
        return self._ran(service.destroy)

    def stacks(self, state) -> set[str]:
        return {p.stack for p in self.journal.in_state(state)}

    def kept(self) -> list[str]:
        from servestack.deploy.service_journal import PoolState

        return [p.key for p in self.journal.in_state(PoolState.KEPT)]


# the flags of a deploy over two pools of the test plan (GCP: a Route 53 front)
POOLS = ("--max-pools", "2", "--spread", "--front", "route53", "--domain",
         "mixtral.example.com", "--hosted-zone-id", "Z0123456789ABCDEFGHIJ")


class PoolsWorld:
    """The CLI over a service over several pools: one cloud and one lockstep clock shared by
    every command of a test (the seams of servestack.cli.deploy replaced)."""

    def __init__(self, monkeypatch, tmp_path) -> None:
        from servestack.cli import deploy as deploy_cli

        self.cloud, self.clock = Cloud(), Lockstep()
        self.state = tmp_path / "state"
        self.engines: list[ReplayEngine] = []
        monkeypatch.setattr(deploy_cli, "make_engine", self.make_engine)
        monkeypatch.setattr(deploy_cli, "make_clock", lambda: self.clock)
        monkeypatch.setattr(deploy_cli, "make_runner", lambda: self.clock)
        monkeypatch.setattr(deploy_cli, "make_probe_factory",
                            lambda: probes(self.cloud, self.clock))
        monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))  # the per-user locks
        # the embedded example's secret, read from the environment by deploy and reconcile
        monkeypatch.setenv("HF_TOKEN", "hf_stand_in_for_the_deploy_tests")

    def make_engine(self, state, service, project=None, secrets=None):
        engine = ReplayEngine(self.cloud, self.clock, per_pool=True)
        self.engines.append(engine)
        return engine

    def run(self, *argv: str) -> int:
        from servestack.cli.main import main

        plans = ["--catalog-dir", FROZEN_CATALOG] if argv[0] == "deploy" else []
        return main([*argv, "--state-dir", str(self.state), *plans])

    def deploy_single_pool(self, monkeypatch) -> int:
        """`deploy` without --max-pools: the single-pool loop on a plain simulated clock (it
        runs no lanes), the same cloud; later commands keep these seams."""
        from servestack.cli import deploy as deploy_cli

        single = SimClock()
        monkeypatch.setattr(deploy_cli, "make_clock", lambda: single)
        monkeypatch.setattr(deploy_cli, "make_engine",
                            lambda *a, **k: ReplayEngine(self.cloud, single))
        monkeypatch.setattr(deploy_cli, "make_probe_factory", lambda: probes(self.cloud, single))
        return self.run("deploy")


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


class JournalKiller:
    """Counts every journal write of a service over several pools (the service's and every
    pool's) and kills the run (`Crash`) right after the n-th reached the disk."""

    def __init__(self, monkeypatch, kill_at: int | None = None) -> None:
        from servestack.deploy import journal as journal_module
        from servestack.deploy import service_journal as service_journal_module

        self.writes, self.kill_at = 0, kill_at
        for module in (journal_module, service_journal_module):
            monkeypatch.setattr(module, "write_atomic", self.write)

    def write(self, path, text) -> None:
        from servestack.fsutil import write_atomic

        write_atomic(path, text)
        self.writes += 1
        if self.kill_at is not None and self.writes == self.kill_at:
            raise Crash(f"killed after journal write {self.writes}")
