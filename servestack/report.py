"""How a plan is shown: a SkyPilot-like table for people, a stable JSON object for machines;
and, for `generate`, `deploy` and `endpoint`, what a deployment leaves open by the user's
choice (`security_notes`).

With a replica_policy the plan also says what the group will do (`scaling`): the replica
bounds (num_overprovision on top of both, as the deployment builds them), which replicas are
on-demand (base_ondemand_fallback_replicas) and which spot (the rest), the dynamic on-demand
fallback, the hourly cost at min and at max, and the autoscaler's signal. The cost at max
prices the replicas above min at the candidate's own price (they are spot on a spot row: the
on-demand base does not grow).

The plan's `placement` (servestack.placement) is in the JSON always, and under the table as
one "Placement:" line when the replicas go to more than one pool.

The deploy of a service over several pools (servestack.deploy.pools) reports the pools kept
(cloud, region, replicas, $/h), the pools released and what they cost while they were up (the
hedge's cost: replicas x $/h x the time from their first `up` to the end of their cleanup),
the pools that failed, and how long the service took to be ready (`service_deploy_json`,
`service_deploy_table`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from servestack.deployment.choices import replica_range, scale_delays
from servestack.placement import Pool, place
from servestack.planner import Candidate, Plan
from servestack.spec import ServiceSpec

if TYPE_CHECKING:
    from servestack.deploy.journal import Journal
    from servestack.deploy.service_journal import PoolRecord, ServiceJournal
    from servestack.deployment.model import Deployment

PLAN_SCHEMA_VERSION = 1
# "#" is the rank `--candidate N` takes; $/h and TOTAL $/h are ranges when the candidate's
# group may launch dearer (or cheaper) fallback types; "?" is a total the catalog cannot price.
HEADERS = ("#", "INFRA", "INSTANCE", "vCPUs", "Mem(GB)", "GPUS", "$/h", "TOTAL $/h", "CHOSEN")
# With an autoscaling replica_policy: the replica range (on-demand + spot on spot rows) and the
# service's $/h at max_replicas, before CHOSEN; TOTAL $/h stays the cost at min_replicas.
SCALING_HEADERS = ("REPLICAS", "AT MAX $/h")


def plan_json(plan: Plan, spec: ServiceSpec, catalog_dates: dict[str, str]) -> dict:
    """The documented contract (README, "Plan JSON"): candidates best first, then dropped."""
    return {
        "schema_version": PLAN_SCHEMA_VERSION,
        "spec": spec.file,
        "model": plan.model,
        "replicas": plan.replicas,
        "catalog_dates": dict(sorted(catalog_dates.items())),
        "candidates": [{**c.to_json(), "scaling": scaling_of(c, spec).to_json()}
                       for c in plan.candidates],
        "placement": [p.to_json() for p in placement_of(plan)],
        "scaling": policy_json(spec),
        "dropped": [d.to_json() for d in plan.dropped],
        "warnings": list(plan.warnings),
        "notes": list(spec.notes),
    }


def placement_of(plan: Plan) -> list[Pool]:
    """The plan's placement; a plan made without one (the planner alone) has the default:
    every replica in the best candidate's pool."""
    return plan.placement or place(plan, plan.replicas)


def placement_line(pools: list[Pool]) -> str:
    """`Placement: 2 x AWS us-east-1 (g6e.12xlarge, 10.49 $/h), ...`: replicas per pool,
    each pool's chosen type and its price per replica."""
    parts = [f"{p.replicas} x {p.label} ({p.instance_types[0]}, {p.price_per_hour:.2f} $/h)"
             for p in pools]
    return f"Placement: {', '.join(parts)}."


def dump_json(data: dict) -> str:
    return json.dumps(data, indent=2, sort_keys=False) + "\n"


def best_per_group(candidates: list[Candidate]) -> list[Candidate]:
    """One row per (cloud, GPUs, spot): the best-ranked candidate of each group."""
    seen, rows = set(), []
    for candidate in candidates:
        key = (candidate.cloud, candidate.gpus, candidate.use_spot)
        if key not in seen:
            seen.add(key)
            rows.append(candidate)
    return rows


def plan_table(plan: Plan, spec: ServiceSpec, catalog_dates: dict[str, str], *,
               show_all: bool = False, explain: bool = False) -> str:
    rows = plan.candidates if show_all else best_per_group(plan.candidates)
    lines = [_heading(plan, spec, catalog_dates)] + _scaling_lines(spec, rows)
    lines += [f"warning: {w}" for w in plan.warnings] + [f"note: {n}" for n in spec.notes]
    if autoscales(spec):
        lines.append(_table([_scaled_row(c, spec) for c in rows], _scaled_headers()))
    else:
        lines.append(_table([_row(c) for c in rows]))
    lines.append(_footer(plan, len(rows), show_all, explain))
    pools = placement_of(plan)
    if len(pools) > 1:
        lines.append(placement_line(pools))
    if explain:
        lines.append(explain_dropped(plan))
    return "\n".join(lines) + "\n"


