"""Spec x catalog -> ranked candidates (cloud x region x instance type x spot), and why others fell.

For every alternative of the spec it keeps every offer that satisfies it, not only the cheapest
per cloud, so the fallback loop can walk them. Candidates are per region, except AWS spot, which
AWS prices per availability zone. Sets compete on cost; lists and `ordered` keep the user's order
first, then cost. This module imports no Pulumi and no cloud SDK.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field

from .catalog import CLOUD_TITLES, Catalog, Offer
from .errors import UserError
from .models import Fit, ModelFacts, check_fit
from .spec import Alternative, ServiceSpec


@dataclass(frozen=True, slots=True)
class Candidate:
    rank: int
    id: str
    cloud: str
    region: str
    zone: str | None
    zones: tuple[str, ...]
    instance_type: str
    accelerator: str
    accelerator_count: int
    gpu_memory_gib: float
    vcpus: int
    memory_gib: float
    use_spot: bool
    price_per_hour: float
    replicas: int
    total_price_per_hour: float
    preference: int | None
    attached_gpu: str | None
    source: str
    price_date: str

    @property
    def infra(self) -> str:
        return f"{CLOUD_TITLES[self.cloud]} ({self.zone or self.region})"

    @property
    def gpus(self) -> str:
        return f"{self.accelerator}:{self.accelerator_count}"

    def to_json(self) -> dict:
        data = asdict(self)
        data["zones"] = list(self.zones)
        return data


@dataclass(frozen=True, slots=True)
class Dropped:
    what: str
    reason: str
    cloud: str | None = None
    region: str | None = None
    instance_type: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Plan:
    candidates: list[Candidate]
    dropped: list[Dropped]
    replicas: int
    model: str | None
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Options:
    cloud: str | None = None
    region: str | None = None
    spot: bool | None = None  # None: as the spec says


def plan(spec: ServiceSpec, catalog: Catalog, facts: ModelFacts | None,
         options: Options | None = None, model: str | None = None) -> Plan:
    options = options or Options()
    result = Plan(candidates=[], dropped=[], replicas=spec.replicas, model=model)
    if facts is None and model:
        result.warnings.append(f"model {model!r} is unknown to servestack: the memory fit "
                               "check is skipped (pass --model-config config.json to check it)")
    elif facts is None:
        result.warnings.append("no model found in the spec's run command: the memory fit check "
                               "is skipped (pass --model NAME)")
    index = _index(catalog)
    fits: dict[tuple[str, int, float], Fit] = {}
    found: list[tuple[tuple, Offer, Alternative]] = []
    for alternative in spec.alternatives:
        use_spot = alternative.use_spot if options.spot is None else options.spot
        offers = _matching(alternative, options, index, catalog, result)
        for offer in offers:
            if facts is not None:
                key = (offer.accelerator, offer.accelerator_count, offer.gpu_memory_mib)
                if key not in fits:
                    fits[key] = check_fit(facts, offer.gpu_memory_mib, offer.accelerator_count)
                    if not fits[key].ok:
                        result.dropped.append(Dropped(
                            what=f"{offer.accelerator}:{offer.accelerator_count}",
                            reason=fits[key].reason))
                if not fits[key].ok:
                    continue
            found.append((_location_key(offer, use_spot), offer, alternative))
    result.candidates = _rank(_group(found, spec, result), spec)
    if not result.candidates:
        raise NothingFits(result)
    return result


class NothingFits(UserError):
    def __init__(self, result: Plan) -> None:
        lines = [f"  - {d.what}: {d.reason}" for d in result.dropped] or ["  (nothing matched)"]
        super().__init__("no candidate remains; dropped:\n" + "\n".join(lines))
        self.plan = result


def _index(catalog: Catalog) -> dict[tuple[str, int], list[Offer]]:
    index: dict[tuple[str, int], list[Offer]] = defaultdict(list)
    for offer in catalog.offers:
        index[(offer.accelerator, offer.accelerator_count)].append(offer)
    return index


def _matching(alt: Alternative, options: Options, index, catalog: Catalog,
              result: Plan) -> list[Offer]:
    if alt.accelerator is not None:
        pool = index.get((alt.accelerator, alt.count or 1), [])
        if not pool:
            result.dropped.append(Dropped(what=alt.label, reason=_no_offer(alt, catalog)))
            return []
    else:
        pool = [o for o in catalog.offers if o.instance_type == alt.instance_type]
        if not pool:
            result.dropped.append(Dropped(what=alt.label, reason=f"instance type "
                                          f"{alt.instance_type!r} is not in the catalog"))
            return []
    cloud = options.cloud or alt.cloud
    region = options.region or alt.region
    offers = [o for o in pool
              if (cloud is None or o.cloud == cloud)
              and (region is None or o.region == region)
              and (alt.zone is None or o.zone is None or o.zone == alt.zone)
              and (alt.instance_type is None or o.instance_type == alt.instance_type)
              and (alt.cpus is None or alt.cpus.admits(o.vcpus, o.vcpus))
              and (alt.memory is None or alt.memory.admits(o.memory_gib, o.vcpus))]
    if not offers:
        where = "/".join(p for p in (cloud, region, alt.zone) if p) or "any cloud"
        extra = ", ".join(f"{k}={v}" for k, v in (("instance_type", alt.instance_type),
                          ("cpus", alt.cpus), ("memory", alt.memory)) if v is not None)
        result.dropped.append(Dropped(
            what=alt.label, cloud=cloud, region=region,
            reason=f"offered, but not on {where}" + (f" with {extra}" if extra else "")))
    return offers


def _no_offer(alt: Alternative, catalog: Catalog) -> str:
    counts = sorted(catalog.counts_by_accelerator().get(alt.accelerator or "", ()))
    if not counts:
        return f"no cloud in the catalog offers {alt.accelerator} GPUs"
    return (f"no cloud offers {alt.count} x {alt.accelerator} per VM; counts that exist: "
            + ", ".join(map(str, counts)))


def _location_key(offer: Offer, use_spot: bool) -> tuple:
    per_zone = offer.cloud == "aws" and use_spot
    return (offer.cloud, offer.region, offer.zone if per_zone else None,
            offer.instance_type, offer.accelerator, offer.accelerator_count, use_spot)


def _group(found, spec: ServiceSpec, result: Plan) -> list[Candidate]:
    groups: dict[tuple, list[tuple[Offer, Alternative]]] = defaultdict(list)
    for key, offer, alternative in found:
        groups[key].append((offer, alternative))
    candidates = []
    for key, members in groups.items():
        cloud, region, zone, instance_type, accelerator, count, use_spot = key
        offers = [o for o, _ in members]
        pinned = {a.zone for _, a in members if a.zone}
        if pinned:
            offers = [o for o in offers if o.zone in pinned or o.zone is None]
            zone = zone or (sorted(pinned)[0] if len(pinned) == 1 else None)
        prices = [p for o in offers if (p := o.price_for(use_spot)) is not None]
        if not prices:
            result.dropped.append(Dropped(
                what=f"{accelerator}:{count}", cloud=cloud, region=region,
                instance_type=instance_type,
                reason=f"the catalog has no {'spot' if use_spot else 'on-demand'} price"))
            continue
        if spec.image_id and isinstance(spec.image_id, dict) and region not in spec.image_id:
            result.dropped.append(Dropped(
                what=f"{accelerator}:{count}", cloud=cloud, region=region,
                instance_type=instance_type,
                reason="resources.image_id names no image for this region"))
            continue
        preference = min((a.preference for _, a in members if a.preference is not None),
                         default=None)
        price = min(prices)
        first = offers[0]
        total = _total(price, first.price, use_spot, spec)
        if spec.max_hourly_cost is not None and price > spec.max_hourly_cost:
            result.dropped.append(Dropped(
                what=f"{accelerator}:{count}", cloud=cloud, region=region,
                instance_type=instance_type,
                reason=f"${price:.2f}/h is above max_hourly_cost ${spec.max_hourly_cost:g}/h"))
            continue
        candidates.append(Candidate(
            rank=0, id=_candidate_id(cloud, zone or region, instance_type, use_spot),
            cloud=cloud, region=region, zone=zone,
            zones=tuple(sorted({o.zone for o in offers if o.zone})),
            instance_type=instance_type, accelerator=accelerator, accelerator_count=count,
            gpu_memory_gib=first.gpu_memory_gib, vcpus=first.vcpus, memory_gib=first.memory_gib,
            use_spot=use_spot, price_per_hour=round(price, 4), replicas=spec.replicas,
            total_price_per_hour=round(total, 4), preference=preference,
            attached_gpu=first.attached_gpu, source=first.source,
            price_date=min(o.date for o in offers),
        ))
    return candidates


def _total(price: float, on_demand: float | None, use_spot: bool, spec: ServiceSpec) -> float:
    replicas = spec.replicas
    base = spec.service.replica_policy.base_ondemand_fallback_replicas if spec.service else 0
    if use_spot and base and on_demand is not None:
        base = min(base, replicas)
        return base * on_demand + (replicas - base) * price
    return price * replicas


def _candidate_id(cloud: str, where: str, instance_type: str, use_spot: bool) -> str:
    return f"{cloud}-{where}-{instance_type}-{'spot' if use_spot else 'ondemand'}".lower()


def _rank(candidates: list[Candidate], spec: ServiceSpec) -> list[Candidate]:
    def key(c: Candidate):
        preference = c.preference if spec.ordered and c.preference is not None else 0
        return (preference, c.total_price_per_hour, c.cloud, c.region, c.zone or "",
                c.instance_type, c.use_spot)

    ranked = sorted(candidates, key=key)
    from dataclasses import replace

    return [replace(c, rank=i) for i, c in enumerate(ranked, 1)]
