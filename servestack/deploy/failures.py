"""Why a deploy attempt failed, and what that rules out: one table of real error texts per cloud.

`classify` reads the engine's error diagnostics (and the command's text) for one attempt and
returns a `Failure`: its class, the action the loop takes, and the `Block`s it adds.

    class            action  blocks
    capacity         block   the zone (GCP, AWS spot per zone) or the region: on AWS for the
                             types named, on GCP/Azure for their GPU pools (that GPU on hosts
                             with as many GPUs or more)
    quota            block   the region for that quota family, or the whole cloud (GPUS_ALL_REGIONS)
    credentials      block   the whole cloud
    permission       block   the whole cloud (an opt-in region: that region)
    invalid-config   stop    nothing: trying elsewhere will not help
    throttled        retry   nothing: same candidate again, with backoff
    transient        retry   nothing: same candidate again, with backoff
    timeout          block   the candidate (a GCP MIG without capacity waits instead of failing)
    not-ready        block   the candidate (the stack is up but the replicas never answered)
    unknown          block   the candidate; the text is kept for the report

When several texts match, the class earliest in PRECEDENCE wins: a capacity error wrapped in
Azure's InvalidTemplateDeployment is capacity, not invalid configuration. Rate limits that GCP
words as "Quota exceeded for quota metric" are throttling, not a resource quota.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from functools import lru_cache

from servestack import clouds
from servestack.clouds.base import Rule, rule
from servestack.planner import Candidate

PRECEDENCE = ("credentials", "permission", "capacity", "quota", "invalid-config", "throttled",
              "transient")
ACTIONS = {"capacity": "block", "quota": "block", "credentials": "block", "permission": "block",
           "invalid-config": "stop", "throttled": "retry", "transient": "retry",
           "timeout": "block", "not-ready": "block", "unknown": "block"}
MAX_TEXT = 4000


# Engine-level failures (Pulumi or Terraform), whatever the cloud.
COMMON_RULES = (
    rule("invalid-config", "ProgramError",
          r"Program failed with an unhandled exception|an unhandled error occurred"
          r"|python inline source runtime error|Traceback \(most recent call last\)"),
    rule("invalid-config", "PulumiSetup",
          r"no resource plugin '[^']+' found|failed to load plugin|is not a valid configuration "
          r"key|Missing required configuration variable|passphrase must be set"
          r"|incorrect passphrase|could not be decrypted"
          r"|No value for required variable|Invalid provider configuration"),
    rule("invalid-config", "StackLocked",
          r"the stack is currently locked|Another update is currently in progress"
          r"|Error acquiring the state lock"),
    rule("transient", "Network",
          r"connection reset by peer|connection refused|i/o timeout|TLS handshake timeout"),
)

@dataclass(frozen=True, slots=True)
class Block:
    """A scope the loop will not try again: every field that is set must match a candidate."""

    cloud: str
    region: str | None = None
    zone: str | None = None  # with region: only this zone of it
    instance_types: tuple[str, ...] | None = None
    family: str | None = None  # a quota bucket, see quota_families()
    spot: bool | None = None
    error_class: str = ""
    code: str = ""
    accelerator: str | None = None  # a GPU pool: this GPU, on hosts with >= min_count of them
    min_count: int | None = None

    def applies(self, c: Candidate) -> bool:
        """Does this block cover some or all of candidate `c` (ignoring zones)?"""
        return (self.cloud == c.cloud
                and (self.region is None or self.region == c.region)
                and (self.spot is None or self.spot == c.use_spot)
                and (self.instance_types is None or c.instance_type in self.instance_types)
                and (self.family is None or self.family in quota_families(c))
                and (self.accelerator is None or (c.accelerator == self.accelerator
                                                  and c.accelerator_count >= (self.min_count
                                                                              or 0))))

    @property
    def label(self) -> str:
        where = self.cloud
        if self.region:
            where = f"{self.cloud} {self.zone or self.region}" + (" zone" if self.zone else "")
        parts = [where]
        if self.instance_types:
            parts.append(",".join(self.instance_types))
        if self.accelerator:
            parts.append(f"{self.accelerator}:{self.min_count}+")
        if self.family:
            parts.append(f"quota {self.family}")
        if self.spot is not None:
            parts.append("spot" if self.spot else "on-demand")
        return " ".join(parts)

    def to_json(self) -> dict:
        data = asdict(self)
        data["instance_types"] = list(self.instance_types) if self.instance_types else None
        return data

    @classmethod
    def from_json(cls, data: dict) -> Block:
        values = dict(data)
        types = values.get("instance_types")
        values["instance_types"] = tuple(types) if types else None
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Failure:
    error_class: str
    code: str
    action: str  # "block" | "retry" | "stop"
    message: str  # the line that decided it (one line, short)
    text: str = ""  # everything the engine said, capped at MAX_TEXT
    blocks: tuple[Block, ...] = ()

    @property
    def scope(self) -> str:
        if self.action == "retry":
            return "none (retried)"
        if self.action == "stop":
            return "none (stopped)"
        return "; ".join(b.label for b in self.blocks) or "candidate"

    def to_json(self) -> dict:
        return {"error_class": self.error_class, "code": self.code, "action": self.action,
                "message": self.message, "scope": self.scope,
                "blocks": [b.to_json() for b in self.blocks]}

    @classmethod
    def from_json(cls, data: dict) -> Failure:
        return cls(data["error_class"], data["code"], data["action"], data["message"],
                   blocks=tuple(Block.from_json(b) for b in data.get("blocks") or ()))


def classify(cloud: str, texts: list[str], candidate: Candidate,
             tried_types: tuple[str, ...] = (),
             gpus: dict[str, tuple[str, int]] | None = None) -> Failure:
    """The failure of one attempt on `candidate`, from the engine's error texts (most specific
    first: diagnostics, then the command's output). `tried_types` are the instance types of
    its group, `gpus` their (GPU, count) when they are other candidates' types."""
    found = _first_match(cloud, texts)
    text = _joined(texts)
    if found is None:
        return Failure("unknown", "Unknown", "block", _headline(texts), text,
                       (candidate_block(candidate, "unknown", "Unknown"),))
    rule, source = found
    blocks = _blocks_for(rule, source, candidate, tried_types or (candidate.instance_type,),
                         gpus)
    return Failure(rule.error_class, rule.code, ACTIONS[rule.error_class],
                   _line_of(source, rule.pattern), text, blocks)


