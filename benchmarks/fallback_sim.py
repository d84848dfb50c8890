"""Simulate `servestack deploy` against a seeded capacity model: our deploys vs SkyServe.

The policies face the same seeded worlds:

  ours      THE REAL HEDGED DEPLOY (servestack.deploy.pools.HedgedDeploy, `deploy --max-pools 2`,
            issue 12) through the Engine interface (SimEngine), its lanes as threads run one at a
            time on the lockstep clock (tests.fakes.Lockstep): the placement
            (servestack.placement.place, default flags: no --spread, so the cheapest pool takes all
            min_replicas); lanes = placed pools + 1 from t=0; a lane beyond the need starts a hedge
            (the next cheapest region, the largest placed share) only within the default hedge
            budget (the placed pools' own hourly price); each pool is the real Fallback over that
            region's candidates, walked only up to the next open region's price (pools.py's
            price_limit: past it the lane lets the region go and moves on); pools are kept as they
            answer until min_replicas do; a lane whose pool gave up claims the next (its replicas
            spill there); the rest are released. Time to ready is when the kept pools answer: no key
            stack (--no-api-key: it holds no cloud resource), an instant front. Released and failed
            groups' VMs are paid for until destroyed (`deploy_premium`, `released_usd_mean`, apart
            from `cost_premium`, which is what the service keeps).
  ours_cached  the same with the issue-12 cold start (--weight-cache): a pre-built image (no
            pip install) and the weights streamed from a bucket of the pool's region (vLLM
            --load-format runai_streamer): S3, GCS, and Azure Blob (az://).
  ours_spread  the same real deploy with --spread (min_replicas round-robin over 2 pools).
  ours_single_pool  the previous `ours`: the real loop over the whole plan, one region holds
            every replica, candidates one after the other (per-attempt timeout 20 min, the AWS
            Service Quotas pre-check, groups that carry the region's other open types).
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
  baseline_cached  what a SkyServe user can do as well: `image_id: docker:...` and
            `vllm serve s3://...` (or gs://, az://) from a bucket of their own: vLLM reads all
            three whoever launched it. Generous to SkyServe: the stream rate is the in-region
            one wherever the replica lands (one user bucket sits in one region).
  baseline_sequential  the older baseline: SkyPilot-like candidate order and zone-by-zone
            blocking, but through our loop, one service stack per attempt;
            `baseline_sequential_no_precheck` is the same without the quota pre-check.

A `replicas_4` section repeats ours, ours_cached and the baselines with min_replicas = 4 (the
plan re-ranked for 4 replicas). Each VM draws its own model load, and a group answers when its
last VM does; this is the only way the replica count reaches the times (see below).

The capacity model (per scenario, seeded, the same for every policy): availability per cloud x
region x zone x instance type, scaled by GPU scarcity, a region factor and a scenario-wide
tightness; zero quotas per region and quota family (and GCP's GPUS_ALL_REGIONS); clouds without
credentials; regions whose API hangs. Capacity is a yes/no per pool: a pool with capacity has
room for every replica (kept as it was: "room for k" would need the parallel SkyServe replicas
to compete for it in time, which this model does not simulate; so --spread can only cost time).
Failure texts are the real ones (tests/fixtures/errors). Durations: `TIMES` for our engine,
`SKYPILOT` for SkyServe and `COLD` for what every replica does after its VM starts, each with
its source beside it (skypilot-anchor.md section 8, serving-anchor-2026.md "Cold start", the
Pulumi anchor's capacity notes; "estimate" where no public figure exists). Every policy pays the
same install (the YAML's setup) and the same model load draw distribution.

Time to ready = from the start of the run until `min_replicas` replicas answer. Cost premium =
hourly price of what the service keeps over the oracle: the cheapest candidate of the full plan
that had capacity, quota, credentials and a working API in that scenario. Scenarios without
any such candidate are redrawn (so every scenario has an oracle). `model_load_share` is the
median share of the time to ready spent loading the model (download, load, warm-up). `target`
says, per policy, whether issue 12's target (2x shorter than SkyServe at the median and p90, at
most 5 % premium) is met and, if not, what the median and p90 would have to be.

    python benchmarks/fallback_sim.py --json            # 1000 scenarios, seed 7 (~110 s)
    python benchmarks/fallback_sim.py --scenarios 200 --seed 3
    python benchmarks/fallback_sim.py --scenarios 300 --max-parallel 4 --hedge-budget 44.08
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
from servestack.deploy.pools import (
    HedgedDeploy,
    HedgeSettings,
    PoolOption,
    ServiceParts,
    default_hedge_budget,
    pool_options,
)
from servestack.deploy.readiness import ProbeAnswer
from servestack.deploy.service_journal import PoolState, ServiceJournal
from servestack.deployment.build import build_deployment
from servestack.deployment.model import Deployment, ServiceStack
from servestack.engine import ANY, Capabilities, Diagnostic, OpResult, QuotaLimit
from servestack.engine.interface import Identity
from servestack.inputs import Inputs, load_inputs
from servestack.placement import place
from servestack.planner import Candidate, Plan, plan
from tests.fakes import Lockstep, SimClock

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
    # vllm#19824; ~0.3 GB/s from a persistent disk). Shared by every policy; COLD splits it.
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
# seconds (and GB, GB/s): what a replica does between its VM starting and its first 200, for
# every policy alike. "Cached" is the issue-12 cold start: a pre-built image and the weights
# streamed from a bucket in the replica's region (vLLM --load-format runai_streamer).
COLD: dict[str, Any] = {
    # the YAML's conda + `pip install vllm` without an image, ~3 min (skypilot#3334), as for
    # SkyServe: servestack runs the same `setup` (its bootstrap pip-installs vLLM otherwise)
    "install": SKYPILOT["setup"],
    # a pre-built image: setup ~1 min instead of ~3 (skypilot#3334, serving-anchor-2026.md
    # "Cold start"). No published pull time of vLLM's container image was found: this figure
    # stands for a VM image with vLLM installed, or a pull that fits in that minute.
    "install_image": 60,
    "model_gb": 87,  # Mixtral 8x7B safetensors (serving-anchor-2026.md "Cold start")
    # vLLM's start once the weights are in the page cache: P2P check ~60 s, weight load ~10 s,
    # torch.compile ~70 s, CUDA graphs ~60 s (vllm#19824)
    "vllm_start": 200,
    # the same without the page-cache weight load (~10 s): the stream below replaces it
    "vllm_start_streamed": 190,
    # mean, sd: the hub download, what TIMES["model_load"] holds beyond vllm_start
    "download": (400, 120),
    # GB/s from a bucket of the replica's region, one VM reading, the lowest of the published
    # figures found, used for every cloud:
    # - S3: 6,269 MB/s, the best of 155 EC2 types, on a 100 Gbps p3dn.24xlarge
    #   (dvassallo/s3-benchmark README, 2019);
    # - the Run:ai streamer: 1.7 GiB/s (= 1.83 GB/s) over 69.3 GiB (run-ai/runai-model-streamer
    #   #135, its own log);
    # - Azure Blob to vLLM's runai_streamer: ~29 GB (27.4 GiB, microsoft/phi-4) in ~10 s, ~2.9
    #   GB/s, on a Standard_NC24ads_A100_v4 from a premium block-blob account (AKS engineering
    #   blog, "Stream Model Weights to NVIDIA GPU (vLLM) from Azure Blob Storage", 2026-07-13,
    #   Azure/AKS website/blog/2026-07-13-runai-streamer-vllm);
    # - Azure Blob, the same streamer: 232.8 GiB in 37.14 s (~6.7 GB/s) on a
    #   Standard_ND96isr_H100_v5 (Azure SDK blog, "Eliminate LLM cold starts: load models up to
    #   6x faster with Azure Blob Storage and Run:AI Model Streamer", 2026-05-19).
    # servestack's Azure cache is a Standard StorageV2 account (clouds.azure.AZURE_CACHE_ACCOUNT),
    # not premium: no published single-VM figure for a standard account was found, so Azure
    # takes the common 1.83 rather than either Azure figure. The Run:ai/NVIDIA benchmark
    # (g5.12xlarge, A10G) has the streamer at 14.34 s vs 47.99 s for the safetensors loader
    # from gp3.
    "stream_gb_s": 1.83,
    # the regional caches servestack builds (--weight-cache, servestack.deployment.cache): S3,
    # GCS and Azure Blob (az://), all read by vLLM's runai_streamer
    "cache_clouds": ("aws", "gcp", "azure"),
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


@dataclass(frozen=True)
class ColdStart:
    """What a replica does after its VM starts: install, then the model. Both variants draw the
    same hub download from the same generator, so a scenario's draws stay aligned."""

    name: str  # "hub" | "cached"
    install_s: float
    cached: bool

    def load(self, rng: random.Random, cloud: str) -> float:
        """The model's part: the weights, then vLLM's start. The hub download is never faster
        than the stream (same bytes over the same NIC), so a cache never slows a replica."""
        mean, sd = COLD["download"]
        download = rng.gauss(mean, sd)
        stream = COLD["model_gb"] / COLD["stream_gb_s"]
        if self.cached and cloud in COLD["cache_clouds"]:
            return COLD["vllm_start_streamed"] + stream
        return COLD["vllm_start"] + max(stream, download)