def explain_dropped(plan: Plan) -> str:
    if not plan.dropped:
        return "Dropped: nothing."
    out = ["Dropped:"]
    for d in plan.dropped:
        where = "/".join(p for p in (d.cloud, d.region, d.instance_type) if p)
        out.append(f"  - {d.what}" + (f" ({where})" if where else "") + f": {d.reason}")
    return "\n".join(out)


def _heading(plan: Plan, spec: ServiceSpec, catalog_dates: dict[str, str]) -> str:
    model = plan.model or "an unknown model"
    order = "in your order, then by cost" if spec.ordered else "by cost"
    dates = ", ".join(f"{cloud} {date}" for cloud, date in sorted(catalog_dates.items()))
    return (f"Plan for {model}: {plan.replicas} replica(s), ranked {order}.\n"
            f"Spec: {spec.file}. Catalog prices as of: {dates}.")


def _row(c: Candidate) -> tuple[str, ...]:
    instance = c.instance_type + (f" + {c.attached_gpu}" if c.attached_gpu else "")
    others = len(c.group_instance_types) - 1
    if others > 0:
        instance += f" (+{others} type{'s' if others > 1 else ''})"
    total = "?" if c.total_price_per_hour is None else _dollars(c.group_total_price_per_hour)
    return (str(c.rank), c.infra, instance + (" [Spot]" if c.use_spot else ""), str(c.vcpus),
            f"{c.memory_gib:g}", c.gpus, _dollars(c.group_price_per_hour), total,
            "\u2714" if c.rank == 1 else "")


def _dollars(bounds: tuple[float, float] | None) -> str:
    """$/h, or the range low-high of a group whose types differ in price; None: unknown."""
    if bounds is None:
        return "?"
    low, high = bounds
    return f"{low:.2f}" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f}-{high:.2f}"


def _table(rows: list[tuple[str, ...]], headers: tuple[str, ...] = HEADERS) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    rule = "-" * (sum(widths) + 3 * (len(widths) - 1) + 2)

    def fmt(cells):
        return " " + "   ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([rule, fmt(headers), rule, *(fmt(r) for r in rows), rule])


def _footer(plan: Plan, shown: int, show_all: bool, explain: bool) -> str:
    parts = [f"{shown} of {len(plan.candidates)} candidates shown"]
    if not show_all and shown < len(plan.candidates):
        parts.append("--all lists every one")
    if plan.dropped and not explain:
        parts.append(f"{len(plan.dropped)} dropped (--explain says why)")
    if any(c.total_price_per_hour is None for c in plan.candidates):
        parts.append("TOTAL ? = the on-demand base replicas have no catalog price (ranked last)")
    return "; ".join(parts) + ".\nGenerate or deploy a row with --candidate # (or --pick ID; " \
        "the ids are in --json)."


def security_notes(d: Deployment) -> list[str]:
    """What stays open because the user chose it (or left a default), one plain line each:
    no API key, no TLS, SSH, the whole internet allowed in."""
    from servestack.deployment.model import WORLD

    where = "any address" if WORLD in d.allow_cidrs else ", ".join(d.allow_cidrs)
    notes = []
    if d.api_key is None:
        notes.append(f"--no-api-key: anyone who can reach the endpoint ({where}) can call the "
                     "model, no key asked")
    if d.tls is None:
        carried = "the API key and every prompt and answer travel" if d.api_key else \
            "every prompt and answer travels"
        if d.shared_api_key is not None:
            # a pool behind a front: HTTPS would need one certificate for the front's name
            # in every pool's region, which servestack does not build yet
            notes.append(f"a service over several pools is HTTP only: {carried} over plain "
                         "HTTP between clients, the front and the pools, readable on the "
                         "way; keep it on private networks or use one pool with --domain")
        else:
            notes.append(f"no --domain: {carried} over plain HTTP, readable on the way; pass "
                         "--domain NAME (and --dns-zone) for HTTPS")
    if d.ssh_cidrs:
        notes.append(f"--ssh-cidr {' '.join(d.ssh_cidrs)}: SSH to the VMs is open to "
                     + ("the whole internet" if WORLD in d.ssh_cidrs else "these ranges"))
    if WORLD in d.allow_cidrs:
        notes.append(f"--allow-cidr {WORLD}: the endpoint takes requests from the whole "
                     "internet; --allow-cidr CIDR limits who may reach it")
    return notes


