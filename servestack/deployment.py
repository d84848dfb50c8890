"""The deployment model: every decision about what to build, made once, engine-free.

`build_deployment` turns the spec and a chosen candidate (plus same-region fallbacks of the same
plan) into a `Deployment`: instance types in rank order, the spot split, ports and CIDRs,
health-check path and timings, the bootstrap's inputs, tags. Pulumi components (components/)
read it; nothing downstream decides these again. It round-trips through plain dicts so it can
live in a Pulumi stack's config (`servestack:deployment`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field, fields

from .errors import UserError
from .planner import Candidate
from .spec import ServiceSpec, substitute_envs

VLLM_VERSION = "0.32.0"  # pinned in the bootstrap's venv; overridable with --vllm-version
LISTENER_PORT = 80
IDLE_TIMEOUT_SECONDS = 900  # streamed completions stay open for minutes
HEALTH_INTERVAL_SECONDS = 10
HEALTH_TIMEOUT_SECONDS = 5
HEALTHY_THRESHOLD = 2
UNHEALTHY_THRESHOLD = 3  # a dead replica leaves rotation after about 30 s
VLLM_HEALTH_PATH = "/health"
SECRET_ENV = "HF_TOKEN"
WORLD = "0.0.0.0/0"
GCP_HEALTH_CHECK_RANGES = ("35.191.0.0/16", "130.211.0.0/22")
# disk_tier -> volume type per cloud (SkyPilot's tiers mapped onto each cloud's real types)
DISK_TYPES = {
    "aws": {"low": "gp3", "medium": "gp3", "high": "gp3", "ultra": "io2", "best": "gp3",
            "none": "gp3"},
    "gcp": {"low": "pd-standard", "medium": "pd-balanced", "high": "pd-ssd",
            "ultra": "pd-ssd", "best": "pd-ssd", "none": "pd-balanced"},
    "azure": {"low": "Standard_LRS", "medium": "StandardSSD_LRS", "high": "Premium_LRS",
              "ultra": "Premium_LRS", "best": "Premium_LRS", "none": "StandardSSD_LRS"},
}


@dataclass(frozen=True, slots=True)
class InstanceChoice:
    """One instance type the group may launch, in rank order (the first is the chosen one)."""

    candidate_id: str
    instance_type: str
    accelerator: str
    accelerator_count: int
    price_per_hour: float
    attached_gpu: str | None = None  # GCP N1 hosts: the accelerator type to attach


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """What the load balancer probes, and when a replica is out (or replaced)."""

    path: str
    port: int
    interval_seconds: int = HEALTH_INTERVAL_SECONDS
    timeout_seconds: int = HEALTH_TIMEOUT_SECONDS
    healthy_threshold: int = HEALTHY_THRESHOLD
    unhealthy_threshold: int = UNHEALTHY_THRESHOLD
    grace_period_seconds: int = 1200  # from readiness_probe.initial_delay_seconds


@dataclass(frozen=True, slots=True)
class Readiness:
    """The spec's readiness probe, run by the bootstrap on the VM to gate traffic."""

    path: str
    method: str
    post_data: str | None  # JSON text
    headers: dict
    timeout_seconds: int
    initial_delay_seconds: int


@dataclass(frozen=True, slots=True)
class SecretRef:
    """Where the VM fetches the Hugging Face token at boot: never in user data."""

    cloud: str
    store: str  # "ssm" | "secret-manager" | "key-vault"
    name: str  # SSM parameter name / Secret Manager secret id / Key Vault secret name
    vault: str | None = None  # Azure Key Vault name


@dataclass(frozen=True, slots=True)
class Deployment:
    service: str
    candidate_id: str
    cloud: str
    region: str
    zones: tuple[str, ...]
    instances: tuple[InstanceChoice, ...]
    use_spot: bool
    min_replicas: int
    max_replicas: int
    desired_replicas: int
    on_demand_base: int  # replicas kept on-demand below the spot ones
    capacity_rebalance: bool
    service_port: int
    listener_port: int
    allow_cidrs: tuple[str, ...]
    ssh_cidrs: tuple[str, ...]
    health: HealthCheck
    readiness: Readiness
    disk_size_gb: int
    disk_type: str
    image_id: str | None
    model: str | None
    tensor_parallel_size: int
    vllm_version: str
    setup: str | None
    run: str | None
    envs: dict
    secret: SecretRef | None
    idle_timeout_seconds: int = IDLE_TIMEOUT_SECONDS
    gcp_project: str | None = None
    labels: dict = field(default_factory=dict)

    @property
    def primary(self) -> InstanceChoice:
        return self.instances[0]

    @property
    def tags(self) -> dict[str, str]:
        """Tags/labels on every resource, so a sweeper finds what a candidate left behind."""
        return {**self.labels, "servestack-service": self.service,
                "servestack-candidate": self.candidate_id, "managed-by": "servestack"}

    def to_config(self) -> dict:
        return asdict(self)

    @classmethod
    def from_config(cls, data: dict) -> Deployment:
        values = dict(data)
        values["zones"] = tuple(values.get("zones") or ())
        values["instances"] = tuple(InstanceChoice(**i) for i in values["instances"])
        values["allow_cidrs"] = tuple(values.get("allow_cidrs") or ())
        values["ssh_cidrs"] = tuple(values.get("ssh_cidrs") or ())
        values["health"] = HealthCheck(**values["health"])
        values["readiness"] = Readiness(**values["readiness"])
        values["secret"] = SecretRef(**values["secret"]) if values.get("secret") else None
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise UserError(f"stack config servestack:deployment has unknown keys: "
                            f"{', '.join(sorted(unknown))}")
        return cls(**values)