HUB = ColdStart("hub", COLD["install"], cached=False)
CACHED = ColdStart("cached", COLD["install_image"], cached=True)


def model_load(rng: random.Random, cloud: str = "aws") -> float:
    """The uncached model load: hub download and vLLM's start (TIMES["model_load"])."""
    return HUB.load(rng, cloud)


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

    def __init__(self, world: World, clock: SimClock, by_type: dict, hang_cap: float,
                 cold: ColdStart = HUB, seed: str = "") -> None:
        self.world, self.clock, self.by_type, self.hang_cap = world, clock, by_type, hang_cap
        self.cold = cold
        self.launched: dict[str, float] = {}  # stack -> hourly price of the group it launched
        self.spans: dict[str, list[float]] = {}  # stack -> [VMs started, destroyed (inf)]
        self.running: dict[str, int] = {}
        self.ready_at: dict[str, float] = {}
        self.created: set[str] = set()
        self.load_s: dict[str, float] = {}  # stack -> its model load, seconds
        self.rng = random.Random(f"engine|{world.seed}{seed}")
        self.fronts: set[str] = set()  # front endpoints: every probe is another replica

    def _spend(self, seconds: float) -> None:
        """Time an operation takes. On the lanes' lockstep clock (tests.fakes.Lockstep) time
        passes by yielding, so that the other lanes run meanwhile."""
        advance = getattr(self.clock, "advance", None)
        if advance is None:
            self.clock.t += seconds
        else:
            advance(seconds)

    # --- the key and front stacks (servestack.deploy.pools): no cloud capacity involved ----

    def up_shared(self, stack, *, timeout_s) -> OpResult:
        """Instant: the key stack holds no cloud resource, and the front comes after the pools
        answered, which is where time to ready is measured (its minutes are not counted)."""
        endpoint = f"http://{stack.name}.sim"
        self.ready_at[endpoint] = -math.inf
        self.fronts.add(endpoint)
        return OpResult(True, outputs={"endpoint": endpoint, "api_key": None})

    def shared_outputs(self, stack) -> dict:
        return {}

    def destroy_shared(self, stack) -> OpResult:
        return OpResult(True)

    def up(self, stack, deployment: Deployment, *, timeout_s, on_progress=None) -> OpResult:
        cloud, region = deployment.cloud, deployment.region
        self._spend(TIMES["overhead"])
        if cloud in self.world.no_credentials:
            self._spend(TIMES["credentials_fail"])
            return self._fail(TEXT[f"{cloud}_credentials"])
        self.created.add(stack.name)
        if self.world.hangs(cloud, region):
            self._spend(min(timeout_s, self.hang_cap))
            return OpResult(False, [], "error: update canceled", timed_out=True)
        self._spend(TIMES["setup"][cloud])
        members = [self.by_type[(cloud, region, i.instance_type)] for i in deployment.instances]
        if cloud == "gcp":
            return self._gcp_up(stack, deployment, members)
        if self.world.quota_zero(members[0]):
            self._spend(TIMES["fail_after_setup"][cloud])
            return self._fail(self._quota_text(members[0]))
        zones: list[str | None] = list(deployment.zones) or [None]
        if cloud == "aws":
            # the ASG's first failed scaling activity fails `up`: one zone decides
            zones = [self.rng.choice(zones)]
        # an Azure scale set without zone balance places VMs in any zone that has capacity
        launched = self._first_with_capacity(members, zones, any_zone=cloud == "azure")
        if launched is None:
            self._spend(TIMES["fail_after_setup"][cloud])
            return self._fail(TEXT[f"{cloud}_capacity"].format(
                type=members[0].instance_type, zone=zones[0], region=region))
        self._spend(TIMES["group_up"][cloud])
        return self._started(stack, deployment, launched, boot=0.0)

    def _gcp_up(self, stack, deployment: Deployment, members: list[Candidate]) -> OpResult:
        """A regional MIG with BALANCED shape and instance flexibility: any zone, any type."""
        self._spend(TIMES["group_create"])
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
        # each VM loads the model on its own and the group answers when its last VM does, as
        # SkyServe's replicas each draw their own (before, one draw stood for the whole group,
        # so a group's replica count never changed its time: the replicas_4 run showed the
        # 2-replica times exactly)
        self.load_s[stack.name] = max(self.cold.load(self.rng, deployment.cloud)
                                      for _ in range(deployment.desired_replicas))
        self.spans[stack.name] = [self.clock.t, math.inf]
        self.ready_at[endpoint] = self.clock.t + boot + self.cold.install_s + \
            self.load_s[stack.name]
        return OpResult(True, outputs={"endpoint": endpoint})

    def _quota_text(self, c: Candidate) -> str:
        family = quota_families(c)[0]
        return TEXT[f"{c.cloud}_quota"].format(family=family)

    @staticmethod
    def _fail(text: str) -> OpResult:
        return OpResult(False, [Diagnostic("error", text)], "error: update failed")

    def capabilities(self, cloud: str) -> Capabilities:
        return self.CAPABILITIES[cloud]

    def identity(self, cloud: str, *, timeout_s: float) -> Identity:
        """Not asked: no cloud here has `credentials_check` (the `up` says it instead)."""
        self._spend(TIMES["credentials_fail"])
        missing = cloud in self.world.no_credentials
        return Identity(cloud, not missing, error=TEXT[f"{cloud}_credentials"] if missing else "")

    def outputs(self, stack, deployment: Deployment) -> dict:
        return {"endpoint": f"http://{stack.name}.sim"} if stack.name in self.running else {}

    def group_size(self, stack, deployment) -> int | None:
        self._spend(TIMES["probe_stack"])
        return self.running.get(stack.name)

    def refresh(self, stack, deployment) -> OpResult:
        self._spend(TIMES["refresh"])
        return OpResult(True)

    def destroy(self, stack, deployment) -> OpResult:
        created = stack.name in self.created
        if stack.name in self.spans:  # the VMs go first; the balancer's deletion follows
            self.spans[stack.name][1] = min(self.spans[stack.name][1], self.clock.t)
        self._spend(TIMES["destroy"][deployment.cloud] if created else TIMES["overhead"])
        self.created.discard(stack.name)
        return OpResult(True)

    def leftovers(self, stack, deployment) -> list:
        self._spend(TIMES["leftovers"])
        return []

    def strays(self, stack, deployment) -> list:
        return []

    def adopt(self, stack, deployment, leftovers) -> OpResult:
        return OpResult(True)

    def remove(self, stack, deployment) -> OpResult:
        self._spend(TIMES["remove"])
        return OpResult(True)

    def quota_limits(self, cloud: str, candidates: list[Candidate]) -> list[QuotaLimit]:
        """What the pre-check reads (PulumiEngine.quota_limits): AWS Service Quotas and GCP
        Cloud Quotas, one read-only stack each; only zeros matter here."""
        self._spend(TIMES["probe_stack"])
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
            n = next(turn)
            replica = n if endpoint in self.fronts else n % deployment.min_replicas
            return ProbeAnswer(True, 200, f"replica-{replica}")

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