# --- scaling ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Scaling:
    """What one candidate's group does under the spec's replica_policy."""

    min_replicas: int
    max_replicas: int
    on_demand_min: int  # on-demand replicas: the whole group on an on-demand row, the base on
    on_demand_max: int  # a spot row (base_ondemand_fallback_replicas, which does not grow)
    spot_min: int
    spot_max: int
    fallback_on_demand_max: int  # dynamic fallback: on-demand stand-ins while spot is short
    at_min: float | None  # $/h of the service at min and at max replicas (None: unpriced)
    at_max: float | None

    def replicas_text(self) -> str:
        bounds = _bounds(self.min_replicas, self.max_replicas)
        if not self.spot_max:
            return bounds
        text = f"{bounds} ({self.on_demand_min} on-demand + " \
            f"{_bounds(self.spot_min, self.spot_max)} spot"
        if self.fallback_on_demand_max:
            text += f"; up to {self.fallback_on_demand_max} on-demand while spot is short"
        return text + ")"

    def column(self) -> str:
        """The table's REPLICAS cell: the range, split into on-demand (OD) and spot."""
        if not self.spot_max:
            return _bounds(self.min_replicas, self.max_replicas)
        spot = f"{_bounds(self.spot_min, self.spot_max)} spot"
        return f"{self.on_demand_min} OD + {spot}" if self.on_demand_min else spot

    def to_json(self) -> dict:
        return {"min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                "on_demand_replicas": {"min": self.on_demand_min, "max": self.on_demand_max},
                "spot_replicas": {"min": self.spot_min, "max": self.spot_max},
                "dynamic_ondemand_fallback_max": self.fallback_on_demand_max,
                "price_per_hour_at_min": self.at_min, "price_per_hour_at_max": self.at_max,
                "replicas_text": self.replicas_text()}


def _bounds(low: int, high: int) -> str:
    return str(low) if low == high else f"{low}-{high}"


def replica_bounds(spec: ServiceSpec) -> tuple[int, int]:
    """min and max replicas as the deployment builds them (num_overprovision on both)."""
    return replica_range(spec.service.replica_policy if spec.service else None)


def autoscales(spec: ServiceSpec) -> bool:
    low, high = replica_bounds(spec)
    return bool(spec.service and not spec.service.replica_policy.fixed and high > low)


def scaling_of(c: Candidate, spec: ServiceSpec) -> Scaling:
    policy = spec.service.replica_policy if spec.service else None
    low, high = replica_bounds(spec)
    base = min(policy.base_ondemand_fallback_replicas, low) if policy and c.use_spot else 0
    dynamic = bool(policy and c.use_spot and policy.dynamic_ondemand_fallback)
    at_min = None if c.total_price_per_hour is None else \
        round(c.total_price_per_hour + (low - c.replicas) * c.price_per_hour, 4)
    at_max = None if at_min is None else round(at_min + (high - low) * c.price_per_hour, 4)
    if c.use_spot:
        return Scaling(low, high, base, base, low - base, high - base,
                       high - base if dynamic else 0, at_min, at_max)
    return Scaling(low, high, low, high, 0, 0, 0, at_min, at_max)


def policy_json(spec: ServiceSpec) -> dict:
    """The spec's scaling, the same for every candidate: None-valued signal for a fixed group.
    The signal is the default the deployment builds (the load balancer's requests per second
    against target_qps_per_replica); generate/deploy's --scale-metric may choose another."""
    low, high = replica_bounds(spec)
    policy = spec.service.replica_policy if spec.service else None
    signal = None
    if policy is not None and autoscales(spec):
        up, down = scale_delays(policy)
        signal = {"metric": "qps", "target_per_replica": policy.target_qps_per_replica,
                  "upscale_delay_seconds": up, "downscale_delay_seconds": down}
    return {"min_replicas": low, "max_replicas": high, "autoscaling": signal is not None,
            "signal": signal,
            "base_ondemand_fallback_replicas":
                policy.base_ondemand_fallback_replicas if policy else 0,
            "dynamic_ondemand_fallback": bool(policy and policy.dynamic_ondemand_fallback)}


def signal_text(spec: ServiceSpec) -> str | None:
    signal = policy_json(spec)["signal"]
    if signal is None:
        return None
    target = signal["target_per_replica"]
    per = target if not isinstance(target, dict) else \
        ", ".join(f"{k}: {v}" for k, v in target.items())
    up, down = signal["upscale_delay_seconds"], signal["downscale_delay_seconds"]
    return (f"autoscaled on requests per second per replica (target {per}; --scale-metric "
            f"picks vLLM's queue or KV cache instead), up after {up} s, down after {down} s")


def _scaling_lines(spec: ServiceSpec, rows: list[Candidate]) -> list[str]:
    text = signal_text(spec)
    if text is None:
        return []
    low, high = replica_bounds(spec)
    lines = [f"Scaling: {low} to {high} replicas, {text}; TOTAL $/h is at {low}, "
             f"AT MAX $/h at {high}."]
    spot = next((c for c in rows if c.use_spot), None)
    if spot is not None:
        lines.append(f"Spot rows (OD: on-demand): {scaling_of(spot, spec).replicas_text()}.")
    return lines