def build_deployment(spec: ServiceSpec, chosen: Candidate, plan: list[Candidate], *,
                     model: str | None, allow_cidrs: tuple[str, ...] = (WORLD,),
                     ssh_cidrs: tuple[str, ...] = (), gcp_project: str | None = None,
                     vllm_version: str = VLLM_VERSION, service_name: str | None = None
                     ) -> Deployment:
    name = service_name or service_slug(spec.name or "servestack")
    policy = spec.service.replica_policy if spec.service else None
    probe = spec.service.readiness_probe if spec.service else None
    port = spec.port
    min_replicas = max(policy.min_replicas, 1) if policy else 1
    max_replicas = max(policy.max_replicas or min_replicas, min_replicas) if policy \
        else min_replicas
    readiness = _readiness(probe)
    lb_path = readiness.path if readiness.method == "GET" else VLLM_HEALTH_PATH
    return Deployment(
        service=name,
        candidate_id=chosen.id,
        cloud=chosen.cloud,
        region=chosen.region,
        zones=chosen.zones if not chosen.zone else (chosen.zone,),
        instances=tuple(_instance_choices(chosen, plan)),
        use_spot=chosen.use_spot,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        desired_replicas=min_replicas,
        on_demand_base=min(policy.base_ondemand_fallback_replicas, min_replicas)
        if policy and chosen.use_spot else 0,
        capacity_rebalance=chosen.use_spot,
        service_port=port,
        listener_port=LISTENER_PORT,
        allow_cidrs=tuple(allow_cidrs),
        ssh_cidrs=tuple(ssh_cidrs),
        health=HealthCheck(path=lb_path, port=port,
                           grace_period_seconds=readiness.initial_delay_seconds),
        readiness=readiness,
        disk_size_gb=spec.disk_size_gb,
        disk_type=DISK_TYPES[chosen.cloud][spec.disk_tier],
        image_id=_image_for(spec.image_id, chosen.region),
        model=model,
        tensor_parallel_size=chosen.accelerator_count,
        vllm_version=vllm_version,
        setup=spec.setup,
        run=spec.run,
        envs={k: v for k, v in spec.envs.items() if v is not None},
        secret=secret_ref(chosen.cloud, name, chosen.id) if SECRET_ENV in spec.secrets else None,
        gcp_project=gcp_project,
        labels={_label_key(k): _label_value(v) for k, v in spec.labels.items()},
    )


def service_slug(name: str) -> str:
    """A name every cloud accepts in resource names: lowercase, digits, dashes, <= 20 chars."""
    slug = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    slug = re.sub(r"-+", "-", slug)
    if not slug or not slug[0].isalpha():
        slug = f"s-{slug}".rstrip("-")
    return slug[:20].rstrip("-")


def secret_ref(cloud: str, service: str, candidate_id: str) -> SecretRef:
    """One secret per service and candidate, so two stacks never share (or delete) a token."""
    digest = hashlib.sha256(f"{service}/{candidate_id}".encode()).hexdigest()[:8]
    if cloud == "aws":
        return SecretRef(cloud, "ssm", f"/servestack/{service}/{digest}/hf-token")
    if cloud == "gcp":
        return SecretRef(cloud, "secret-manager", f"servestack-{service}-{digest}-hf-token")
    vault = f"ss{service.replace('-', '')[:14]}{digest}"  # Key Vault names: 3-24 chars, global
    return SecretRef(cloud, "key-vault", "hf-token", vault=vault)


def _instance_choices(chosen: Candidate, plan: list[Candidate]) -> list[InstanceChoice]:
    """The chosen type first, then other types of the plan that can share its group.

    They must be in the same cloud, region and zone, with the same spot setting and GPU count
    per VM (the tensor-parallel size), and not need a different host/GPU attachment scheme.
    """
    choices = [_choice(chosen)]
    seen = {chosen.instance_type}
    for other in plan:
        if other.instance_type in seen:
            continue
        if (other.cloud, other.region, other.zone, other.use_spot, other.accelerator_count) != \
                (chosen.cloud, chosen.region, chosen.zone, chosen.use_spot,
                 chosen.accelerator_count):
            continue
        if (other.attached_gpu is None) != (chosen.attached_gpu is None):
            continue
        seen.add(other.instance_type)
        choices.append(_choice(other))
    return choices


def _choice(c: Candidate) -> InstanceChoice:
    return InstanceChoice(candidate_id=c.id, instance_type=c.instance_type,
                          accelerator=c.accelerator, accelerator_count=c.accelerator_count,
                          price_per_hour=c.price_per_hour, attached_gpu=c.attached_gpu)


def _readiness(probe) -> Readiness:
    import json

    if probe is None:
        return Readiness(path="/", method="GET", post_data=None, headers={},
                         timeout_seconds=15, initial_delay_seconds=1200)
    post = json.dumps(probe.post_data, sort_keys=True) if probe.post_data is not None else None
    return Readiness(path=probe.path, method=probe.method, post_data=post,
                     headers=dict(probe.headers), timeout_seconds=probe.timeout_seconds,
                     initial_delay_seconds=probe.initial_delay_seconds)


def _image_for(image_id, region: str) -> str | None:
    if isinstance(image_id, dict):
        return image_id.get(region)
    return image_id


def _label_key(key: str) -> str:
    return re.sub(r"[^a-z0-9_-]", "-", key.lower())[:63]


def _label_value(value: str) -> str:
    return re.sub(r"[^a-z0-9_-]", "-", str(value).lower())[:63]


def model_for(spec: ServiceSpec, model: str | None) -> str | None:
    """The model name with the spec's envs applied (for the default vLLM command)."""
    return substitute_envs(model, spec.envs) if model else None