def timeout_failure(candidate: Candidate, seconds: float, texts: list[str]) -> Failure:
    """The attempt ran past its timeout: a hung API, or a group waiting for capacity."""
    message = f"no result after {seconds:.0f} s (per-attempt timeout); the attempt was cancelled"
    return Failure("timeout", "AttemptTimeout", "block", message, _joined(texts),
                   (candidate_block(candidate, "timeout", "AttemptTimeout"),))


def group_capacity_failure(candidate: Candidate, tried: tuple[str, ...], message: str,
                           gpus: dict[str, tuple[str, int]] | None = None) -> Failure:
    """The stack is up but its group has no running VM: the cloud had no capacity for it (a
    GCP MIG reports this only in its own status, `pulumi up` does not fail)."""
    blocks = pool_blocks(candidate, tried or (candidate.instance_type,), candidate.zone,
                         "NoInstances", gpus)
    return Failure("capacity", "NoInstances", "block", message, message, blocks)


def not_ready_failure(candidate: Candidate, message: str) -> Failure:
    return Failure("not-ready", "NotReady", "block", message, message,
                   (candidate_block(candidate, "not-ready", "NotReady"),))


def _first_match(cloud: str, texts: list[str]) -> tuple[Rule, str] | None:
    rules = (*clouds.get(cloud).failure_rules, *COMMON_RULES)
    best: tuple[int, Rule, str] | None = None
    for text in texts:
        for candidate_rule in rules:
            if not candidate_rule.pattern.search(text):
                continue
            rank = PRECEDENCE.index(candidate_rule.error_class)
            if best is None or rank < best[0]:
                best = (rank, candidate_rule, text)
    return (best[1], best[2]) if best else None


