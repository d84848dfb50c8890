"""Simulate `servestack deploy` against a seeded capacity model: our loop vs SkyServe.

Three policies face the same seeded worlds:

  ours      THE REAL LOOP (servestack.deploy.loop.Fallback) over the real plan of the embedded
            Mixtral spec, through the Engine interface, on a simulated clock: every ranked
            candidate (all instance types, per region), error classes from
            servestack.deploy.failures, a per-attempt timeout (20 min), the AWS Service Quotas
            pre-check, and instance groups that also carry the other open types of the region.
            One attempt builds the whole stack (network, load balancer, group) for all replicas,
            and the candidates are tried one after the other.
  baseline  SkyServe as it places replicas (skypilot-anchor.md sections 5 and 6): `sky serve up`
            launches min_replicas replicas, each an independent `sky launch` started at t=0 in
            parallel (replica_managers.launch_cluster). Each replica walks SkyPilot's failover
            over the plan's candidates: only the cheapest instance type per cloud and GPU:count
            (skypilot#3193), the cheapest launchable location first, the optimizer re-run after
            a region is exhausted (next-cheapest, which may be another region or cloud). Per
            region: the quota pre-check (AWS, and GCP regional quotas: "quota == 0", one second;
            Azure has none, skypilot#10119), then the zones: AWS on-demand asks all zones of the
            region in one attempt, GCP one zone per attempt, Azure one zoneless attempt per
            region. Failures block what FailoverCloudErrorHandlerV2 blocks, per replica: the
            zone (GCP), the zones tried (AWS), the region (Azure), all of GCP for that resource
            on GPUS_ALL_REGIONS. Clouds without credentials are not enabled (`sky check`), so
            the optimizer never picks them. No per-attempt timeout (skypilot#9218): a hung
            region costs the job's own limit. A replica that came up runs the YAML's setup, then
            loads the model; the probe (every 10 s) sees it ready. The service is ready when
            min_replicas replicas are. The controller VM is taken as already running (a
            conservative choice: a first `sky serve up` also launches it).
  baseline_sequential  the previous baseline: SkyPilot-like candidate order and zone-by-zone
            blocking, but through our loop, one service stack per attempt;
            `baseline_sequential_no_precheck` is the same without the quota pre-check.

All run with the same engine behaviour where they share it, the same capacity draws and the same
model load distribution. A `replicas_4` section repeats ours and the SkyServe baseline with
min_replicas = 4 (the plan re-ranked for 4 replicas).

The capacity model (per scenario, seeded): availability per cloud x region x zone x instance
type, scaled by GPU scarcity, a region factor and a scenario-wide tightness; zero quotas per
region and quota family (and GCP's GPUS_ALL_REGIONS); clouds without credentials; regions whose
API hangs. Capacity is a yes/no per pool: a pool with capacity has room for every replica.
Failure texts are the real ones (tests/fixtures/errors). Durations: `TIMES` for our engine and
`SKYPILOT` for SkyServe, each with its source beside it (skypilot-anchor.md section 8,
serving-anchor-2026.md "Cold start", the Pulumi anchor's capacity notes): an AWS ASG fails about
a minute after its capacity error (terraform-provider-aws#33665); a GCP MIG without capacity
waits out its create timeout (10 min); a failed Azure region takes about a minute; a quota check
takes seconds, a doomed attempt much longer (skypilot#10119); load balancers take minutes to
create and delete.

Time to ready = from the start of the run until `min_replicas` replicas answer. Cost premium =
hourly price of what got deployed over the oracle: the cheapest candidate of the full plan
that had capacity, quota, credentials and a working API in that scenario. Scenarios without
any such candidate are redrawn (so every scenario has an oracle). `model_load_share` is the
median share of the time to ready spent loading the model (download, load, warm-up).

    python benchmarks/fallback_sim.py --json            # 1000 scenarios, seed 7
    python benchmarks/fallback_sim.py --scenarios 200 --seed 3
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.fakes

from servestack import clouds
from servestack.deploy.failures import Failure, candidate_block, classify, quota_families
from servestack.deploy.journal import Journal
from servestack.deploy.loop import Fallback, Settings
from servestack.deploy.readiness import ProbeAnswer
from servestack.deployment.build import build_deployment
from servestack.deployment.model import Deployment
from servestack.engine import ANY, Capabilities, Diagnostic, OpResult, QuotaLimit
from servestack.inputs import Inputs, load_inputs
from servestack.planner import Candidate, plan
from tests.fakes import SimClock

# seconds, for our engine. "estimate" marks a figure no public report gives.
TIMES: dict[str, Any] = {
    "overhead": 15,  # estimate: CLI start, plugins, program run, per command
    # estimate: network, firewall, LB before the group (Pulumi anchor: LBs take minutes)
    "setup": {"aws": 150, "gcp": 90, "azure": 90},
    "group_create": 30,  # a GCP MIG exists at once; its VMs come (or not) afterwards
    # the ASG fails ~1 min after its capacity error (terraform-provider-aws#33665); a failed
    # Azure region ~1 min (SkyPilot docs auto-failover example, skypilot-anchor.md section 8)
    "fail_after_setup": {"aws": 60, "azure": 60},
    "group_up": {"aws": 180, "azure": 300},  # estimate: `up` waits for the group's VMs
    "vm_boot": 180,  # estimate, GCP: `up` does not wait (wait_for_instances=False); VMs boot after
    "credentials_fail": 15,  # estimate
    "destroy": {"aws": 150, "gcp": 120, "azure": 240},  # estimate: LB and group deletion
    "refresh": 15,  # estimate
    "leftovers": 20,  # estimate
    "remove": 5,  # estimate
    "probe_stack": 20,  # estimate: one read-only stack (quota pre-check, group size)
    # mean, sd: download ~87 GB of Mixtral safetensors, load, warm up (serving-anchor-2026.md
    # "Cold start": P2P check ~60 s, torch.compile ~70 s, CUDA graphs ~60 s after the download,
    # vllm#19824; ~0.3 GB/s from a persistent disk). Shared by every policy.
    "model_load": (600, 120),
    "hang_cap": 3600,  # a hung API call without a per-attempt timeout: the job's own limit
}
# seconds, for SkyServe's replicas (skypilot-anchor.md sections 5, 6 and 8)
SKYPILOT: dict[str, Any] = {
    # the optimizer, re-run after each exhausted region: 4.35 s in optimize (skypilot#3159)
    "optimize": 5,
    "quota_check": 1,  # check_quota_available: ~1 s (skypilot#10119)
    # a failed attempt, teardown included. AWS on-demand asks all zones of a region at once:
    # "Got error(s) in all zones of us-east-1" 20 s after the launch (skypilot PR #975). GCP,
    # one zone: "GCP needs some time to return an error in case of no capacity (< 30s)"
    # (dstack gcp/compute.py, Pulumi anchor). Azure, one region: ~1 min (SkyPilot docs
    # auto-failover example, 18:24:59 -> 18:25:57).
    "fail": {"aws": 20, "gcp": 30, "azure": 60},
    "launch": 160,  # a single-node `sky launch` that succeeds: median 2:40 (skypilot PR #1092)
    "setup": 180,  # the YAML's conda + pip install vLLM: ~3 min without an image (skypilot#3334)
    "probe_interval": 10,  # ENDPOINT_PROBE_INTERVAL_SECONDS (sky/serve/constants.py)
}
ATTEMPT_TIMEOUT = 1200  # servestack's default --attempt-timeout
# chance that a zone has the GPUs for one 2-GPU VM (x region factor x scenario tightness);
# bigger hosts of the same GPU share the pool and are rarer (SHAPE)
GPU_AVAILABILITY = {"H100": 0.30, "A100-80GB": 0.35, "A100": 0.40, "L40S": 0.55, "L4": 0.60,
                    "A10G": 0.65}
SHAPE = {1: 1.0, 2: 1.0, 4: 0.85, 8: 0.7}
QUOTA_ZERO = {"aws": 0.25, "gcp": 0.25, "azure": 0.30}
GCP_ALL_REGIONS_ZERO = 0.08
NO_CREDENTIALS = 0.10
HANG = 0.02

TEXT = {
    "aws_capacity": "  aws:autoscaling:Group (svc-gpu):\n    error: waiting for Auto Scaling Group "
                    "(svc-gpu) capacity satisfied: scaling activity (0c1f): Failed: We currently "
                    "do not have sufficient {type} capacity in the Availability Zone you "
                    "requested ({zone}). Our system will be working on provisioning additional "
                    "capacity. Launching EC2 instance failed.: provider=aws@7.51.1",
    "aws_quota": "An error occurred (VcpuLimitExceeded) when calling the RunInstances "
                 "operation: You have requested more vCPU capacity than your current vCPU "
                 "limit of 0 allows for the instance bucket that the specified instance type "
                 "belongs to.",
    "aws_credentials": "error: pulumi:providers:aws resource 'default_7_51_1' has a problem: "
                       "No valid credential sources found.",
    "gcp_credentials": "error: google: could not find default credentials. See "
                       "https://developers.google.com/accounts/docs/application-default-"
                       "credentials for more information.",
    "azure_capacity": "error: Status=409 Code=\"SkuNotAvailable\" Message=\"The requested VM "
                      "size for resource 'Following SKUs have failed for Capacity Restrictions: "
                      "{type}' is currently not available in location '{region}'.\"",
    "azure_quota": "Operation could not be completed as it results in exceeding approved "
                   "{family} Cores quota. ErrorCode: OperationNotAllowed",
    "azure_credentials": "DefaultAzureCredential failed to retrieve a token from the included "
                         "credentials. AzureCliCredential: Please run 'az login' to set up an "
                         "account",
}


@dataclass
class World:
    """One scenario: who has capacity, quota and credentials, and which APIs hang."""

    seed: int
    tight: float
    no_credentials: frozenset[str]
    gcp_all_regions_zero: bool
    _cache: dict = field(default_factory=dict)

    def _draw(self, *key) -> float:
        if key not in self._cache:
            self._cache[key] = random.Random("|".join(map(str, (self.seed, *key)))).random()
        return self._cache[key]

    def has_capacity(self, c: Candidate, zone: str | None) -> bool:
        """GCP and Azure: one draw per zone and GPU, so a bigger host of the same GPU is out
        when a smaller one is (a shared pool) and is less likely in. AWS: a capacity pool per
        instance type and zone (AWS's own model), so one draw per type."""
        region = 0.5 + 0.7 * self._draw("region", c.cloud, c.region)
        p = GPU_AVAILABILITY.get(c.accelerator, 0.5) * SHAPE.get(c.accelerator_count, 0.7)
        pool = c.instance_type if c.cloud == "aws" else c.accelerator
        return self._draw("pool", c.cloud, c.region, zone, pool, c.use_spot) < \
            min(0.97, p * region * self.tight)

    def quota_zero(self, c: Candidate) -> bool:
        return (c.cloud == "gcp" and self.gcp_all_regions_zero) or self.region_quota_zero(c)

    def region_quota_zero(self, c: Candidate) -> bool:
        """The region's own quota (what SkyPilot's GCP check reads; not GPUS_ALL_REGIONS)."""
        family = quota_families(c)[0]
        return self._draw("quota", c.cloud, c.region, family) < QUOTA_ZERO[c.cloud]

    def hangs(self, cloud: str, region: str) -> bool:
        return self._draw("hang", cloud, region) < HANG

    def usable(self, c: Candidate) -> bool:
        if c.cloud in self.no_credentials or self.quota_zero(c) or self.hangs(c.cloud, c.region):
            return False
        return any(self.has_capacity(c, z) for z in (clouds.get(c.cloud).zones_for(c) or (None,)))


def model_load(rng: random.Random) -> float:
    mean, sd = TIMES["model_load"]
    return max(120.0, rng.gauss(mean, sd))


def make_world(seed: int) -> World:
    rng = random.Random(f"world|{seed}")
    missing = frozenset(cloud for cloud in ("aws", "gcp", "azure")
                        if rng.random() < NO_CREDENTIALS)
    return World(seed, rng.uniform(0.35, 1.1), missing, rng.random() < GCP_ALL_REGIONS_ZERO)


class SimEngine:
    """The Engine interface over a World, behaving as servestack's components do:

    AWS: `up` waits for the ASG; it fails about a minute after the first failed scaling
    activity (capacity or vCPU quota, in the zone the ASG tried first: terraform-provider-aws
    #33665). GCP: `up` returns once the MIG exists (wait_for_instances=False); without
    capacity or quota its VMs simply never start, which only the group's size shows.
    Azure: the scale set's create fails with SkuNotAvailable / OperationNotAllowed.
    """

    name = "sim"
    # What servestack's Pulumi engine can do per cloud (servestack.components.<cloud>.PROBES);
    # the sweep's cost is part of TIMES["leftovers"], and nothing is ever left to adopt.
    CAPABILITIES = {"aws": Capabilities(quota_precheck=True, group_size=True),
                    "gcp": Capabilities(quota_precheck=True, group_size=True),
                    "azure": Capabilities()}

    def __init__(self, world: World, clock: SimClock, by_type: dict, hang_cap: float) -> None:
        self.world, self.clock, self.by_type, self.hang_cap = world, clock, by_type, hang_cap
        self.launched: dict[str, float] = {}  # stack -> hourly price of the group it launched
        self.running: dict[str, int] = {}
        self.ready_at: dict[str, float] = {}
        self.created: set[str] = set()
        self.load_s: dict[str, float] = {}  # stack -> its model load, seconds
        self.rng = random.Random(f"engine|{world.seed}")

    def up(self, stack, deployment: Deployment, *, timeout_s, on_progress=None) -> OpResult:
        cloud, region = deployment.cloud, deployment.region
        self.clock.t += TIMES["overhead"]
        if cloud in self.world.no_credentials:
            self.clock.t += TIMES["credentials_fail"]
            return self._fail(TEXT[f"{cloud}_credentials"])
        self.created.add(stack.name)
        if self.world.hangs(cloud, region):
            self.clock.t += min(timeout_s, self.hang_cap)
            return OpResult(False, [], "error: update canceled", timed_out=True)
        self.clock.t += TIMES["setup"][cloud]
        members = [self.by_type[(cloud, region, i.instance_type)] for i in deployment.instances]
        if cloud == "gcp":
            return self._gcp_up(stack, deployment, members)
        if self.world.quota_zero(members[0]):
            self.clock.t += TIMES["fail_after_setup"][cloud]
            return self._fail(self._quota_text(members[0]))
        zones: list[str | None] = list(deployment.zones) or [None]
        if cloud == "aws":
            # the ASG's first failed scaling activity fails `up`: one zone decides
            zones = [self.rng.choice(zones)]
        # an Azure scale set without zone balance places VMs in any zone that has capacity
        launched = self._first_with_capacity(members, zones, any_zone=cloud == "azure")
        if launched is None:
            self.clock.t += TIMES["fail_after_setup"][cloud]
            return self._fail(TEXT[f"{cloud}_capacity"].format(
                type=members[0].instance_type, zone=zones[0], region=region))
        self.clock.t += TIMES["group_up"][cloud]
        return self._started(stack, deployment, launched, boot=0.0)

    def _gcp_up(self, stack, deployment: Deployment, members: list[Candidate]) -> OpResult:
        """A regional MIG with BALANCED shape and instance flexibility: any zone, any type."""
        self.clock.t += TIMES["group_create"]
        allowed = [m for m in members if not self.world.quota_zero(m)]
        launched = self._first_with_capacity(allowed, list(deployment.zones) or [None],
                                              any_zone=True)
        if launched is None:
            self.running[stack.name] = 0
            endpoint = f"http://{stack.name}.sim"
            self.ready_at[endpoint] = math.inf
            return OpResult(True, outputs={"endpoint": endpoint})
        return self._started(stack, deployment, launched, boot=TIMES["vm_boot"])

    def _first_with_capacity(self, members, zones, any_zone: bool) -> Candidate | None:
        for member in members:
            hits = [self.world.has_capacity(member, z) for z in zones]
            if any(hits) if any_zone else all(hits):
                return member
        return None

    def _started(self, stack, deployment: Deployment, launched: Candidate, boot: float
                 ) -> OpResult:
        self.launched[stack.name] = launched.price_per_hour * deployment.desired_replicas
        self.running[stack.name] = deployment.desired_replicas
        endpoint = f"http://{stack.name}.sim"
        self.load_s[stack.name] = model_load(self.rng)
        self.ready_at[endpoint] = self.clock.t + boot + self.load_s[stack.name]
        return OpResult(True, outputs={"endpoint": endpoint})

    def _quota_text(self, c: Candidate) -> str:
        family = quota_families(c)[0]
        return TEXT[f"{c.cloud}_quota"].format(family=family)

    @staticmethod
    def _fail(text: str) -> OpResult:
        return OpResult(False, [Diagnostic("error", text)], "error: update failed")

    def capabilities(self, cloud: str) -> Capabilities:
        return self.CAPABILITIES[cloud]

    def group_size(self, stack, deployment) -> int | None:
        self.clock.t += TIMES["probe_stack"]
        return self.running.get(stack.name)

    def refresh(self, stack, deployment) -> OpResult:
        self.clock.t += TIMES["refresh"]
        return OpResult(True)

    def destroy(self, stack, deployment) -> OpResult:
        created = stack.name in self.created
        self.clock.t += TIMES["destroy"][deployment.cloud] if created else TIMES["overhead"]
        self.created.discard(stack.name)
        return OpResult(True)

    def leftovers(self, stack, deployment) -> list:
        self.clock.t += TIMES["leftovers"]
        return []

    def strays(self, stack, deployment) -> list:
        return []

    def adopt(self, stack, deployment, leftovers) -> OpResult:
        return OpResult(True)

    def remove(self, stack, deployment) -> OpResult:
        self.clock.t += TIMES["remove"]
        return OpResult(True)

    def quota_limits(self, cloud: str, candidates: list[Candidate]) -> list[QuotaLimit]:
        """What the pre-check reads (PulumiEngine.quota_limits): AWS Service Quotas and GCP
        Cloud Quotas, one read-only stack each; only zeros matter here."""
        self.clock.t += TIMES["probe_stack"]
        if cloud in self.world.no_credentials:
            return []
        unit: Literal["vcpus", "gpus"] = "vcpus" if cloud == "aws" else "gpus"
        limits = [QuotaLimit(cloud, c.region, quota_families(c)[0], unit, 0.0)
                  for c in candidates if self.world.quota_zero(c)]
        if cloud == "gcp" and self.world.gcp_all_regions_zero:
            limits.append(QuotaLimit(cloud, ANY, ANY, unit, 0.0))
        return limits

    def probes(self, endpoint: str, deployment: Deployment):
        turn = iter(range(10**9))

        def probe() -> ProbeAnswer:
            if self.clock.t < self.ready_at[endpoint]:
                return ProbeAnswer(False, 503, None, "HTTP 503")
            return ProbeAnswer(True, 200, f"replica-{next(turn) % deployment.min_replicas}")

        return probe


# --- policies -------------------------------------------------------------------------------------

@dataclass
class Policy:
    name: str
    candidates: list[Candidate]
    build_pool: bool  # the instance group also lists the other open types of the region
    classifier: Callable[..., Failure] | None  # None: servestack.deploy.failures.classify
    settings: Settings
    hang_cap: float


def ours(ranked: list[Candidate]) -> Policy:
    return Policy("ours", ranked, True, None,  # None: the loop's own classifier
                  Settings(attempt_timeout_s=ATTEMPT_TIMEOUT, quota_precheck=True),
                  TIMES["hang_cap"])


def baseline_sequential(ranked: list[Candidate], precheck: bool = True) -> Policy:
    """The previous baseline: SkyPilot's candidates and blocking, one service stack at a time."""
    per_zone = []
    for c in cheapest_types(ranked):
        if c.cloud == "azure" or c.zone or not c.zones:
            per_zone.append(c)
        else:
            per_zone += [replace(c, id=f"{c.id}-{z}", zone=z, zones=(z,)) for z in c.zones]
    settings = Settings(attempt_timeout_s=TIMES["hang_cap"], quota_precheck=precheck)
    name = "baseline_sequential" if precheck else "baseline_sequential_no_precheck"
    return Policy(name, per_zone, False, zone_by_zone, settings, TIMES["hang_cap"])


def zone_by_zone(cloud: str, texts: list[str], c: Candidate, tried: tuple[str, ...]) -> Failure:
    """SkyPilot-like: any failure blocks the zone tried; credentials block the cloud."""
    found = classify(cloud, texts, c, tried)
    if found.error_class in ("credentials", "throttled", "transient", "invalid-config"):
        return found
    return replace(found, action="block",
                   blocks=(candidate_block(c, found.error_class, found.code),))


def resource_key(c: Candidate) -> tuple:
    return c.cloud, c.accelerator, c.accelerator_count, c.use_spot


def cheapest_types(ranked: list[Candidate]) -> list[Candidate]:
    """SkyPilot's optimizer keeps one instance type per cloud and GPU:count, the cheapest
    (skypilot#3193), in every region that offers it; the plan's order otherwise."""
    cheapest: dict[tuple, str] = {}
    for c in sorted(ranked, key=lambda c: c.price_per_hour):
        cheapest.setdefault(resource_key(c), c.instance_type)
    return [c for c in ranked if cheapest[resource_key(c)] == c.instance_type]


# --- SkyServe -------------------------------------------------------------------------------------

@dataclass
class Attempt:
    candidate: Candidate
    zones: tuple[str | None, ...]  # the zones asked for; (None,): the region (Azure); (): none
    start_s: float
    outcome: str  # up | no-quota (pre-check) | quota | quota-all-regions | capacity | hang


@dataclass
class Replica:
    attempts: list[Attempt]
    placed: Candidate | None
    ready_s: float  # math.inf when it never came up
    load_s: float


def skyserve_launchables(ranked: list[Candidate]) -> list[Candidate]:
    """Every (cloud, region) the optimizer may pick, cheapest first. After each exhausted
    region SkyPilot re-runs the optimizer with the region blocked, which returns the next
    cheapest launchable: the next region of the same cloud or another cloud, by price alone
    (ties by region name, as common.get_region_zones sorts them)."""
    return sorted(cheapest_types(ranked), key=lambda c: (c.price_per_hour, c.cloud, c.region))


def zone_attempts(c: Candidate) -> list[tuple[str | None, ...]]:
    """RetryingVmProvisioner._yield_zones: AWS on-demand asks all zones of the region in one
    attempt (spot: one zone each), GCP one zone per attempt, Azure the region (no zone)."""
    zones = clouds.get(c.cloud).zones_for(c) or ()
    if c.cloud == "azure" or not zones:
        return [(None,)]
    if c.cloud == "aws" and not c.use_spot:
        return [tuple(zones)]
    return [(z,) for z in zones]


def attempt_outcome(world: World, c: Candidate, zones: tuple[str | None, ...]) -> str:
    if c.cloud == "gcp" and world.gcp_all_regions_zero:
        return "quota-all-regions"  # QUOTA_EXCEEDED 'GPUS_ALL_REGIONS': no pre-check sees it
    if world.region_quota_zero(c):
        return "quota"  # only Azure gets here: AWS and GCP regions were pre-checked
    if c.cloud == "azure":
        zones = tuple(clouds.get(c.cloud).zones_for(c) or (None,))  # Azure places it anywhere
    return "up" if any(world.has_capacity(c, z) for z in zones) else "capacity"


def launch_replica(world: World, launchables: list[Candidate], rng: random.Random) -> Replica:
    """One replica's `sky launch` from t=0: SkyPilot's failover with its own blocklist."""
    t, attempts = 0.0, []
    blocked: set[tuple] = set()  # (cloud, region, zone) and, for all regions, (cloud, type)
    for c in launchables:
        if c.cloud in world.no_credentials or (c.cloud, c.instance_type) in blocked:
            continue  # not enabled by `sky check`, or blocked in every region
        t += SKYPILOT["optimize"]
        if c.cloud in ("aws", "gcp"):
            t += SKYPILOT["quota_check"]
            if world.region_quota_zero(c):
                attempts.append(Attempt(c, (), t, "no-quota"))
                continue
        for zones in zone_attempts(c):
            if all((c.cloud, c.region, z) in blocked for z in zones):
                continue
            attempt = Attempt(c, zones, t, "hang" if world.hangs(c.cloud, c.region)
                              else attempt_outcome(world, c, zones))
            attempts.append(attempt)
            if attempt.outcome == "up":
                return replica_up(attempts, c, t + SKYPILOT["launch"], rng)
            if attempt.outcome == "hang":  # no per-attempt timeout (skypilot#9218)
                t += TIMES["hang_cap"]
                break
            t += SKYPILOT["fail"][c.cloud]
            if attempt.outcome == "quota-all-regions":
                blocked.add((c.cloud, c.instance_type))
                break
            blocked.update((c.cloud, c.region, z) for z in zones)
    return Replica(attempts, None, math.inf, math.nan)


def replica_up(attempts: list[Attempt], c: Candidate, up_s: float, rng: random.Random
               ) -> Replica:
    """The YAML's setup, then the model; probing starts once the launch succeeded and runs
    every ENDPOINT_PROBE_INTERVAL_SECONDS, so the first 200 lands on a probe tick."""
    load = model_load(rng)
    interval = SKYPILOT["probe_interval"]
    busy = SKYPILOT["setup"] + load
    return Replica(attempts, c, up_s + math.ceil(busy / interval) * interval, load)


def run_skyserve(world: World, launchables: list[Candidate], replicas: int, seed: str
                 ) -> tuple[Result, list[Replica]]:
    """`sky serve up`: min_replicas independent launches at t=0; ready at the
    min_replicas-th ready replica."""
    launched = [launch_replica(world, launchables, random.Random(f"skyserve|{seed}|{i}"))
                for i in range(replicas)]
    order = sorted(launched, key=lambda r: r.ready_s)
    last = order[replicas - 1]
    attempts = sum(len(r.attempts) for r in launched) / replicas
    if not math.isfinite(last.ready_s):
        return Result(math.inf, None, attempts), launched
    price = sum(r.placed.price_per_hour for r in launched if r.placed)
    return Result(last.ready_s, price, attempts, last.load_s), launched


# --- running --------------------------------------------------------------------------------------

@dataclass
class Result:
    ready_s: float  # math.inf when never ready
    price: float | None
    attempts: float
    load_s: float = math.nan  # the model load of the replica that made the service ready


def run_policy(policy: Policy, world: World, inputs, by_type: dict) -> Result:
    clock = SimClock(start=0.0)
    engine = SimEngine(world, clock, by_type, policy.hang_cap)

    def build(candidate: Candidate, pool: list[Candidate]) -> Deployment:
        return build_deployment(inputs.spec, candidate, pool if policy.build_pool else [candidate],
                                model=inputs.model, service_name="sim")

    classifier = policy.classifier
    loop = Fallback(engine, Journal.memory("sim"), policy.candidates, build, clock=clock,
                    settings=policy.settings, probe_factory=engine.probes,
                    classifier=classifier)
    outcome = loop.run()
    attempts = len(outcome.journal.attempts)
    if outcome.status != "deployed":
        return Result(math.inf, None, attempts)
    live = outcome.journal.live
    assert live is not None  # deployed
    return Result(clock.now(), engine.launched[live.stack], attempts, engine.load_s[live.stack])


def oracle_price(ranked: list[Candidate], world: World) -> float | None:
    prices = [c.total_price_per_hour for c in ranked
              if c.total_price_per_hour is not None and world.usable(c)]
    return min(prices) if prices else None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


def summarise(results: list[Result], oracles: list[float]) -> dict:
    times = [r.ready_s for r in results]
    premiums = [r.price / o - 1 for r, o in zip(results, oracles, strict=True) if r.price]
    ready = [t for t in times if math.isfinite(t)]
    shares = [r.load_s / r.ready_s for r in results if math.isfinite(r.ready_s)]

    def finite(value: float) -> float | None:
        return round(value, 1) if math.isfinite(value) else None

    return {
        "median_s": finite(percentile(times, 0.5)),
        "p90_s": finite(percentile(times, 0.9)),
        "cost_premium": round(statistics.fmean(premiums), 4) + 0.0 if premiums else None,
        "cost_premium_median": round(statistics.median(premiums), 4) + 0.0 if premiums
        else None,
        "ready_fraction": round(len(ready) / len(times), 4),
        "mean_attempts": round(statistics.fmean(r.attempts for r in results), 2),
        "model_load_share_median": round(statistics.median(shares), 3) if shares else None,
    }


def with_replicas(inputs: Inputs, replicas: int) -> Inputs:
    """The same spec with min_replicas = max_replicas = `replicas`."""
    service = inputs.spec.service
    assert service is not None  # the embedded spec is a service
    policy = replace(service.replica_policy, min_replicas=replicas, max_replicas=replicas)
    spec = replace(inputs.spec, service=replace(service, replica_policy=policy))
    return replace(inputs, spec=spec)


@dataclass
class Variant:
    """One spec (a replica count) and its plan; the results of its policies per scenario."""

    inputs: Inputs
    ranked: list[Candidate]
    policies: list[Policy]
    results: dict[str, list[Result]] = field(default_factory=dict)
    oracles: list[float] = field(default_factory=list)

    @property
    def replicas(self) -> int:
        return self.inputs.spec.replicas

    def run(self, world: World, oracle: float) -> None:
        by_type = {(c.cloud, c.region, c.instance_type): c for c in self.ranked}
        self.oracles.append(oracle)
        for policy in self.policies:
            self.results.setdefault(policy.name, []).append(
                run_policy(policy, world, self.inputs, by_type))
        result, _ = run_skyserve(world, skyserve_launchables(self.ranked), self.replicas,
                                 f"{world.seed}|{self.replicas}")
        self.results.setdefault("baseline", []).append(result)

    def summary(self) -> dict:
        return {name: summarise(rs, self.oracles) for name, rs in self.results.items()}


def make_variant(inputs: Inputs, sequential: bool) -> Variant:
    ranked = plan(inputs.spec, inputs.catalog, inputs.facts, model=inputs.model).candidates
    policies = [ours(ranked)]
    if sequential:
        policies += [baseline_sequential(ranked), baseline_sequential(ranked, precheck=False)]
    return Variant(inputs, ranked, policies)


def speedups(summary: dict, slow: str) -> dict:
    return {"median": _ratio(summary[slow]["median_s"], summary["ours"]["median_s"]),
            "p90": _ratio(summary[slow]["p90_s"], summary["ours"]["p90_s"])}


def simulate(scenarios: int, seed: int) -> dict:
    inputs = load_inputs(None)
    main_variant = make_variant(inputs, sequential=True)
    four = make_variant(with_replicas(inputs, 4), sequential=False)
    redrawn, n = 0, 0
    while len(main_variant.oracles) < scenarios:
        world = make_world(seed * 1_000_003 + n)
        n += 1
        oracle, oracle4 = oracle_price(main_variant.ranked, world), oracle_price(four.ranked, world)
        if oracle is None or oracle4 is None:  # the same candidates: both or neither
            redrawn += 1
            continue
        main_variant.run(world, oracle)
        four.run(world, oracle4)
    summary, summary4 = main_variant.summary(), four.summary()
    vs = speedups(summary, "baseline")
    return {"ours": summary["ours"], "baseline": summary["baseline"],
            "baseline_sequential": summary["baseline_sequential"],
            "baseline_sequential_no_precheck": summary["baseline_sequential_no_precheck"],
            "min_replicas": main_variant.replicas,
            "replicas_4": {"ours": summary4["ours"], "baseline": summary4["baseline"],
                           "speedup_median": speedups(summary4, "baseline")["median"],
                           "speedup_p90": speedups(summary4, "baseline")["p90"]},
            "scenarios": scenarios, "seed": seed, "redrawn_without_oracle": redrawn,
            "candidates": len(main_variant.ranked),
            "baseline_launchables": len(skyserve_launchables(main_variant.ranked)),
            "speedup_median": vs["median"], "speedup_p90": vs["p90"],
            "speedup_median_vs_sequential": speedups(summary, "baseline_sequential")["median"],
            "speedup_p90_vs_sequential": speedups(summary, "baseline_sequential")["p90"],
            "target_met": target_met(summary),
            "assumptions": {"times_s": TIMES, "skypilot_times_s": SKYPILOT,
                            "attempt_timeout_s": ATTEMPT_TIMEOUT,
                            "gpu_availability_per_zone": GPU_AVAILABILITY,
                            "zero_quota_per_region_family": QUOTA_ZERO,
                            "gcp_gpus_all_regions_zero": GCP_ALL_REGIONS_ZERO,
                            "cloud_without_credentials": NO_CREDENTIALS,
                            "region_api_hang": HANG}}


def target_met(summary: dict) -> bool:
    """Issue 12: at least 2x faster than SkyServe at the median and p90, at most 5 % over the
    oracle's hourly price."""
    vs = speedups(summary, "baseline")
    premium = summary["ours"]["cost_premium"]
    return all(r is not None and r >= 2.0 for r in vs.values()) and premium is not None \
        and premium <= 0.05


def _ratio(slow: float | None, fast: float | None) -> float | None:
    if slow is None or not fast:
        return None
    return round(slow / fast, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    result = simulate(args.scenarios, args.seed)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    rows = [(name, result[name]) for name in ("ours", "baseline", "baseline_sequential",
                                              "baseline_sequential_no_precheck")]
    rows += [(f"{name} (4 replicas)", result["replicas_4"][name]) for name in ("ours", "baseline")]
    for name, s in rows:
        print(f"{name:32} median {s['median_s']} s  p90 {s['p90_s']} s  cost premium "
              f"{s['cost_premium']:.1%}  ready {s['ready_fraction']:.1%}  attempts "
              f"{s['mean_attempts']}  model load {s['model_load_share_median']:.0%} of the wait")
    print(f"speedup over SkyServe: median {result['speedup_median']}x, p90 "
          f"{result['speedup_p90']}x (target 2x at <= 5 % premium: "
          f"{'met' if result['target_met'] else 'NOT met'}); over the sequential baseline: "
          f"{result['speedup_median_vs_sequential']}x, {result['speedup_p90_vs_sequential']}x; "
          f"{result['scenarios']} scenarios, {result['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
