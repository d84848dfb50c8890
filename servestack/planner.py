"""Spec x catalog -> ranked candidates (cloud x region x instance type x spot), and why others fell.

For every alternative of the spec it keeps every offer that satisfies it, not only the cheapest
per cloud, so the fallback loop can walk them. Candidates are per region, except spot on a cloud
that prices spot per zone (the catalog's `spot_per_zone`, AWS today). Sets compete on cost; lists
and `ordered` keep the user's order first, then cost. A plan warns when the prices it uses are
older than the catalog's staleness limit.

Plan time grows linearly with the catalog. The catalog groups its offers by place once
(`Catalog.places`: one instance type with one GPU set in one region, or zone where spot is priced
per zone); a plan filters places, not offers, checks the model fit once per GPU pool
(accelerator, count, memory), and allocates little more than its candidates, because every
object a big plan keeps alive costs again in each full garbage collection.

This module imports no Pulumi and no cloud SDK.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from typing import TYPE_CHECKING

from .catalog import CLOUD_TITLES, CLOUDS, Catalog, Offer, provider, stale_prices
from .catalog.base import Place, Places, no_collection
from .errors import UserError
from .models import ModelFacts, check_fit
from .spec import Alternative, ServiceSpec

if TYPE_CHECKING:
    from .placement import Pool


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
    # None: not known, because a spot group with an on-demand base has no on-demand price in
    # the catalog. Such a candidate ranks after every candidate whose total is known.
    total_price_per_hour: float | None
    preference: int | None
    attached_gpu: str | None
    source: str
    price_date: str
    # The instance types the candidate's group may launch (itself first, see `group_key`) and
    # what one VM and the whole service may cost per hour among them: (cheapest, dearest).
    # Set with the rank, once the plan is known; the total range is None when a total is.
    group_instance_types: tuple[str, ...] = ()
    group_price_per_hour: tuple[float, float] = (0.0, 0.0)
    group_total_price_per_hour: tuple[float, float] | None = None

    @property
    def infra(self) -> str:
        return f"{CLOUD_TITLES[self.cloud]} ({self.zone or self.region})"

    @property
    def gpus(self) -> str:
        return f"{self.accelerator}:{self.accelerator_count}"

    def to_json(self) -> dict:
        data = asdict(self)
        data["zones"] = list(self.zones)
        data["group_instance_types"] = list(self.group_instance_types)
        data["group_price_per_hour"] = _range_json(self.group_price_per_hour)
        data["group_total_price_per_hour"] = _range_json(self.group_total_price_per_hour)
        return data


def _range_json(bounds: tuple[float, float] | None) -> dict | None:
    return None if bounds is None else {"min": bounds[0], "max": bounds[1]}


def group_key(c: Candidate) -> tuple:
    """Candidates with the same key can share one instance group (the deployment's fallback
    types): same cloud, region and zone, same spot setting, the same GPU count per VM (the
    tensor-parallel size) and the same host/GPU attachment scheme."""
    return (c.cloud, c.region, c.zone, c.use_spot, c.accelerator_count,
            c.attached_gpu is None)


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
    # Where the replicas go (servestack.placement), set by the CLI's plan step; empty: the
    # default, every replica in the best candidate's pool.
    placement: list[Pool] = field(default_factory=list)


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
        how = "name it in run: vllm serve NAME" if spec.run else "pass --model NAME"
        result.warnings.append("no model found in the spec's run command: the memory fit check "
                               f"is skipped ({how})")
    with no_collection():  # every group and candidate made here stays alive: see no_collection
        _plan_into(result, spec, catalog, options, _Fits(facts, result))
    if not result.candidates:
        raise NothingFits(result)
    result.warnings.extend(stale_prices(_oldest_prices(result.candidates), today))
    return result


def _plan_into(result: Plan, spec: ServiceSpec, catalog: Catalog, options: Options,
               fits: _Fits) -> None:
    groups = _Groups()
    for number, alternative in enumerate(spec.alternatives):
        use_spot = alternative.use_spot if options.spot is None else options.spot
        places = catalog.places(_zoned(alternative, use_spot, options))
        matched = _matching(alternative, options, places, result)
        for place in matched:
            offers = matched[place]
            if fits.ok(offers[0]):
                groups.join(place, use_spot, offers, number)
    result.candidates = _rank(_candidates(groups, spec, result), spec)


# Clouds whose spot prices differ per zone: their spot candidates are per zone.
_ZONED = frozenset(c for c in CLOUDS if provider(c).spot_per_zone)


def _zoned(alt: Alternative, use_spot: bool, options: Options) -> frozenset[str]:
    """The clouds whose places are zones for this alternative: none on demand; for spot, the
    clouds that price it per zone, but not the one whose zone the alternative pins by a name
    the catalog does not price (its candidate is the region's, priced at its dearest zone)."""
    if not use_spot:
        return frozenset()
    cloud, region = options.cloud or alt.cloud, options.region or alt.region
    if alt.zone and cloud and region and provider(cloud).unpriced_zone(alt.zone, region):
        return _ZONED - {cloud}
    return _ZONED


def _in_zone(zone: str, offer: Offer) -> bool:
    """Whether a spec's zone may hold the offer."""
    return offer.zone is None or offer.zone == zone or \
        provider(offer.cloud).unpriced_zone(zone, offer.region)


class _Groups:
    """Future candidates, in the order they were found: per place and spot, the offers in match
    order and the alternatives that matched (a bit set of their numbers).

    A group must cost the garbage collector nothing, or big plans pay for full collections that
    walk the whole catalog: its key is an int (place identity and spot), its offers are the
    place's own list (copied only when a second alternative matches it), and ints are not
    tracked by the collector.
    """

    def __init__(self) -> None:
        self.places: dict[int, Place] = {}
        self.offers: dict[int, list[Offer]] = {}
        self.alternatives: dict[int, int] = {}

    def join(self, place: Place, use_spot: bool, offers: list[Offer], number: int) -> None:
        key = id(place) << 1 | use_spot
        if key not in self.places:
            self.places[key], self.offers[key] = place, offers
            self.alternatives[key] = 1 << number
        elif not self.alternatives[key] >> number & 1:
            self.offers[key] = self.offers[key] + offers
            self.alternatives[key] |= 1 << number

    def __iter__(self) -> Iterator[tuple[Place, bool, list[Offer], int]]:
        """(place, spot, offers, bit set of the alternatives that matched) per group."""
        for key, place in self.places.items():
            yield place, bool(key & 1), self.offers[key], self.alternatives[key]


class _Fits:
    """The model fit per GPU pool (accelerator, count, memory), checked the first time a
    matching offer of the pool is seen; a pool that does not fit is dropped once, with why."""

    def __init__(self, facts: ModelFacts | None, result: Plan) -> None:
        self.facts = facts
        self.result = result
        self.known: dict[tuple[str, int, int], bool] = {}

    def ok(self, offer: Offer) -> bool:
        if self.facts is None:
            return True
        pool = (offer.accelerator, offer.accelerator_count, offer.gpu_memory_mib)
        fits = self.known.get(pool)
        if fits is None:
            fit = check_fit(self.facts, offer.gpu_memory_mib, offer.accelerator_count)
            if not fit.ok:
                self.result.dropped.append(Dropped(
                    what=f"{offer.accelerator}:{offer.accelerator_count}", reason=fit.reason))
            fits = self.known[pool] = fit.ok
        return fits


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


def _matching(alt: Alternative, options: Options, places: Places,
              result: Plan) -> dict[Place, list[Offer]]:
    """The places that satisfy the alternative, each with its offers that do (in order)."""
    if alt.accelerator is not None:
        pool = places.by_gpus.get((alt.accelerator, alt.count or 1), [])
        if not pool:
            result.dropped.append(Dropped(what=alt.label, reason=_no_offer(alt, places)))
            return {}
    else:
        pool = places.by_type.get(alt.instance_type or "", [])
        if not pool:
            result.dropped.append(Dropped(what=alt.label, reason=f"instance type "
                                          f"{alt.instance_type!r} is not in the catalog"))
            return {}
    cloud = options.cloud or alt.cloud
    region = options.region or alt.region
    # an instance type's vCPUs and memory are the same everywhere: test one offer per place
    found = {p: p.offers for p in pool
             if (cloud is None or p.cloud == cloud)
             and (region is None or p.region == region)
             and (alt.instance_type is None or p.instance_type == alt.instance_type)
             and (alt.cpus is None or alt.cpus.admits(p.first.vcpus, p.first.vcpus))
             and (alt.memory is None or alt.memory.admits(p.first.memory_gib, p.first.vcpus))}
    if alt.zone is not None:
        zone = alt.zone
        pinned = {p: [o for o in offers if _in_zone(zone, o)] for p, offers in found.items()}
        found = {p: offers for p, offers in pinned.items() if offers}
    if not found:
        where = "/".join(p for p in (cloud, region, alt.zone) if p) or "any cloud"
        extra = ", ".join(f"{k}={v}" for k, v in (("instance_type", alt.instance_type),
                          ("cpus", alt.cpus), ("memory", alt.memory)) if v is not None)
        result.dropped.append(Dropped(
            what=alt.label, cloud=cloud, region=region,
            reason=f"offered, but not on {where}" + (f" with {extra}" if extra else "")))
    return found


def _no_offer(alt: Alternative, places: Places) -> str:
    counts = sorted(count for name, count in places.by_gpus if name == alt.accelerator)
    if not counts:
        return f"no cloud in the catalog offers {alt.accelerator} GPUs"
    return (f"no cloud offers {alt.count} x {alt.accelerator} per VM; counts that exist: "
            + ", ".join(map(str, counts)))


def _candidates(groups: _Groups, spec: ServiceSpec, result: Plan) -> list[Candidate]:
    """Each group's candidate (not ranked yet), or a Dropped saying why it has none."""
    candidates = []
    matched_by: dict[int, _Matched] = {}  # few distinct sets of alternatives: sum each up once
    unpriced: set[str] = set()  # the zones warned of
    for place, use_spot, offers, bits in groups:
        if bits not in matched_by:
            matched_by[bits] = _Matched.of([a for n, a in enumerate(spec.alternatives)
                                            if bits >> n & 1])
        reason, candidate = _candidate(place, use_spot, offers, matched_by[bits], spec)
        if candidate is not None:
            candidates.append(candidate)
            for zone in _unpriced_spot_zones(candidate) - unpriced:
                unpriced.add(zone)
                result.warnings.append(_unpriced_note(candidate, zone))
        else:
            result.dropped.append(Dropped(
                what=f"{place.accelerator}:{place.accelerator_count}", cloud=place.cloud,
                region=place.region, instance_type=place.instance_type, reason=reason))
    return candidates


def _unpriced_spot_zones(c: Candidate) -> set[str]:
    """The zones of a spot candidate that priced it at its region's dearest zone."""
    if not c.use_spot:
        return set()
    return {z for z in c.zones if provider(c.cloud).unpriced_zone(z, c.region)}


def _unpriced_note(c: Candidate, zone: str) -> str:
    return (f"{CLOUD_TITLES[c.cloud]} zone {zone} is a zone name: which of {c.region}'s "
            f"zones it is depends on the account that deploys, and the catalog prices spot per "
            f"zone, so its spot candidates cost the dearest spot price of {c.region}'s zones")


@dataclass(frozen=True)
class _Matched:
    """What a group takes from the alternatives that matched it."""

    pinned: frozenset[str]  # zones the alternatives name
    preference: int | None  # the best (lowest) of their preferences

    @classmethod
    def of(cls, alternatives: list[Alternative]) -> _Matched:
        return cls(frozenset(a.zone for a in alternatives if a.zone),
                   min((a.preference for a in alternatives if a.preference is not None),
                       default=None))


def _candidate(place: Place, use_spot: bool, offers: list[Offer], matched: _Matched,
               spec: ServiceSpec) -> tuple[str, Candidate | None]:
    zone, pinned = place.zone, matched.pinned
    if pinned:  # rare: sum up the pinned offers; else the place's sums hold (same offers)
        kept = [o for o in offers if any(_in_zone(z, o) for z in pinned)]
        place = replace(place, offers=kept).close()
        zone = zone or (sorted(pinned)[0] if len(pinned) == 1 else None)
    price, zones = place.price_for(use_spot), place.zones
    names = sorted(z for z in pinned if provider(place.cloud).unpriced_zone(z, place.region))
    if names:
        if len(names) < len(pinned):
            others = ", ".join(sorted(pinned - set(names)))
            return (f"pinned to zone names ({', '.join(names)}) and zone IDs ({others}) at "
                    "once; its subnets are looked up by one kind, so give names or IDs"), None
        zones = tuple(names)  # where it goes: the names, which the deploying account resolves
        if use_spot:  # which priced zone a name is is unknown: a missing fact never looks cheap
            price = max([o.spot_price for o in place.offers if o.spot_price is not None],
                        default=None)
    if price is None:
        return f"the catalog has no {'spot' if use_spot else 'on-demand'} price", None
    if spec.image_id and isinstance(spec.image_id, dict) and place.region not in spec.image_id:
        return "resources.image_id names no image for this region", None
    if spec.max_hourly_cost is not None and price > spec.max_hourly_cost:
        return f"${price:.2f}/h is above max_hourly_cost ${spec.max_hourly_cost:g}/h", None
    first, replicas = place.first, spec.replicas
    return "", Candidate(
        rank=0, id=_candidate_id(place.cloud, zone or place.region, place.instance_type, use_spot),
        cloud=place.cloud, region=place.region, zone=zone, zones=zones,
        instance_type=place.instance_type, accelerator=place.accelerator,
        accelerator_count=place.accelerator_count, gpu_memory_gib=first.gpu_memory_gib,
        vcpus=first.vcpus, memory_gib=first.memory_gib, use_spot=use_spot,
        price_per_hour=round(price, 4), replicas=replicas,
        total_price_per_hour=_total(price, place.price_for(False), use_spot, spec, replicas),
        preference=matched.preference, attached_gpu=first.attached_gpu, source=first.source,
        price_date=place.date)


def _total(price: float, on_demand: float | None, use_spot: bool, spec: ServiceSpec,
           replicas: int) -> float | None:
    """The service's $/h; None when its on-demand base replicas have no price to count."""
    base = spec.service.replica_policy.base_ondemand_fallback_replicas if spec.service else 0
    if use_spot and base:
        if on_demand is None:
            return None
        base = min(base, replicas)
        return round(base * on_demand + (replicas - base) * price, 4)
    return round(price * replicas, 4)


def _candidate_id(cloud: str, where: str, instance_type: str, use_spot: bool) -> str:
    return f"{cloud}-{where}-{instance_type}-{'spot' if use_spot else 'ondemand'}".lower()


def _rank(candidates: list[Candidate], spec: ServiceSpec) -> list[Candidate]:
    """Candidates best first, numbered, each with its group's price ranges. These fields are
    known only once the plan is: they are set on the new, not yet shared candidates rather than
    copying each of them. An unknown total ranks after every known one (never as cheap)."""
    def key(c: Candidate):
        preference = c.preference if spec.ordered and c.preference is not None else 0
        total = c.total_price_per_hour
        return (preference, total is None, total or 0.0, c.cloud, c.region, c.zone or "",
                c.instance_type, c.use_spot)

    ranked = sorted(candidates, key=key)
    groups: dict[tuple, list[Candidate]] = {}
    for rank, candidate in enumerate(ranked, 1):
        object.__setattr__(candidate, "rank", rank)
        groups.setdefault(group_key(candidate), []).append(candidate)
    for members in groups.values():
        _set_group(members)
    return ranked


def _set_group(members: list[Candidate]) -> None:
    """Each member's group: itself first, then the others in rank order (one per type)."""
    prices = [m.price_per_hour for m in members]
    totals = [m.total_price_per_hour for m in members]
    known = [t for t in totals if t is not None]
    total_range = (min(known), max(known)) if len(known) == len(totals) else None
    types = list(dict.fromkeys(m.instance_type for m in members))
    for member in members:
        mine = (member.instance_type, *(t for t in types if t != member.instance_type))
        object.__setattr__(member, "group_instance_types", mine)
        object.__setattr__(member, "group_price_per_hour", (min(prices), max(prices)))
        object.__setattr__(member, "group_total_price_per_hour", total_range)
