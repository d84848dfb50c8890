"""The deployment model: what to build, as small typed values that every engine reads.

A `Deployment` holds every decision about one candidate's stack (instance types in rank order,
the spot split, zones, ports and CIDRs, health checks, image, disk, network, bootstrap inputs,
tags). It is built once by `servestack.deployment.build` and read by the Pulumi components and
the Terraform renderers alike, which decide nothing again. It round-trips through plain dicts,
so it can live in a Pulumi stack's config (`servestack:deployment`) and in the deploy journal.

This module holds types and the defaults they carry; no cloud's knowledge and no building.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, fields

from servestack.deployment.choices import (  # noqa: F401 (re-exported)
    DEFAULT_SCALE_TARGETS,
    DOWNSCALE_DELAY_SECONDS,
    SCALE_METRICS,
    UPSCALE_DELAY_SECONDS,
    Choices,
)
from servestack.errors import UserError

LISTENER_PORT = 80
IDLE_TIMEOUT_SECONDS = 900  # streamed completions stay open for minutes
HEALTH_INTERVAL_SECONDS = 10
HEALTH_TIMEOUT_SECONDS = 5
HEALTHY_THRESHOLD = 2
UNHEALTHY_THRESHOLD = 3  # a dead replica leaves rotation after about 30 s
WORLD = "0.0.0.0/0"
# The outputs every stack exports, named alike by both engines, so the deploy loop, `status`
# and CI scripts read them the same way whichever engine ran the stack.
OUTPUT_ENDPOINT = "endpoint"
OUTPUT_GROUP_NAME = "instance_group_name"
OUTPUT_GROUP_ID = "instance_group_id"
OUTPUT_CANDIDATE = "candidate_id"
OUTPUT_PRICE = "price_per_hour"
OUTPUT_REPLICAS = "replicas"
# The generated API key (a secret / sensitive output: the deploy loop's probe reads it in
# memory) and where the secret store keeps it (not secret: `servestack endpoint` prints it).
OUTPUT_API_KEY = "api_key"
OUTPUT_API_KEY_REF = "api_key_secret"
# With --domain but no --dns-zone: the DNS records the user creates ({name, type, value} each).
OUTPUT_DNS_RECORDS = "dns_records"
# A pool's load balancer as a front reaches it (servestack.front): its address (DNS name or
# IP), and on AWS the ALB's ARN (Global Accelerator's endpoint id) and hosted zone id (alias
# records). Every pool stack exports them; the front stack reads them by reference.
OUTPUT_LB_HOST = "lb_host"
OUTPUT_LB_ARN = "lb_arn"
OUTPUT_LB_ZONE_ID = "lb_zone_id"
HTTPS_PORT = 443
# The per-replica gauges the bootstrap's metrics shipper publishes to the cloud's monitoring
# (every 60 s, from vLLM's /metrics), by the metric that reads them. "qps" is shipped only on
# clouds whose load balancer counts no requests (Azure's Standard LB: bytes, packets, SYNs).
SHIPPED_METRICS = {"vllm-waiting": "requests_waiting",  # vllm:num_requests_waiting
                   "vllm-kv-cache": "kv_cache_usage_percent",  # vllm:kv_cache_usage_perc x 100
                   "qps": "requests_per_second"}  # rate of vLLM's /v1 http_requests_total


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
    """Where the VM fetches the service's secrets (one env file) at boot: never in user data."""

    cloud: str
    store: str  # "ssm" | "secret-manager" | "key-vault"
    name: str  # SSM parameter name / Secret Manager secret id / Key Vault secret name
    # Azure: the Key Vault's name when fixed in advance; None when the engine names it (a
    # random suffix kept in state) and passes the name to the VMs at apply time.
    vault: str | None = None
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

    def exact(self) -> str:
        """The image id of kind "id"."""
        return _required(self, "id")

    def ami_lookup(self) -> tuple[str, str, str]:
        """AWS: the owner, name pattern and architecture of the newest matching AMI."""
        return (_required(self, "owner"), _required(self, "name"),
                _required(self, "architecture"))

    def gce_family(self) -> tuple[str, str]:
        """GCP: the project and image family whose newest image boots."""
        return _required(self, "project"), _required(self, "family")

    def marketplace(self) -> dict[str, str]:
        """Azure's publisher/offer/sku/version, as both engines' image reference takes it."""
        return {key: _required(self, key) for key in ("publisher", "offer", "sku", "version")}


def _required(value: object, name: str) -> str:
    """A field that the value's kind must have set: a missing one is a bug, said plainly."""
    found = getattr(value, name)
    if not found:
        raise ValueError(f"{type(value).__name__} has no {name}: {value}")
    return str(found)


# The GPU images used when the spec names none: NVIDIA driver and CUDA preinstalled, and a
# cloud-init that reads the bootstrap from user data.

@dataclass(frozen=True, slots=True)
class NetworkPlan:
    """The address ranges of the network the service creates for itself (None: not created).
    AWS a VPC per stack (`vnet`; clouds.aws carves its public and private subnets); GCP a VPC
    (which has no range of its own) with a subnet for the VMs and the proxy-only subnet its
    regional load balancer needs (Google recommends a /23); Azure a virtual network with one
    subnet."""

    vnet: str | None = None
    subnet: str | None = None
    proxy_subnet: str | None = None

    def range_of(self, name: str) -> str:
        """One range the cloud's network has (`vnet`, `subnet` or `proxy_subnet`)."""
        return _required(self, name)


