"""How a plan is shown: a SkyPilot-like table for people, a stable JSON object for machines;
and, for `generate`, `deploy` and `endpoint`, what a deployment leaves open by the user's
choice (`security_notes`)."""

from __future__ import annotations

import json

from servestack.deployment.model import WORLD, Deployment
from servestack.planner import Candidate, Plan
from servestack.spec import ServiceSpec

PLAN_SCHEMA_VERSION = 1
# "#" is the rank `--candidate N` takes; $/h and TOTAL $/h are ranges when the candidate's
# group may launch dearer (or cheaper) fallback types; "?" is a total the catalog cannot price.
HEADERS = ("#", "INFRA", "INSTANCE", "vCPUs", "Mem(GB)", "GPUS", "$/h", "TOTAL $/h", "CHOSEN")


def plan_json(plan: Plan, spec: ServiceSpec, catalog_dates: dict[str, str]) -> dict:
    """The documented contract (README, "Plan JSON"): candidates best first, then dropped."""
    return {
        "schema_version": PLAN_SCHEMA_VERSION,
        "spec": spec.file,
        "model": plan.model,
        "replicas": plan.replicas,
        "catalog_dates": dict(sorted(catalog_dates.items())),
        "candidates": [c.to_json() for c in plan.candidates],
        "dropped": [d.to_json() for d in plan.dropped],
        "warnings": list(plan.warnings),
        "notes": list(spec.notes),
    }


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
    lines = [_heading(plan, spec, catalog_dates)]
    lines += [f"warning: {w}" for w in plan.warnings] + [f"note: {n}" for n in spec.notes]
    lines.append(_table([_row(c) for c in rows]))
    lines.append(_footer(plan, len(rows), show_all, explain))
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


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADERS)]
    rule = "-" * (sum(widths) + 3 * (len(widths) - 1) + 2)

    def fmt(cells):
        return " " + "   ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([rule, fmt(HEADERS), rule, *(fmt(r) for r in rows), rule])


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
    where = "any address" if WORLD in d.allow_cidrs else ", ".join(d.allow_cidrs)
    notes = []
    if d.api_key is None:
        notes.append(f"--no-api-key: anyone who can reach the endpoint ({where}) can call the "
                     "model, no key asked")
    if d.tls is None:
        carried = "the API key and every prompt and answer travel" if d.api_key else \
            "every prompt and answer travels"
        notes.append(f"no --domain: {carried} over plain HTTP, readable on the way; pass "
                     "--domain NAME (and --dns-zone) for HTTPS")
    if d.ssh_cidrs:
        notes.append(f"--ssh-cidr {' '.join(d.ssh_cidrs)}: SSH to the VMs is open to "
                     + ("the whole internet" if WORLD in d.ssh_cidrs else "these ranges"))
    if WORLD in d.allow_cidrs:
        notes.append(f"--allow-cidr {WORLD}: the endpoint takes requests from the whole "
                     "internet; --allow-cidr CIDR limits who may reach it")
    return notes
