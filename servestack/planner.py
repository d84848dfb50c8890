"""Spec x catalog -> ranked candidates (cloud x region x instance type x spot), and why others fell.

For every alternative of the spec it keeps every offer that satisfies it, not only the cheapest
per cloud, so the fallback loop can walk them. Candidates are per region, except spot on a cloud
that prices spot per zone (the catalog's `spot_per_zone`, AWS today). Sets compete on cost; lists
and `ordered` keep the user's order first, then cost. A plan warns when the prices it uses are
older than the catalog's staleness limit.

Plan time grows linearly with the catalog: offers are indexed once per plan by GPU pool, the
model fit is checked once per pool (accelerator, count, memory), and matching offers are appended
straight to per-location lists; nothing is allocated per offer that outlives the loop but those
lists (a surviving object per offer made big plans pay for full garbage collections).

This module imports no Pulumi and no cloud SDK.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date

from .catalog import CLOUD_TITLES, CLOUDS, Catalog, Offer, provider, stale_prices
from .errors import UserError
from .models import ModelFacts, check_fit
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
         options: Options | None = None, model: str | None = None,
         today: date | None = None) -> Plan:
    options = options or Options()
    result = Plan(candidates=[], dropped=[], replicas=spec.replicas, model=model)
    if facts is None and model:
        result.warnings.append(f"model {model!r} is unknown to servestack: the memory fit "
                               "check is skipped (pass --model-config config.json to check it)")
    elif facts is None:
        result.warnings.append("no model found in the spec's run command: the memory fit check "
                               "is skipped (pass --model NAME)")
    pools = _pools(catalog)
    fits = _Fits(facts, result)
    groups = _Groups()
    for number, alternative in enumerate(spec.alternatives):
        use_spot = alternative.use_spot if options.spot is None else options.spot
        offers = _matching(alternative, options, pools, catalog, result)
        _collect(offers, number, use_spot, fits, groups)
    result.candidates = _rank(_candidates(groups, spec, result), spec)
    if not result.candidates:
        raise NothingFits(result)
    result.warnings.extend(stale_prices(_oldest_prices(result.candidates), today))
    return result


@dataclass
class _Groups:
    """Per location key (cloud, region, zone if spot is per zone, instance type, accelerator,
    count, spot): the matching offers in match order, and which alternatives matched as a bit
    set. Big plans stay linear because each location costs one list and nothing per offer:
    ints, like the key tuples of strings, are not tracked by the garbage collector."""

    offers: dict[tuple, list[Offer]] = field(default_factory=dict)
    alternatives: dict[tuple, int] = field(default_factory=dict)

    def matched_by(self, key: tuple, spec: ServiceSpec) -> list[Alternative]:
        bits = self.alternatives[key]
        return [a for i, a in enumerate(spec.alternatives) if bits >> i & 1]


class _Fits:
    """The model fit per GPU pool (accelerator, count, memory), checked the first time a
    matching offer of the pool is seen; a pool that does not fit is dropped once, with why."""

    def __init__(self, facts: ModelFacts | None, result: Plan) -> None:
        self.facts = facts
        self.result = result
        self.by_pool: dict[tuple[str, int], dict[int, bool]] = defaultdict(dict)

    def pool(self, accelerator: str, count: int) -> dict[int, bool]:
        return self.by_pool[(accelerator, count)]

    def check(self, offer: Offer) -> bool:
        ok = True
        if self.facts is not None:
            fit = check_fit(self.facts, offer.gpu_memory_mib, offer.accelerator_count)
            if not fit.ok:
                self.result.dropped.append(Dropped(
                    what=f"{offer.accelerator}:{offer.accelerator_count}", reason=fit.reason))
            ok = fit.ok
        self.pool(offer.accelerator, offer.accelerator_count)[offer.gpu_memory_mib] = ok
        return ok


def _collect(offers: list[Offer], number: int, use_spot: bool, fits: _Fits,
             groups: _Groups) -> None:
    """Append each offer that fits to its location's list (created on first sight)."""
    per_zone = {c for c in CLOUDS if provider(c).spot_per_zone} if use_spot else set()
    bit = 1 << number
    by_key, matched = groups.offers, groups.alternatives
    pool_fits: dict[int, bool] = {}
    pool_of = None
    for offer in offers:
        if pool_of != (offer.accelerator, offer.accelerator_count):  # pools change rarely
            pool_of = (offer.accelerator, offer.accelerator_count)
            pool_fits = fits.pool(*pool_of)
        fit = pool_fits.get(offer.gpu_memory_mib)
        if fit is None:
            fit = fits.check(offer)
        if not fit:
            continue
        key = (offer.cloud, offer.region, offer.zone if offer.cloud in per_zone else None,
               offer.instance_type, offer.accelerator, offer.accelerator_count, use_spot)
        located = by_key.get(key)
        if located is None:
            by_key[key] = [offer]
            matched[key] = bit
        else:
            located.append(offer)
            matched[key] |= bit