@dataclass(frozen=True, slots=True)
class Tls:
    """HTTPS on the service's domain, with HTTP redirected to it. `dns_zone` is where the
    stack may write DNS records (AWS: the Route 53 hosted zone id, required there to validate
    the ACM certificate; GCP: a Cloud DNS managed zone name; Azure: a DNS zone resource id);
    None: the stack outputs the records the user creates."""

    domain: str
    dns_zone: str | None = None
    port: int = HTTPS_PORT


@dataclass(frozen=True, slots=True)
class Autoscaling:
    """The group's autoscaler, bounded by the deployment's min and max replicas. `target` is
    per replica, in the metric's unit: requests per second ("qps"), requests waiting
    ("vllm-waiting"), or percent of the KV cache in use ("vllm-kv-cache")."""

    metric: str
    target: float
    upscale_delay_seconds: int = UPSCALE_DELAY_SECONDS
    downscale_delay_seconds: int = DOWNSCALE_DELAY_SECONDS

    @property
    def on_load_balancer(self) -> bool:
        """Whether the signal is the load balancer's request rate (else vLLM's metrics)."""
        return self.metric == "qps"

    @property
    def shipped_metric(self) -> str:
        """The metric's name as the replicas publish it (when they do)."""
        return SHIPPED_METRICS[self.metric]


@dataclass(frozen=True, slots=True)
class WeightCache:
    """--weight-cache: a private bucket in the pool's region that holds the model's weights,
    filled once by the first healthy replica and streamed by later ones (servestack.cache).
    Bucket namespaces are global (S3, GCS, Azure storage accounts), so the bucket's name is
    `prefix` followed by a digest of the account (AWS account id, GCP project id, Azure
    subscription id): the engines and the VMs each derive it, no apply-time value reaches the
    user data. `path` is the model's folder in the bucket; `container` the Azure container."""

    scheme: str  # the URI scheme vLLM's Run:ai streamer reads: "s3" | "gs" | "az"
    prefix: str
    path: str
    container: str | None = None

    def bucket(self, account: str) -> str:
        """The bucket's (Azure: the storage account's) name in `account`."""
        return self.prefix + hashlib.sha256(account.encode()).hexdigest()[:ACCOUNT_DIGEST]


# The account's part of a cache bucket's name: hex digits of its SHA-256 (the VMs compute it
# with sha256sum, Terraform with sha256()).
ACCOUNT_DIGEST = 10


@dataclass(frozen=True, slots=True)
class Deployment:
    service: str
    stack: str  # the Pulumi stack / Terraform directory this deployment is built as
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
    # image_id: docker:IMAGE (SkyPilot's form): the bootstrap runs setup/run (or the default
    # vLLM command) in this container on the cloud's default GPU image; None: on the VM itself.
    container_image: str | None = None
    # The generated API key's secret-store entry: vLLM requires the key (VLLM_API_KEY); None
    # when the user chose an open endpoint (--no-api-key).
    api_key: SecretRef | None = None
    tls: Tls | None = None  # None: plain HTTP on listener_port
    autoscaling: Autoscaling | None = None  # None: a fixed group of desired_replicas
    # replica_policy.dynamic_ondemand_fallback: on-demand replicas stand in while spot
    # capacity is short, and leave when it returns.
    dynamic_ondemand_fallback: bool = False
    # A pool of a service over several pools (servestack.service): the name of the service's
    # key stack, whose `api_key` output this pool stores in its secret store (one key for the
    # whole service, so clients behind the front use one). None: the stack draws its own key.
    shared_api_key: str | None = None
    weight_cache: WeightCache | None = None  # --weight-cache (servestack.deployment.cache)

    @property
    def primary(self) -> InstanceChoice:
        return self.instances[0]

    @property
    def token_secret(self) -> SecretRef:
        """Where the token is kept; only asked of a deployment that has one."""
        if self.secret is None:
            raise ValueError(f"deployment {self.candidate_id} has no token secret")
        return self.secret

    @property
    def api_key_secret(self) -> SecretRef:
        """Where the API key is kept; only asked of a deployment that has one."""
        if self.api_key is None:
            raise ValueError(f"deployment {self.candidate_id} has no API key")
        return self.api_key

    @property
    def endpoint_scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def ssh_nat_range(self) -> tuple[int, int]:
        """The balancer's frontend ports for SSH, on the clouds that forward SSH that way."""
        if self.ssh_nat_ports is None:
            raise ValueError(f"{self.cloud} forwards no SSH through its balancer")
        return self.ssh_nat_ports

    @property
    def scope(self) -> str:
        """The prefix of every physical name: the service and a digest of its stack, so two
        services, or two stacks of one service (blue/green), never share a name in one account,
        project or subscription. Lowercase letters, digits and dashes; at most 27 characters."""
        digest = hashlib.sha256(f"{self.service}/{self.stack}".encode()).hexdigest()[:6]
        return f"{self.service[:20].rstrip('-')}-{digest}"

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
        optional: tuple[tuple[str, type], ...] = (
            ("secret", SecretRef), ("api_key", SecretRef), ("tls", Tls),
            ("autoscaling", Autoscaling), ("weight_cache", WeightCache))
        for key, part in optional:
            values[key] = part(**_checked(part, values[key], key)) if values[key] else None
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


@dataclass(frozen=True, slots=True)
class ServiceStack:
    """One of a multi-pool service's own stacks (servestack.service): "key" draws the API key
    the pools share, "front" gives the pools one endpoint (`front` is its FrontPlan). Engines
    render and apply it beside the pools' stacks (Terraform: a folder next to theirs; Pulumi:
    a stack of the same project)."""

    kind: str  # "key" | "front"
    name: str  # the stack's name (servestack.service.key_stack_name / front_stack_name)
    service: str
    front: object | None = None  # servestack.front.model.FrontPlan for kind "front"