def ours_single_pool(ranked: list[Candidate]) -> Policy:
    """The deploy before issue 12: one region holds every replica, candidates one by one."""
    return Policy("ours_single_pool", ranked, True, None,  # None: the loop's own classifier
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


def launch_replica(world: World, launchables: list[Candidate], rng: random.Random,
                   cold: ColdStart = HUB) -> Replica:
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
                return replica_up(attempts, c, t + SKYPILOT["launch"], rng, cold)
            if attempt.outcome == "hang":  # no per-attempt timeout (skypilot#9218)
                t += TIMES["hang_cap"]
                break
            t += SKYPILOT["fail"][c.cloud]
            if attempt.outcome == "quota-all-regions":
                blocked.add((c.cloud, c.instance_type))
                break
            blocked.update((c.cloud, c.region, z) for z in zones)
    return Replica(attempts, None, math.inf, math.nan)


def replica_up(attempts: list[Attempt], c: Candidate, up_s: float, rng: random.Random,
               cold: ColdStart = HUB) -> Replica:
    """The YAML's setup, then the model; probing starts once the launch succeeded and runs
    every ENDPOINT_PROBE_INTERVAL_SECONDS, so the first 200 lands on a probe tick."""
    load = cold.load(rng, c.cloud)
    interval = SKYPILOT["probe_interval"]
    busy = cold.install_s + load
    return Replica(attempts, c, up_s + math.ceil(busy / interval) * interval, load)


def run_skyserve(world: World, launchables: list[Candidate], replicas: int, seed: str,
                 cold: ColdStart = HUB) -> tuple[Result, list[Replica]]:
    """`sky serve up`: min_replicas independent launches at t=0; ready at the
    min_replicas-th ready replica. `cold`: what a SkyServe user can do as well (CACHED: the
    YAML's `image_id: docker:...` and `vllm serve s3://...` from their own bucket)."""
    launched = [launch_replica(world, launchables, random.Random(f"skyserve|{seed}|{i}"), cold)
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
    price: float | None  # hourly, of what the service keeps
    attempts: float
    load_s: float = math.nan  # the model load of the replica that made the service ready
    # the hedged deploy only: hourly price of every group whose VMs ran before the service was
    # ready (kept or not), and the dollars spent on the groups it released
    deploy_price: float | None = None
    released_usd: float = 0.0
    hedged: bool = False  # a hedge pool was started


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


# --- the hedged multi-pool deploy (servestack.deploy.pools.HedgedDeploy) -------------------------
# An earlier model of this orchestration (`ours_model`, written before pools.py landed) and its
# capped variants (`ours_capped*`, the prototype of pools.py's price cap) were removed once the
# real code capped its lanes: every hedged figure now comes from HedgedDeploy itself.

@dataclass(frozen=True)
class Hedge:
    """The multi-pool deploy's flags; the defaults are the CLI's (issue 12)."""

    max_pools: int = 2  # --max-pools
    spread: bool = False  # --spread is off by default: the cheapest pool takes what it can
    max_parallel: int | None = None  # lanes; None: placed pools + 1 (HedgeSettings)
    hedge_budget: float | None = None  # USD/h; None: the placement's own (HedgeSettings)

    def settings(self) -> HedgeSettings:
        lane = Settings(attempt_timeout_s=ATTEMPT_TIMEOUT, quota_precheck=True)
        return HedgeSettings(self.max_parallel, self.hedge_budget, lane)


@dataclass(frozen=True)
class HedgeStart:
    """How the real deploy starts: the placed pools, then every other region in rank order
    (the order HedgedDeploy claims them in), its lanes and its hedge budget."""

    pools: list[PoolOption]
    shares: list[int]  # the placed pools' replicas
    lanes: int
    budget: float  # USD/h

    @property
    def placed(self) -> int:
        return len(self.shares)


def hedge_start(the_plan: Plan, replicas: int, hedge: Hedge) -> HedgeStart:
    placed = place(the_plan, replicas, hedge.max_pools, hedge.spread)
    options = {(o.cloud, o.region): o for o in pool_options(the_plan.candidates)}
    first = [options[(p.cloud, p.region)] for p in placed]
    rest = [o for o in options.values() if o not in first]
    budget = hedge.hedge_budget if hedge.hedge_budget is not None else \
        default_hedge_budget(sum(p.price_per_hour * p.replicas for p in placed))
    return HedgeStart(first + rest, [p.replicas for p in placed],
                      hedge.settings().lanes(len(placed), len(options)), budget)


# --- the real hedged deploy (servestack.deploy.pools.HedgedDeploy) ------------------------------

def real_hedged(world: World, inputs: Inputs, the_plan: Plan, by_type: dict, cold: ColdStart,
                hedge: Hedge) -> Result:
    """servestack's own hedged deploy, through the Engine interface: HedgedDeploy with its
    lanes as threads run one at a time on the lockstep clock (tests.fakes.Lockstep), the
    placement's pools, the CLI's default HedgeSettings (lanes = placed + 1, the default hedge
    budget) and each lane's Fallback settings as `ours_single_pool`'s. No key stack (its cost
    is one instant `up`); the front is instant (time to ready is when the kept pools answer)."""
    clock = Lockstep(0.0)
    engine = SimEngine(world, clock, by_type, TIMES["hang_cap"], cold, seed="|hedged")
    replicas = inputs.spec.replicas
    shares: dict[int, Inputs] = {}

    def builder(share: int):
        spec = shares.setdefault(share, with_replicas(inputs, share))
        return lambda c, group: build_deployment(spec.spec, c, group, model=spec.model,
                                                 service_name="sim")

    parts = ServiceParts(build=builder, key=None, front_name="sim-front",
                         front=lambda pools: ServiceStack("front", "sim-front", "sim"))
    settings = hedge.settings()
    placed = place(the_plan, replicas, hedge.max_pools, hedge.spread)
    deploy = HedgedDeploy(engine, ServiceJournal("sim", None), pool_options(the_plan.candidates),
                          parts, clock=clock, settings=settings, probe_factory=engine.probes,
                          runner=clock)
    try:
        outcome = deploy.run([(f"{p.cloud}-{p.region}", p.replicas) for p in placed], replicas)
    finally:
        clock.kill()
    attempts = sum(len(j.attempts) for j in outcome.pool_journals.values())
    kept = outcome.journal.in_state(PoolState.KEPT)
    lanes = [p for p in outcome.journal.pools if p.lane is not None]
    hedged = any(p.lane >= len(placed) for p in lanes if p.lane is not None)
    if outcome.status != "deployed" or not kept:
        return Result(math.inf, None, attempts, hedged=hedged)
    ready = max(p.ready_at or 0.0 for p in kept)
    stacks = {p.stack for p in kept}
    spans = [(start, stop, engine.launched[name], name in stacks)
             for name, (start, stop) in engine.spans.items()]
    last = max(kept, key=lambda p: p.ready_at or 0.0)
    return Result(ready, sum(engine.launched[p.stack] for p in kept if p.stack), attempts,
                  engine.load_s[last.stack] if last.stack else math.nan,
                  deploy_price=sum(price for start, _, price, _ in spans if start < ready),
                  released_usd=sum(price * (min(stop, clock.now()) - start) / 3600
                                   for start, stop, price, keep in spans if not keep),
                  hedged=hedged)


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

    out = {
        "median_s": finite(percentile(times, 0.5)),
        "p90_s": finite(percentile(times, 0.9)),
        "cost_premium": _mean(premiums),
        "cost_premium_median": round(statistics.median(premiums), 4) + 0.0 if premiums
        else None,
        "ready_fraction": round(len(ready) / len(times), 4),
        "mean_attempts": round(statistics.fmean(r.attempts for r in results), 2),
        "model_load_share_median": round(statistics.median(shares), 3) if shares else None,
    }
    if any(r.deploy_price is not None for r in results):
        out.update(hedge_costs(results, oracles))
    return out


def hedge_costs(results: list[Result], oracles: list[float]) -> dict:
    """What the hedged deploy ran on the way: apart from `cost_premium`, which is what it keeps."""
    during = [r.deploy_price / o - 1 for r, o in zip(results, oracles, strict=True)
              if r.deploy_price]
    return {"deploy_premium": _mean(during),  # hourly price of all that ran, over the oracle
            "released_usd_mean": round(statistics.fmean(r.released_usd for r in results), 2),
            "hedged_fraction": round(statistics.fmean(r.hedged for r in results), 4)}


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 4) + 0.0 if values else None


def with_replicas(inputs: Inputs, replicas: int) -> Inputs:
    """The same spec with min_replicas = max_replicas = `replicas`."""
    service = inputs.spec.service
    assert service is not None  # the embedded spec is a service
    policy = replace(service.replica_policy, min_replicas=replicas, max_replicas=replicas)
    spec = replace(inputs.spec, service=replace(service, replica_policy=policy))
    return replace(inputs, spec=spec)


COLDS = {"": HUB, "_cached": CACHED}  # policy-name suffix -> cold start


def hedged_policies(hedge: Hedge, full: bool) -> dict[str, tuple[Hedge, ColdStart]]:
    """The real hedged deploys to run: `ours` and `ours_cached` at the given flags; with
    `full`, `ours_spread` too (the same with --spread)."""
    found = {f"ours{suffix}": (hedge, cold) for suffix, cold in COLDS.items()}
    if full:
        found["ours_spread"] = (replace(hedge, spread=True), HUB)
    return found


@dataclass
class Variant:
    """One spec (a replica count) and its plan; the results of its policies per scenario."""

    inputs: Inputs
    plan: Plan
    policies: list[Policy]  # those that drive the real single-pool loop
    hedge: Hedge  # the real hedged deploy's flags
    hedged: dict[str, tuple[Hedge, ColdStart]]  # name -> a real hedged deploy (hedged_policies)
    results: dict[str, list[Result]] = field(default_factory=dict)
    oracles: list[float] = field(default_factory=list)

    @property
    def replicas(self) -> int:
        return self.inputs.spec.replicas

    @property
    def ranked(self) -> list[Candidate]:
        return self.plan.candidates

    def run(self, world: World, oracle: float) -> None:
        by_type = {(c.cloud, c.region, c.instance_type): c for c in self.ranked}
        self.oracles.append(oracle)
        for policy in self.policies:
            self._add(policy.name, run_policy(policy, world, self.inputs, by_type))
        launchables = skyserve_launchables(self.ranked)
        for name, (hedge, cold) in self.hedged.items():
            self._add(name, real_hedged(world, self.inputs, self.plan, by_type, cold, hedge))
        for suffix, cold in COLDS.items():
            self._add(f"baseline{suffix}", run_skyserve(
                world, launchables, self.replicas, f"{world.seed}|{self.replicas}", cold)[0])

    def _add(self, name: str, result: Result) -> None:
        self.results.setdefault(name, []).append(result)

    def summary(self) -> dict:
        return {name: summarise(rs, self.oracles) for name, rs in self.results.items()}


def make_variant(inputs: Inputs, sequential: bool, hedge: Hedge) -> Variant:
    result = plan(inputs.spec, inputs.catalog, inputs.facts, model=inputs.model)
    policies = [ours_single_pool(result.candidates)]
    if sequential:
        policies += [baseline_sequential(result.candidates),
                     baseline_sequential(result.candidates, precheck=False)]
    return Variant(inputs, result, policies, hedge, hedged_policies(hedge, full=sequential))


def speedups(summary: dict, slow: str, fast: str = "ours") -> dict:
    return {"median": _ratio(summary[slow]["median_s"], summary[fast]["median_s"]),
            "p90": _ratio(summary[slow]["p90_s"], summary[fast]["p90_s"])}


TARGET_SPEEDUP = 2.0  # issue 12: at least 2x shorter than SkyServe, median and p90
TARGET_PREMIUM = 0.05  # at no more than 5 % hourly cost over the oracle


def verdict(summary: dict, fast: str, slow: str) -> dict:
    """Whether `fast` meets issue 12's target against `slow`, and by how much it misses."""
    vs, mine, theirs = speedups(summary, slow, fast), summary[fast], summary[slow]
    premium = mine["cost_premium"]
    met = all(r is not None and r >= TARGET_SPEEDUP for r in vs.values()) and \
        premium is not None and premium <= TARGET_PREMIUM
    out = {"fast": fast, "slow": slow, "speedup_median": vs["median"], "speedup_p90": vs["p90"],
           "cost_premium": premium, "met": met}
    for key in ("median_s", "p90_s"):
        if theirs[key] is not None and mine[key] is not None:
            needed = theirs[key] / TARGET_SPEEDUP
            out[f"needed_{key}"] = round(needed, 1)
            out[f"gap_{key}"] = round(max(0.0, mine[key] - needed), 1)
    return out


def simulate(scenarios: int, seed: int, hedge: Hedge | None = None) -> dict:
    hedge = hedge or Hedge()
    inputs = load_inputs(None)
    main_variant = make_variant(inputs, sequential=True, hedge=hedge)
    four = make_variant(with_replicas(inputs, 4), sequential=False, hedge=hedge)
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
    verdicts = {"ours": verdict(summary, "ours", "baseline"),
                "ours_cached": verdict(summary, "ours_cached", "baseline"),
                "ours_cached_vs_baseline_cached": verdict(summary, "ours_cached",
                                                          "baseline_cached")}
    return {**{name: summary[name] for name in POLICIES},
            "min_replicas": main_variant.replicas,
            "replicas_4": {**{name: summary4[name] for name in POLICIES if name in summary4},
                           "speedup_median": speedups(summary4, "baseline")["median"],
                           "speedup_p90": speedups(summary4, "baseline")["p90"],
                           "target": verdict(summary4, "ours_cached", "baseline")},
            "scenarios": scenarios, "seed": seed, "redrawn_without_oracle": redrawn,
            "candidates": len(main_variant.ranked),
            "baseline_launchables": len(skyserve_launchables(main_variant.ranked)),
            "hedge": hedge_json(main_variant, hedge),
            "speedup_median": vs["median"], "speedup_p90": vs["p90"],
            "speedup_median_vs_single_pool": speedups(summary, "ours_single_pool")["median"],
            "speedup_p90_vs_single_pool": speedups(summary, "ours_single_pool")["p90"],
            "speedup_median_vs_sequential": speedups(summary, "baseline_sequential")["median"],
            "speedup_p90_vs_sequential": speedups(summary, "baseline_sequential")["p90"],
            "target_met": verdicts["ours"]["met"],
            "target_met_cached": verdicts["ours_cached"]["met"],
            "target": verdicts,
            "gap": gap_text(verdicts),
            "assumptions": {"times_s": TIMES, "skypilot_times_s": SKYPILOT, "cold_start": COLD,
                            "attempt_timeout_s": ATTEMPT_TIMEOUT,
                            "gpu_availability_per_zone": GPU_AVAILABILITY,
                            "zero_quota_per_region_family": QUOTA_ZERO,
                            "gcp_gpus_all_regions_zero": GCP_ALL_REGIONS_ZERO,
                            "cloud_without_credentials": NO_CREDENTIALS,
                            "region_api_hang": HANG}}


def hedge_json(variant: Variant, hedge: Hedge) -> dict:
    start = hedge_start(variant.plan, variant.replicas, hedge)
    return {**hedge.__dict__, "lanes": start.lanes, "budget_per_hour": start.budget,
            "placed": [f"{p.cloud} {p.region} x{n}"
                       for p, n in zip(start.pools, start.shares, strict=False)]}


POLICIES = ("ours", "ours_cached", "ours_spread", "ours_single_pool", "baseline",
            "baseline_cached", "baseline_sequential", "baseline_sequential_no_precheck")


def gap_text(verdicts: dict) -> list[str]:
    """One line per verdict: met, or how many seconds the median and p90 are short."""
    lines = []
    for name, v in verdicts.items():
        if v["met"]:
            lines.append(f"{name}: met ({v['speedup_median']}x median, {v['speedup_p90']}x p90)")
            continue
        lines.append(f"{name}: NOT met: {v['speedup_median']}x median, {v['speedup_p90']}x p90, "
                     f"premium {v['cost_premium']}; 2x needs median <= {v.get('needed_median_s')}"
                     f" s (short by {v.get('gap_median_s')} s) and p90 <= "
                     f"{v.get('needed_p90_s')} s (short by {v.get('gap_p90_s')} s)")
    return lines


def target_met(summary: dict) -> bool:
    """Issue 12: at least 2x faster than SkyServe at the median and p90, at most 5 % over the
    oracle's hourly price."""
    return bool(verdict(summary, "ours", "baseline")["met"])


def _ratio(slow: float | None, fast: float | None) -> float | None:
    if slow is None or not fast:
        return None
    return round(slow / fast, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--max-parallel", type=int, default=None,
                        help="the deploy's lanes (default: placed pools + 1)")
    parser.add_argument("--hedge-budget", type=float, default=None,
                        help="USD/h for hedges (default: the placement's own hourly price)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    result = simulate(args.scenarios, args.seed, Hedge(max_parallel=args.max_parallel,
                                                       hedge_budget=args.hedge_budget))
    result["wall_s"] = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    rows = [(name, result[name]) for name in POLICIES]
    rows += [(f"{name} (4 replicas)", result["replicas_4"][name])
             for name in ("ours", "ours_cached", "baseline", "baseline_cached")]
    for name, s in rows:
        hedge = f"  during deploy +{s['deploy_premium']:.1%}, released ${s['released_usd_mean']}" \
            if "deploy_premium" in s else ""
        print(f"{name:32} median {s['median_s']} s  p90 {s['p90_s']} s  cost premium "
              f"{s['cost_premium']:.1%}  ready {s['ready_fraction']:.1%}  attempts "
              f"{s['mean_attempts']}  model load {s['model_load_share_median']:.0%} of the wait"
              f"{hedge}")
    for line in result["gap"]:
        print(line)
    print(f"{result['scenarios']} scenarios, {result['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
