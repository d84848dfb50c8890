"""Simulate `servestack deploy` against a seeded capacity model: our loop vs a SkyPilot-like one.

Both policies run THE REAL LOOP (servestack.deploy.loop.Fallback) over the real plan of the
embedded Mixtral spec, through the Engine interface, on a simulated clock. Only the policy
differs:

  ours      every ranked candidate (all instance types, per region), error classes from
            servestack.deploy.failures (zone / region+family / whole cloud / stop / retry), a
            per-attempt timeout (20 min), the AWS Service Quotas pre-check, and instance groups
            that also carry the other open types of the same region;
  baseline  only the cheapest instance type per cloud and GPU, one zone per attempt (Azure:
            one region), every failure blocks just that zone (credentials: the whole cloud, as
            SkyPilot does), no per-attempt timeout (a hung API call is only ended by the
            job's own limit). It gets the same quota pre-check as ours (SkyPilot has a
            "quota == 0" check for AWS and GCP), which is the conservative comparison;
            `baseline_no_precheck` is the same policy without it.

Both run with the same engine behaviour, including the check that ends a readiness wait
early when a GCP MIG has no VM at all (servestack's GCP group does not wait for instances).

The capacity model (per scenario, seeded): availability per cloud x region x zone x instance
type, scaled by GPU scarcity, a region factor and a scenario-wide tightness; zero quotas per
region and quota family (and GCP's GPUS_ALL_REGIONS); clouds without credentials; regions whose
API hangs. Failure texts are the real ones (tests/fixtures/errors). Durations, in `TIMES`, come
from the public reports quoted in shared/reference (skypilot-anchor.md section 8, the Pulumi
anchor's capacity notes): an AWS ASG fails about a minute after its capacity error
(terraform-provider-aws#33665); a GCP MIG without capacity waits out its create timeout
(10 min); a failed Azure region takes about a minute; a quota check takes seconds, a doomed
attempt much longer (skypilot#10119); load balancers take minutes to create and delete.

Time to ready = from the start of the run until `min_replicas` replicas answer. Cost premium =
hourly price of what got deployed over the oracle: the cheapest candidate of the full plan
that had capacity, quota, credentials and a working API in that scenario. Scenarios without
any such candidate are redrawn (so every scenario has an oracle).

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
from dataclasses import dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.fakes

from servestack import clouds
from servestack.deploy.failures import Failure, candidate_block, classify, quota_families
from servestack.deploy.journal import Journal
from servestack.deploy.loop import Fallback, Settings
from servestack.deploy.readiness import ProbeAnswer
from servestack.deployment.build import build_deployment
from servestack.deployment.model import Deployment
from servestack.engine import ANY, Capabilities, Diagnostic, OpResult, QuotaLimit
from servestack.inputs import load_inputs
from servestack.planner import Candidate, plan
from tests.fakes import SimClock

# seconds; see the module docstring for the sources
TIMES = {
    "overhead": 15,  # CLI start, plugins, program run, per command
    "setup": {"aws": 150, "gcp": 90, "azure": 90},  # network, firewall, LB before the group
    "group_create": 30,  # a GCP MIG exists at once; its VMs come (or not) afterwards
    "fail_after_setup": {"aws": 60, "azure": 60},  # the capacity / quota error surfaces
    "group_up": {"aws": 180, "azure": 300},  # `up` waits for the group's VMs
    "vm_boot": 180,  # GCP: `up` does not wait (wait_for_instances=False); VMs boot after it
    "credentials_fail": 15,
    "destroy": {"aws": 150, "gcp": 120, "azure": 240},
    "refresh": 15,
    "leftovers": 20,
    "remove": 5,
    "probe_stack": 20,  # one read-only stack (quota pre-check, group size)
    "model_load": (600, 120),  # mean, sd: download ~90 GB of weights, load, warm up
    "hang_cap": 3600,  # a hung API call without a per-attempt timeout: the job's own limit
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
        if c.cloud == "gcp" and self.gcp_all_regions_zero:
            return True
        family = quota_families(c)[0]
        return self._draw("quota", c.cloud, c.region, family) < QUOTA_ZERO[c.cloud]

    def hangs(self, cloud: str, region: str) -> bool:
        return self._draw("hang", cloud, region) < HANG

    def usable(self, c: Candidate) -> bool:
        if c.cloud in self.no_credentials or self.quota_zero(c) or self.hangs(c.cloud, c.region):
            return False
        return any(self.has_capacity(c, z) for z in (clouds.get(c.cloud).zones_for(c) or (None,)))


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
        zones = list(deployment.zones) or [None]
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
        mean, sd = TIMES["model_load"]
        endpoint = f"http://{stack.name}.sim"
        self.ready_at[endpoint] = self.clock.t + boot + max(120.0, self.rng.gauss(mean, sd))
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
        unit = "vcpus" if cloud == "aws" else "gpus"
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
    classifier: object  # None: servestack's own (servestack.deploy.failures.classify)
    settings: Settings
    hang_cap: float


def ours(ranked: list[Candidate]) -> Policy:
    return Policy("ours", ranked, True, None,  # None: the loop's own classifier
                  Settings(attempt_timeout_s=ATTEMPT_TIMEOUT, quota_precheck=True),
                  TIMES["hang_cap"])


def baseline(ranked: list[Candidate], precheck: bool = True) -> Policy:
    cheapest: dict[tuple[str, str], str] = {}
    for c in sorted(ranked, key=lambda c: c.price_per_hour):
        cheapest.setdefault((c.cloud, c.accelerator), c.instance_type)
    kept = [c for c in ranked if cheapest[(c.cloud, c.accelerator)] == c.instance_type]
    per_zone = []
    for c in kept:
        if c.cloud == "azure" or c.zone or not c.zones:
            per_zone.append(c)
        else:
            per_zone += [replace(c, id=f"{c.id}-{z}", zone=z, zones=(z,)) for z in c.zones]
    settings = Settings(attempt_timeout_s=TIMES["hang_cap"], quota_precheck=precheck)
    name = "baseline" if precheck else "baseline_no_precheck"
    return Policy(name, per_zone, False, zone_by_zone, settings, TIMES["hang_cap"])


def zone_by_zone(cloud: str, texts: list[str], c: Candidate, tried: tuple[str, ...]) -> Failure:
    """SkyPilot-like: any failure blocks the zone tried; credentials block the cloud."""
    found = classify(cloud, texts, c, tried)
    if found.error_class in ("credentials", "throttled", "transient", "invalid-config"):
        return found
    return replace(found, action="block",
                   blocks=(candidate_block(c, found.error_class, found.code),))


# --- running --------------------------------------------------------------------------------------

@dataclass
class Result:
    ready_s: float  # math.inf when never ready
    price: float | None
    attempts: int


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
    return Result(clock.now(), engine.launched[live.stack], attempts)


def oracle_price(ranked: list[Candidate], world: World) -> float | None:
    prices = [c.total_price_per_hour for c in ranked if world.usable(c)]
    return min(prices) if prices else None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


def summarise(results: list[Result], oracles: list[float]) -> dict:
    times = [r.ready_s for r in results]
    premiums = [r.price / o - 1 for r, o in zip(results, oracles, strict=True) if r.price]
    ready = [t for t in times if math.isfinite(t)]

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
    }


def simulate(scenarios: int, seed: int) -> dict:
    inputs = load_inputs(None)
    ranked = plan(inputs.spec, inputs.catalog, inputs.facts, model=inputs.model).candidates
    by_type = {(c.cloud, c.region, c.instance_type): c for c in ranked}
    policies = [ours(ranked), baseline(ranked), baseline(ranked, precheck=False)]
    results: dict[str, list[Result]] = {p.name: [] for p in policies}
    oracles: list[float] = []
    redrawn, n = 0, 0
    while len(oracles) < scenarios:
        world = make_world(seed * 1_000_003 + n)
        n += 1
        oracle = oracle_price(ranked, world)
        if oracle is None:
            redrawn += 1
            continue
        oracles.append(oracle)
        for policy in policies:
            results[policy.name].append(run_policy(policy, world, inputs, by_type))
    summary = {name: summarise(rs, oracles) for name, rs in results.items()}
    speedup = _ratio(summary["baseline"]["median_s"], summary["ours"]["median_s"])
    return {"ours": summary["ours"], "baseline": summary["baseline"],
            "baseline_no_precheck": summary["baseline_no_precheck"], "scenarios": scenarios,
            "seed": seed, "redrawn_without_oracle": redrawn, "candidates": len(ranked),
            "baseline_candidates": len(policies[1].candidates),
            "speedup_median": speedup,
            "speedup_p90": _ratio(summary["baseline"]["p90_s"], summary["ours"]["p90_s"]),
            "speedup_median_vs_no_precheck": _ratio(summary["baseline_no_precheck"]["median_s"],
                                                    summary["ours"]["median_s"]),
            "speedup_p90_vs_no_precheck": _ratio(summary["baseline_no_precheck"]["p90_s"],
                                                 summary["ours"]["p90_s"]),
            "assumptions": {"times_s": TIMES, "attempt_timeout_s": ATTEMPT_TIMEOUT,
                            "gpu_availability_per_zone": GPU_AVAILABILITY,
                            "zero_quota_per_region_family": QUOTA_ZERO,
                            "gcp_gpus_all_regions_zero": GCP_ALL_REGIONS_ZERO,
                            "cloud_without_credentials": NO_CREDENTIALS,
                            "region_api_hang": HANG}}


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
    for name in ("ours", "baseline", "baseline_no_precheck"):
        s = result[name]
        print(f"{name:20} median {s['median_s']} s  p90 {s['p90_s']} s  cost premium "
              f"{s['cost_premium']:.1%} (median {s['cost_premium_median']:.1%})  ready "
              f"{s['ready_fraction']:.1%}  attempts {s['mean_attempts']}")
    print(f"speedup (median) {result['speedup_median']}x, p90 {result['speedup_p90']}x over "
          f"{result['scenarios']} scenarios, {result['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