def _blocks_for(rule: Rule, text: str, c: Candidate, tried: tuple[str, ...],
                gpus: dict[str, tuple[str, int]] | None) -> tuple[Block, ...]:
    kind, code = rule.error_class, rule.code
    if kind in ("credentials", "permission") and rule.scope != "region":
        return (Block(c.cloud, error_class=kind, code=code),)
    if kind == "permission":
        return (Block(c.cloud, c.region, error_class=kind, code=code),)
    if kind == "quota":
        return (_quota_block(rule, text, c),)
    if kind == "capacity":
        return _capacity_blocks(text, c, tried, code, gpus)
    return ()


def _capacity_blocks(text: str, c: Candidate, tried: tuple[str, ...], code: str,
                     gpus: dict[str, tuple[str, int]] | None = None) -> tuple[Block, ...]:
    named = tuple(t for t in tried if re.search(rf"(?<![\w.-]){re.escape(t)}(?![\w.-])", text,
                                                re.IGNORECASE))
    return pool_blocks(c, named or tried, clouds.get(c.cloud).zone_in_error(text, c), code, gpus)


def pool_blocks(c: Candidate, types: tuple[str, ...], zone: str | None, code: str,
                gpus: dict[str, tuple[str, int]] | None = None) -> tuple[Block, ...]:
    """Capacity blocks for the GPU pools of `types`: a zone without room for a host with n of
    a GPU has no room for the bigger hosts of that GPU either, so those are ruled out too
    (GCP's zone resource pools and Azure's GPU clusters are shared by a GPU's machine shapes).
    AWS keeps a capacity pool per instance type and AZ, so there only the types are blocked.
    `gpus` maps instance type -> (GPU, count); types it does not know are blocked by name."""
    if clouds.get(c.cloud).capacity_per_instance_type:
        return (Block(c.cloud, c.region, zone, types, spot=c.use_spot, error_class="capacity",
                      code=code),)
    gpus = {c.instance_type: (c.accelerator, c.accelerator_count), **(gpus or {})}
    smallest: dict[str, int] = {}
    unknown = []
    for name in types:
        if name in gpus:
            gpu, count = gpus[name]
            smallest[gpu] = min(count, smallest.get(gpu, count))
        else:
            unknown.append(name)
    blocks = [Block(c.cloud, c.region, zone, spot=c.use_spot, error_class="capacity", code=code,
                    accelerator=gpu, min_count=count) for gpu, count in smallest.items()]
    if unknown:
        blocks.append(Block(c.cloud, c.region, zone, tuple(unknown), spot=c.use_spot,
                            error_class="capacity", code=code))
    return tuple(blocks)


def _quota_block(found: Rule, text: str, c: Candidate) -> Block:
    if found.scope == "cloud":
        return Block(c.cloud, error_class="quota", code=found.code)
    scope = clouds.get(c.cloud).quota_scope(found, text, c)
    return Block(c.cloud, scope.region, family=scope.family, spot=scope.spot,
                 error_class="quota", code=found.code)


def candidate_block(c: Candidate, error_class: str, code: str) -> Block:
    """Exactly this candidate: its region (and zone), instance type and spot setting."""
    return Block(c.cloud, c.region, c.zone, (c.instance_type,), spot=c.use_spot,
                 error_class=error_class, code=code)


@lru_cache(maxsize=4096)
def quota_families(c: Candidate) -> tuple[str, ...]:
    """The quota buckets a candidate draws from; the first is the one its errors name."""
    return clouds.get(c.cloud).quota_families(c)


def _headline(texts: list[str]) -> str:
    for text in texts:
        for line in text.splitlines():
            line = line.strip()
            if line.lower().startswith("error:") or "error" in line.lower():
                return _short(line)
    return _short(next((t.strip() for t in texts if t.strip()), "no error text"))


def _line_of(text: str, pattern: re.Pattern) -> str:
    match = pattern.search(text)
    if not match:
        return _short(text)
    start = text.rfind("\n", 0, match.start()) + 1
    end = text.find("\n", match.end())
    return _short(text[start:end if end != -1 else None])


def _short(line: str, limit: int = 300) -> str:
    line = " ".join(line.split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _joined(texts: list[str]) -> str:
    joined = "\n".join(t for t in texts if t)
    return joined if len(joined) <= MAX_TEXT else joined[:MAX_TEXT - 3] + "..."