def _scaled_headers() -> tuple[str, ...]:
    return HEADERS[:-1] + SCALING_HEADERS + HEADERS[-1:]


def _scaled_row(c: Candidate, spec: ServiceSpec) -> tuple[str, ...]:
    row = _row(c)
    scaling = scaling_of(c, spec)
    at_max = "?" if scaling.at_max is None else _dollars(_at_max_range(c, scaling))
    return row[:-1] + (scaling.column(), at_max) + row[-1:]


def _at_max_range(c: Candidate, scaling: Scaling) -> tuple[float, float] | None:
    """The service's $/h at max over the group's types (cheapest, dearest)."""
    total = c.group_total_price_per_hour
    if total is None:
        return None
    extra = scaling.max_replicas - c.replicas
    low, high = c.group_price_per_hour
    return total[0] + extra * low, total[1] + extra * high


# --- the deploy of a service over several pools ----------------------------------------------

SERVICE_SCHEMA_VERSION = 1


def service_deploy_json(outcome: str, exit_code: int | None, message: str,
                        journal: ServiceJournal, pools: dict[str, Journal]) -> dict:
    """The JSON report of a service deploy or reconcile pass."""
    by_state: dict[str, list[dict]] = {}
    for record in journal.pools:
        state = record.state.value
        tried = pools.get(record.key)
        if state == "open" and tried is not None and tried.attempts:
            state = "let_go"  # tried, then left for a cheaper region: open to a later claim
        by_state.setdefault(state, []).append(_pool_json(record, pools))
    released = by_state.get("released", [])
    started, ready = journal.started_at, journal.ready_at
    return {
        "schema_version": SERVICE_SCHEMA_VERSION, "service": journal.service,
        "run": journal.run, "outcome": outcome, "exit_code": exit_code, "message": message,
        "endpoint": journal.front.endpoint if journal.front else None,
        "front": journal.front.name if journal.front else None,
        "key_stack": journal.key.name if journal.key else None,
        "needed_replicas": journal.needed,
        "kept": by_state.get("kept", []), "released": released,
        "failed": by_state.get("failed", []), "let_go": by_state.get("let_go", []),
        "hedge_cost_usd": round(sum(p["cost_usd"] or 0.0 for p in released), 4),
        "time_to_ready_s": round(ready - started, 3) if started and ready else None,
        "started_at": started, "finished_at": journal.finished_at,
    }


def _pool_json(record: PoolRecord, pools: dict[str, Journal]) -> dict:
    journal = pools.get(record.key)
    attempts = [{"n": a.n, "candidate": a.candidate, "outcome": a.outcome, "code": a.code,
                 "scope": a.scope, "cleanup": a.cleanup} for a in journal.attempts] \
        if journal else []
    return {"cloud": record.cloud, "region": record.region, "replicas": record.share,
            "price_per_hour": record.price_per_hour, "hourly_usd": record.hourly,
            "stack": record.stack, "endpoint": record.endpoint, "hedge": record.hedge,
            "lane": record.lane, "reason": record.reason, "covers": record.covers,
            "live_s": round(record.released_at - record.started_at, 3)
            if record.released_at is not None and record.started_at is not None else None,
            "cost_usd": record.cost_usd, "attempts": attempts}


def service_deploy_table(report: dict) -> str:
    """The service report for people: kept, released and failed pools, then the outcome."""
    rows: list[tuple[str, ...]] = [("POOL", "STATE", "REPLICAS", "$/h", "LIVE", "COST $",
                                    "STACK / WHY")]
    for state in ("kept", "released", "failed", "let_go"):
        for p in report.get(state, []):
            live = "-" if p["live_s"] is None else f"{p['live_s'] / 60:.0f}m"
            cost = "-" if p["cost_usd"] is None else f"{p['cost_usd']:.2f}"
            rows.append((f"{p['cloud']} {p['region']}", state.replace("_", " "),
                         str(p["replicas"]),
                         f"{p['hourly_usd']:.2f}", live, cost,
                         p["stack"] if state == "kept" else p["reason"][:60]))
    lines = [_table(rows[1:], rows[0]), ""]
    code = "" if report["exit_code"] is None else f" (exit {report['exit_code']})"
    lines.append(f"{report['outcome'].upper()}{code}: {report['message']}")
    if report["endpoint"]:
        lines.append(f"Endpoint: {report['endpoint']} (front {report['front']})")
    ready = report["time_to_ready_s"]
    lines.append(f"Hedge cost: ${report['hedge_cost_usd']:.2f}"
                 + (f"; ready in {ready / 60:.1f} min" if ready is not None else ""))
    return "\n".join(lines) + "\n"
