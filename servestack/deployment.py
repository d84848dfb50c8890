"""The deployment model: every decision about what to build, made once, engine-free.

`build_deployment` turns the spec and a chosen candidate (plus same-region fallbacks of the same
plan) into a `Deployment`: instance types in rank order, the spot split, zones, ports and CIDRs
(the clients', SSH's and the service's own network ranges), health-check path and timings, the
boot image, disk, how long to wait for capacity, the bootstrap's inputs, tags. Both engines read
it: the Pulumi components (components/) and the Terraform renderers (servestack/terraform/);
neither decides these again. How a cloud spells a decision, where both engines must spell it
alike, is in servestack/mechanics.py. It round-trips through plain dicts so it can live in a
Pulumi stack's config (`servestack:deployment`) and in the fallback journal.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field, fields
from functools import cache

from servestack.catalog import DATA_DIR, records
from servestack.errors import UserError
from servestack.planner import Candidate
from servestack.spec import ServiceSpec, substitute_envs

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
SSH_PORT = 22
# AWS: instances are InService once launched (the grace period covers the model load), so this
# bounds the wait for GPU capacity only: on timeout the apply fails and the caller can fall back
# to the next candidate instead of waiting on a sold-out instance type. GCP's MIG and Azure's
# scale set do not hold the apply for their VMs (the deploy loop polls readiness), so no wait.
CAPACITY_TIMEOUT = {"aws": "15m", "gcp": None, "azure": None}
AWS_SSM_KEY = "alias/aws/ssm"  # the AWS-managed key SSM SecureStrings are encrypted with
IO2_IOPS = 16000  # only for the "ultra" disk tier (io2 needs provisioned IOPS)
IO2_MAX_IOPS_PER_GIB = 500
AZURE_ADMIN_USER = "servestack"
# Azure VMs have no public IPs: SSH goes through an inbound NAT rule on the balancer, one
# frontend port per VM from this range, forwarded to the SSH port.
AZURE_SSH_NAT_PORTS = (50000, 50099)
AZURE_ZONES_FILE = DATA_DIR / "azure_zones.csv"
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
    key: str | None = None  # AWS: the KMS key (alias) the SecureString is encrypted with


@dataclass(frozen=True, slots=True)
class ImageRef:
    """The boot image. kind "id": exactly the image `id` (resources.image_id: an AMI id, a GCE
    image, an Azure image or gallery resource id). kind "lookup": the image the cloud resolves
    when deploying from the other fields: the newest AMI of `owner` whose name matches `name`
    for `architecture` (AWS), the newest image of `family` in `project` (GCP), the marketplace
    image `publisher`/`offer`/`sku`/`version` (Azure)."""

    kind: str
    id: str | None = None
    owner: str | None = None
    name: str | None = None
    architecture: str | None = None
    project: str | None = None
    family: str | None = None
    publisher: str | None = None
    offer: str | None = None
    sku: str | None = None
    version: str | None = None

    def marketplace(self) -> dict[str, str]:
        """Azure's publisher/offer/sku/version, as both engines' image reference takes it."""
        return {"publisher": self.publisher, "offer": self.offer, "sku": self.sku,
                "version": self.version}


# The GPU images used when the spec names none: NVIDIA driver and CUDA preinstalled, and a
# cloud-init that reads the bootstrap from user data.
DEFAULT_IMAGES = {
    # AWS Deep Learning AMI (NVIDIA driver, PyTorch) on Ubuntu 22.04.
    "aws": ImageRef(kind="lookup", owner="amazon",
                    name="Deep Learning OSS Nvidia Driver AMI GPU PyTorch * (Ubuntu 22.04) *",
                    architecture="x86_64"),
    # Deep Learning VM: Ubuntu 22.04, NVIDIA driver 580, CUDA 12.9. Ubuntu (not the Debian DLVM
    # families) because its cloud-init reads the `user-data` metadata key on GCE.
    "gcp": ImageRef(kind="lookup", project="deeplearning-platform-release",
                    family="common-cu129-ubuntu-2204-nvidia-580"),
    # Ubuntu 22.04 HPC: NVIDIA data-center driver, CUDA, no marketplace plan, Gen2 (which the
    # A100/H100 sizes require). The A10 "NVads A10 v5" sizes need NVIDIA's GRID driver
    # instead: give those an image with `image_id`.
    "azure": ImageRef(kind="lookup", publisher="microsoft-dsvm", offer="ubuntu-hpc", sku="2204",
                      version="latest"),
}
AZURE_IMAGE_ID_PREFIXES = ("/subscriptions/", "/CommunityGalleries/", "/SharedGalleries/")


@dataclass(frozen=True, slots=True)
class NetworkPlan:
    """The address ranges of the network the service creates for itself (None: not created).
    AWS uses the account's default VPC; GCP a VPC (which has no range of its own) with a subnet
    for the VMs and the proxy-only subnet its regional load balancer needs (Google recommends
    a /23); Azure a virtual network with one subnet."""

    vnet: str | None = None
    subnet: str | None = None
    proxy_subnet: str | None = None


NETWORKS = {
    "aws": NetworkPlan(),
    "gcp": NetworkPlan(subnet="10.64.0.0/20", proxy_subnet="10.64.16.0/23"),
    "azure": NetworkPlan(vnet="10.50.0.0/16", subnet="10.50.0.0/24"),
}


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
    disk_iops: int | None  # provisioned IOPS, for the volume types that need them (io2)
    image: ImageRef
    capacity_timeout: str | None  # how long the apply waits for the group's capacity
    network: NetworkPlan
    ssh_port: int
    ssh_nat_ports: tuple[int, int] | None  # Azure: the balancer's frontend ports for SSH
    admin_user: str | None  # Azure: the VMs' admin user (key login only)
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
        values = _checked(cls, data, "")
        values["zones"] = tuple(values["zones"] or ())
        values["instances"] = tuple(InstanceChoice(**_checked(InstanceChoice, i, "instances"))
                                    for i in values["instances"])
        values["allow_cidrs"] = tuple(values["allow_cidrs"] or ())
        values["ssh_cidrs"] = tuple(values["ssh_cidrs"] or ())
        values["ssh_nat_ports"] = tuple(values["ssh_nat_ports"]) \
            if values["ssh_nat_ports"] else None
        for key, kind in (("health", HealthCheck), ("readiness", Readiness),
                          ("image", ImageRef), ("network", NetworkPlan)):
            values[key] = kind(**_checked(kind, values[key], key))
        values["secret"] = SecretRef(**_checked(SecretRef, values["secret"], "secret")) \
            if values["secret"] else None
        return cls(**values)


def _checked(kind: type, data: dict, where: str) -> dict:
    """`data` with exactly the fields of `kind`: a stack config or journal written by another
    version of servestack is refused, not half read."""
    if not isinstance(data, dict):
        raise UserError(f"stack config servestack:deployment{'.' + where if where else ''} "
                        f"is not a mapping")
    names = {f.name for f in fields(kind)}
    unknown, missing = set(data) - names, names - set(data)
    if unknown or missing:
        place = f"servestack:deployment{'.' + where if where else ''}"
        problems = [f"unknown keys: {', '.join(sorted(unknown))}" if unknown else "",
                    f"missing keys: {', '.join(sorted(missing))}" if missing else ""]
        raise UserError(f"stack config {place} has {'; '.join(p for p in problems if p)} "
                        "(written by another servestack version? run `servestack generate` "
                        "again)")
    return dict(data)


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
    disk_type = DISK_TYPES[chosen.cloud][spec.disk_tier]
    return Deployment(
        service=name,
        candidate_id=chosen.id,
        cloud=chosen.cloud,
        region=chosen.region,
        zones=zones_for(chosen),
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
        disk_type=disk_type,
        disk_iops=disk_iops(disk_type, spec.disk_size_gb),
        image=image_ref(chosen.cloud, _image_for(spec.image_id, chosen.region)),
        capacity_timeout=CAPACITY_TIMEOUT[chosen.cloud],
        network=NETWORKS[chosen.cloud],
        ssh_port=SSH_PORT,
        ssh_nat_ports=AZURE_SSH_NAT_PORTS if chosen.cloud == "azure" else None,
        admin_user=AZURE_ADMIN_USER if chosen.cloud == "azure" else None,
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
        return SecretRef(cloud, "ssm", f"/servestack/{service}/{digest}/hf-token",
                         key=AWS_SSM_KEY)
    if cloud == "gcp":
        return SecretRef(cloud, "secret-manager", f"servestack-{service}-{digest}-hf-token")
    vault = f"ss{service.replace('-', '')[:14]}{digest}"  # Key Vault names: 3-24 chars, global
    return SecretRef(cloud, "key-vault", "hf-token", vault=vault)


def zones_for(c: Candidate) -> tuple[str, ...]:
    """The candidate's pinned zone, else its zones; an Azure candidate (the catalog has no
    Azure zones) gets every zone of its region, or none where the region has no zones.

    A size that the subscription cannot get in one of those zones makes Azure refuse the scale
    set (SkuNotAvailable), which the caller treats like any capacity failure.
    """
    if c.zone:
        return (c.zone,)
    if c.zones or c.cloud != "azure":
        return tuple(c.zones)
    return azure_zones().get(c.region, ())


@cache
def azure_zones() -> dict[str, tuple[str, ...]]:
    """Region -> availability zones, from catalog/azure_zones.csv."""
    return {r["region"].strip(): tuple(r["zones"].split())
            for _, r in records(AZURE_ZONES_FILE, ("region", "zones"))}


def image_ref(cloud: str, image_id: str | None) -> ImageRef:
    """The spec's image for the region, else the cloud's default GPU image (DEFAULT_IMAGES).
    On Azure `image_id` is a marketplace URN publisher:offer:sku:version or a resource id."""
    if not image_id:
        return DEFAULT_IMAGES[cloud]
    if cloud != "azure" or image_id.startswith(AZURE_IMAGE_ID_PREFIXES):
        return ImageRef(kind="id", id=image_id)
    parts = image_id.split(":")
    if len(parts) != 4 or not all(parts):
        raise UserError(f"Azure image_id {image_id!r}: expected publisher:offer:sku:version or "
                        "an image, gallery or community gallery resource id")
    publisher, offer, sku, version = parts
    return ImageRef(kind="lookup", publisher=publisher, offer=offer, sku=sku, version=version)


def disk_iops(disk_type: str, size_gb: int) -> int | None:
    """Provisioned IOPS for io2 (at most 500 per GiB); other types come with theirs."""
    return min(IO2_IOPS, IO2_MAX_IOPS_PER_GIB * size_gb) if disk_type == "io2" else None


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