def _oldest_prices(candidates: Iterable[Candidate]) -> dict[str, str]:
    oldest: dict[str, str] = {}
    for c in candidates:
        if c.price_date < oldest.get(c.cloud, "9999-99-99"):
            oldest[c.cloud] = c.price_date
    return oldest


class NothingFits(UserError):
    def __init__(self, result: Plan) -> None:
        lines = [f"  - {d.what}: {d.reason}" for d in result.dropped] or ["  (nothing matched)"]
        super().__init__("no candidate remains; dropped:\n" + "\n".join(lines))
        self.plan = result


def _pools(catalog: Catalog) -> dict[tuple[str, int], list[Offer]]:
    """Offers by (accelerator, count), in catalog order."""
    pools: dict[tuple[str, int], list[Offer]] = defaultdict(list)
    for offer in catalog.offers:
        pools[(offer.accelerator, offer.accelerator_count)].append(offer)
    return pools


def _matching(alt: Alternative, options: Options, pools: dict[tuple[str, int], list[Offer]],
              catalog: Catalog, result: Plan) -> list[Offer]:
    if alt.accelerator is not None:
        pool = pools.get((alt.accelerator, alt.count or 1), [])
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


def _candidates(groups: _Groups, spec: ServiceSpec, result: Plan) -> list[tuple]:
    """Each location's candidate fields (rank aside), or a Dropped saying why it has none."""
    fields = []
    for key, offers in groups.offers.items():
        reason, draft = _draft(key, offers, groups.matched_by(key, spec), spec)
        if draft is not None:
            fields.append(draft)
        else:
            cloud, region, _, instance_type, accelerator, count, _ = key
            result.dropped.append(Dropped(what=f"{accelerator}:{count}", cloud=cloud,
                                          region=region, instance_type=instance_type,
                                          reason=reason))
    return fields


def _draft(key: tuple, offers: list[Offer], alternatives: list[Alternative],
           spec: ServiceSpec) -> tuple[str, tuple | None]:
    cloud, region, zone, instance_type, accelerator, count, use_spot = key
    pinned = {a.zone for a in alternatives if a.zone}
    if pinned:
        offers = [o for o in offers if o.zone in pinned or o.zone is None]
        zone = zone or (sorted(pinned)[0] if len(pinned) == 1 else None)
    # attribute reads, not price_for(): this runs once per matched offer
    prices = ([o.spot_price for o in offers if o.spot_price is not None] if use_spot
              else [o.price for o in offers if o.price is not None])
    if not prices:
        return f"the catalog has no {'spot' if use_spot else 'on-demand'} price", None
    if spec.image_id and isinstance(spec.image_id, dict) and region not in spec.image_id:
        return "resources.image_id names no image for this region", None
    price = min(prices)
    if spec.max_hourly_cost is not None and price > spec.max_hourly_cost:
        return f"${price:.2f}/h is above max_hourly_cost ${spec.max_hourly_cost:g}/h", None
    first = offers[0]
    replicas = spec.replicas
    preference = min((a.preference for a in alternatives if a.preference is not None),
                     default=None)
    total = round(_total(price, first.price, use_spot, spec, replicas), 4)
    # Candidate's fields after `rank`, in order: a tuple of plain values, which the garbage
    # collector stops tracking, where a dict per candidate would be tracked until the end
    return "", (
        _candidate_id(cloud, zone or region, instance_type, use_spot), cloud, region, zone,
        _zones(offers), instance_type, accelerator, count, first.gpu_memory_gib, first.vcpus,
        first.memory_gib, use_spot, round(price, 4), replicas, total, preference,
        first.attached_gpu, first.source, min([o.date for o in offers]),
    )


def _zones(offers: list[Offer]) -> tuple[str, ...]:
    """The zones of the offers priced per zone. Region-priced offers (Azure) carry their
    region's zones in `Offer.zones`; deployment.zones_for still adds those itself."""
    return tuple(sorted({o.zone for o in offers if o.zone}))


def _total(price: float, on_demand: float | None, use_spot: bool, spec: ServiceSpec,
           replicas: int) -> float:
    base = spec.service.replica_policy.base_ondemand_fallback_replicas if spec.service else 0
    if use_spot and base and on_demand is not None:
        base = min(base, replicas)
        return base * on_demand + (replicas - base) * price
    return price * replicas


def _candidate_id(cloud: str, where: str, instance_type: str, use_spot: bool) -> str:
    return f"{cloud}-{where}-{instance_type}-{'spot' if use_spot else 'ondemand'}".lower()


def _rank(fields: list[tuple], spec: ServiceSpec) -> list[Candidate]:
    """Candidates best first; each is built once, with its rank (no copy per candidate)."""
    def key(c: tuple):
        (_, cloud, region, zone, _, instance_type, _, _, _, _, _, use_spot, _, _, total,
         preference, *_) = c
        preference = preference if spec.ordered and preference is not None else 0
        return (preference, total, cloud, region, zone or "", instance_type, use_spot)

    return [Candidate(i, *c) for i, c in enumerate(sorted(fields, key=key), 1)]
