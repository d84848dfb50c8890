"""The Engine interface the deploy loop drives, its result types, and declared capabilities."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Literal, Protocol

from servestack.deployment.model import Deployment, ServiceStack
from servestack.planner import Candidate

STACK_NAME_MAX = 100
# `aws:autoscaling/group:Group` (a Pulumi type token) or `aws_autoscaling_group` (Terraform)
IMPORTABLE = re.compile(r"[a-z0-9-]+:[\w/.-]+:\w+|[a-z][a-z0-9]*_[a-z0-9_]+")
ANY = "*"  # a quota limit's region or family that stands for every one without its own


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
    urn: str | None = None  # Pulumi URN or Terraform address of the resource it is about


@dataclass
class OpResult:
    ok: bool
    diagnostics: list[Diagnostic] = field(default_factory=list)
    text: str = ""  # the command's own output or error text
    outputs: dict = field(default_factory=dict)  # secret ones (the API key) in plain text
    timed_out: bool = False
    failed_urns: list[str] = field(default_factory=list)
    # False only when the engine knows the operation began creating no cloud resource (e.g.
    # the provider could not authenticate): then nothing can carry the stack's tags.
    created_any: bool = True

    def error_texts(self) -> list[str]:
        """Most specific first: the provider's error events, then the command's text."""
        errors = [d.message for d in self.diagnostics if d.severity in ("error", "info#err")]
        return [*errors, self.text] if self.text else errors


@dataclass(frozen=True, slots=True)
class Leftover:
    """Something of a candidate that still exists after its stack was destroyed."""

    type: str  # the engine's type token, or the cloud's own resource type when it has none
    name: str
    id: str | None
    where: str  # "state" | "pending" (an interrupted create) | "cloud" (found by its tags)

    @property
    def adoptable(self) -> bool:
        """Found by tags with an import id and a type an engine can import: a Pulumi type
        token or a Terraform resource type, not a cloud's generic "aws ec2"."""
        return self.where == "cloud" and bool(self.id) and bool(IMPORTABLE.fullmatch(self.type))

    @property
    def label(self) -> str:
        return f"{self.type} {self.name}" + (f" ({self.id})" if self.id else "") + \
            f" [{self.where}]"

    def to_json(self) -> dict:
        return asdict(self)


SWEEP_FAILED = "sweep"  # a Leftover of this type: the tag search itself failed


def sweep_failed(error: str) -> Leftover:
    """The search by tags could not run: nothing is proven gone. The error goes in `name`."""
    return Leftover(SWEEP_FAILED, f"tag search failed: {' '.join(error.split())[:200]}", None,
                    "cloud")


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the cloud's credentials are, or why there are none (`servestack check`)."""

    cloud: str
    ok: bool
    who: str = ""  # AWS account and ARN, GCP project and account, Azure subscription and tenant
    error: str = ""

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class QuotaLimit:
    """A quota a probe read: candidates of `cloud` in `region` drawing on quota `family` may
    use at most `value` `unit` together. `ANY` as region: every region without a limit of its
    own; as family: a cap on the cloud's every family (GCP's GPUS_ALL_REGIONS)."""

    cloud: str
    region: str
    family: str
    unit: Literal["vcpus", "gpus"]
    value: float

    def need(self, c: Candidate) -> int:
        """What the candidate's replicas take of this quota."""
        per_vm = c.vcpus if self.unit == "vcpus" else c.accelerator_count
        return per_vm * c.replicas


def parse_limits(cloud: str, unit: Literal["vcpus", "gpus"],
                 found: dict[str, float | None]) -> list[QuotaLimit]:
    """A probe's `{"<region>|<family>": value}` output; a limit it could not read (None) is no
    limit, not a zero one."""
    limits = []
    for key, value in found.items():
        region, family = key.split("|", 1)
        if value is not None:
            limits.append(QuotaLimit(cloud, region, family, unit, float(value)))
    return limits


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an engine can do for one cloud. The loop asks before it calls: a step that is not
    available is skipped, never answered with an empty result."""

    quota_precheck: bool = False  # read quota limits before any attempt (`quota_limits`)
    group_size: bool = False  # count the group's VMs that got capacity (`group_size`)
    cloud_sweep: bool = False  # find what still carries a candidate's tags (`strays`)
    adopt_strays: bool = False  # import such strays so a destroy removes them (`adopt`)
    credentials_check: bool = False  # ask the cloud who the credentials are (`identity`)

    @classmethod
    def of(cls, names: Iterable[str]) -> Capabilities:
        """From the names a probe module declares (its `PROBES`); an unknown name is a
        TypeError at once."""
        return cls(**dict.fromkeys(names, True))

    def __and__(self, other: Capabilities) -> Capabilities:
        """Both sides can: the engine's own abilities and the cloud module's probes."""
        return Capabilities(**{f.name: getattr(self, f.name) and getattr(other, f.name)
                               for f in fields(self)})


ALL = Capabilities(True, True, True, True, True)


class Engine(Protocol):
    name: str

    def capabilities(self, cloud: str) -> Capabilities: ...

    def up(self, stack: StackRef, deployment: Deployment, *, timeout_s: float,
           on_progress: Callable[[str], None] | None = None) -> OpResult: ...

    def refresh(self, stack: StackRef, deployment: Deployment) -> OpResult: ...

    def outputs(self, stack: StackRef, deployment: Deployment) -> dict:
        """The stack's outputs as `up` returns them, secret ones (the API key) in plain text:
        held in memory only, never written, logged or put on a command line."""
        ...

    def destroy(self, stack: StackRef, deployment: Deployment) -> OpResult: ...

    def leftovers(self, stack: StackRef, deployment: Deployment) -> list[Leftover]:
        """What the stack's state still holds (including interrupted creates)."""
        ...

    def strays(self, stack: StackRef, deployment: Deployment) -> list[Leftover]:
        """`cloud_sweep`: what still carries the candidate's tags in the cloud."""
        ...

    def adopt(self, stack: StackRef, deployment: Deployment,
              leftovers: list[Leftover]) -> OpResult:
        """`adopt_strays`: import strays into the stack so the next destroy removes them."""
        ...

    def remove(self, stack: StackRef, deployment: Deployment) -> OpResult: ...

    def quota_limits(self, cloud: str, candidates: list[Candidate]) -> list[QuotaLimit]:
        """`quota_precheck`: the limits the cloud's candidates draw on."""
        ...

    def group_size(self, stack: StackRef, deployment: Deployment) -> int | None:
        """`group_size`: VMs of the stack's group that got capacity; None when this reading
        failed (the loop then goes by readiness alone)."""
        ...

    def identity(self, cloud: str, *, timeout_s: float) -> Identity:
        """`credentials_check`: who the cloud's credentials are, through a read-only probe."""
        ...

    # --- a multi-pool service's own stacks (servestack.service): the key and the front -----

    def up_shared(self, stack: ServiceStack, *, timeout_s: float) -> OpResult:
        """Create or update the key stack or the front stack; `outputs` as `up`'s (the key
        stack's `api_key` in plain text, in memory only). A front reads its pools' stacks by
        reference, so the pools it names must be up."""
        ...

    def shared_outputs(self, stack: ServiceStack) -> dict:
        """The key or front stack's outputs ({} when it does not exist)."""
        ...

    def destroy_shared(self, stack: ServiceStack) -> OpResult:
        """Destroy the key or front stack and remove it; nothing of it left in state."""
        ...
