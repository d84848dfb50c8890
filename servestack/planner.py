"""Spec x catalog -> ranked candidates (cloud x region x instance type x spot), and why others fell.

For every alternative of the spec it keeps every offer that satisfies it, not only the cheapest
per cloud, so the fallback loop can walk them. Candidates are per region, except spot on a cloud
that prices spot per zone (the catalog's `spot_per_zone`, AWS today). Sets compete on cost; lists
and `ordered` keep the user's order first, then cost. A plan warns when the prices it uses are
older than the catalog's staleness limit.

Plan time grows with the catalog about linearly. The catalog groups its offers by place
(`Catalog.places`: one instance type with one GPU set in one region, or zone where spot is priced
per zone) once, and only for the GPU sets plans ask for; a plan reads places, not offers, checks
the model fit once per GPU pool (accelerator, count, memory), and allocates little more than its
candidates, because every object a big plan keeps alive costs again in each garbage collection.
On a big catalog what costs is reaching scattered objects, so each candidate's rank key and
group are taken while it is made, and ranking sorts plain strings (see `_rank`).

This module imports no Pulumi and no cloud SDK.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
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


@dataclass(slots=True, unsafe_hash=True)
class Candidate:
    """One way to run the service: an instance type at a place, on demand or spot, priced.

    Treat it as frozen (it is hashed by value): it is not, only because a frozen dataclass
    sets each of its 23 fields through a call, which was a third of a big plan's time. The
    planner finishes it while ranking; nothing changes it after that."""

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
    tensor-parallel size) and the same attached GPU type, if any (a GCP N1 group's template
    attaches one GPU type; types that carry their GPUs share a group whatever the GPU)."""
    return (c.cloud, c.region, c.zone, c.use_spot, c.accelerator_count, c.attached_gpu)


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
    _check_one_image_region(spec, result.candidates)
    result.warnings.extend(stale_prices(_oldest_prices(result.candidates), today))
    return result


def _plan_into(result: Plan, spec: ServiceSpec, catalog: Catalog, options: Options,
               fits: _Fits) -> None:
    groups = _Groups()
    for number, alternative in enumerate(spec.alternatives):
        use_spot = alternative.use_spot if options.spot is None else options.spot
        places = catalog.places(_zoned(alternative, use_spot, options))
        for place in _matching(alternative, options, places, result):
            if fits.ok(place):
                groups.join(place, use_spot, number)
    result.candidates = _rank(_candidates(groups, spec, result))


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
    """Future candidates, in the order they were found: per place and spot, the alternatives
    that matched (a bit set of their numbers).

    A group must cost the garbage collector nothing, or big plans pay for full collections that
    walk the whole catalog: its key is an int (place identity and spot), and ints are not
    tracked by the collector.
    """

    def __init__(self) -> None:
        self.places: dict[int, Place] = {}
        self.alternatives: dict[int, int] = {}

    def join(self, place: Place, use_spot: bool, number: int) -> None:
        key = id(place) << 1 | use_spot
        if key in self.places:
            self.alternatives[key] |= 1 << number
        else:
            self.places[key], self.alternatives[key] = place, 1 << number

    def __iter__(self) -> Iterator[tuple[Place, bool, int]]:
        """(place, spot, bit set of the alternatives that matched) per group."""
        alternatives = self.alternatives
        for key, place in self.places.items():
            yield place, bool(key & 1), alternatives[key]


class _Fits:
    """The model fit per GPU pool (accelerator, count, memory), checked the first time a
    matching offer of the pool is seen; a pool that does not fit is dropped once, with why."""

    def __init__(self, facts: ModelFacts | None, result: Plan) -> None:
        self.facts = facts
        self.result = result
        self.known: dict[tuple[str, int, int], bool] = {}

    def ok(self, place: Place) -> bool:
        if self.facts is None:
            return True
        pool = (place.accelerator, place.accelerator_count, place.gpu_memory_mib)
        fits = self.known.get(pool)
        if fits is None:
            fit = check_fit(self.facts, place.gpu_memory_mib, place.accelerator_count)
            if not fit.ok:
                self.result.dropped.append(Dropped(
                    what=f"{place.accelerator}:{place.accelerator_count}", reason=fit.reason))
            fits = self.known[pool] = fit.ok
        return fits


def _check_one_image_region(spec: ServiceSpec, candidates: list[Candidate]) -> None:
    """An image of one region (an AMI id): a plan whose candidates of that cloud span several
    regions would launch it where it does not exist."""
    image = spec.image_id
    if not isinstance(image, str):
        return
    for cloud in sorted({c.cloud for c in candidates}):
        if not provider(cloud).regional_image(image):
            continue
        regions = sorted({c.region for c in candidates if c.cloud == cloud})
        if len(regions) > 1:
            raise UserError(
                f"{spec.file}: resources.image_id {image}: the image belongs to one region, "
                f"but the {CLOUD_TITLES[cloud]} candidates span {len(regions)} "
                f"({', '.join(regions[:4])}{', ...' if len(regions) > 4 else ''}); pin the "
                f"region (resources.region, infra: {cloud}/REGION or --region) or give "
                "image_id as a map of region to image")


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
              result: Plan) -> list[Place]:
    """The places that satisfy the alternative, in catalog order."""
    if alt.accelerator is not None:
        pool = places.pool((alt.accelerator, alt.count or 1))
        if not pool:
            result.dropped.append(Dropped(what=alt.label, reason=_no_offer(alt, places)))
            return []
    else:
        pool = places.of_type(alt.instance_type or "")
        if not pool:
            result.dropped.append(Dropped(what=alt.label, reason=f"instance type "
                                          f"{alt.instance_type!r} is not in the catalog"))
            return []
    cloud = options.cloud or alt.cloud
    region = options.region or alt.region
    found = pool
    if cloud is not None or region is not None or alt.instance_type is not None or \
            alt.cpus is not None or alt.memory is not None:
        # an instance type's vCPUs and memory are the same everywhere: the place's
        found = [p for p in pool if (cloud is None or p.cloud == cloud)
                 and (region is None or p.region == region)
                 and (alt.instance_type is None or p.instance_type == alt.instance_type)
                 and (alt.cpus is None or alt.cpus.admits(p.vcpus, p.vcpus))
                 and (alt.memory is None or alt.memory.admits(p.memory_gib, p.vcpus))]
    if alt.zone is not None:
        zone = alt.zone
        found = [p for p in found if any(_in_zone(zone, o) for o in p.offers)]
    if not found:
        where = "/".join(p for p in (cloud, region, alt.zone) if p) or "any cloud"
        extra = ", ".join(f"{k}={v}" for k, v in (("instance_type", alt.instance_type),
                          ("cpus", alt.cpus), ("memory", alt.memory)) if v is not None)
        result.dropped.append(Dropped(
            what=alt.label, cloud=cloud, region=region,
            reason=f"offered, but not on {where}" + (f" with {extra}" if extra else "")))
    return found


def _no_offer(alt: Alternative, places: Places) -> str:
    counts = sorted(count for name, count in places.gpu_sets() if name == alt.accelerator)
    if not counts:
        return f"no cloud in the catalog offers {alt.accelerator} GPUs"
    return (f"no cloud offers {alt.count} x {alt.accelerator} per VM; counts that exist: "
            + ", ".join(map(str, counts)))


@dataclass
class _Found:
    """The candidates of a plan, not ranked yet, each with its rank key (see `_rank_key`), and
    the groups (see `group_key`) that have more than one, by the candidates' indexes. These
    are made while the candidate is fresh in the CPU's cache: on a big catalog, coming back to
    tens of thousands of scattered objects costs more than making them."""

    candidates: list[Candidate] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    numbers: dict[tuple, int] = field(default_factory=dict)  # group_key -> its number
    firsts: list[int] = field(default_factory=list)  # per group number: its first candidate
    shared: dict[int, list[int]] = field(default_factory=dict)  # group number -> candidates
    # Equal values share one tuple: every tuple kept is one more object for the collector.
    tuples: dict[tuple, tuple] = field(default_factory=dict)

    def add(self, candidate: Candidate, ordered: bool) -> None:
        """Adds the candidate as if alone in its group (`_rank` widens shared groups)."""
        total = candidate.total_price_per_hour
        candidate.group_instance_types = self.one((candidate.instance_type,))
        candidate.group_price_per_hour = self.one((candidate.price_per_hour,) * 2)
        candidate.group_total_price_per_hour = None if total is None else self.one((total,) * 2)
        index = len(self.candidates)
        self.candidates.append(candidate)
        self.keys.append(_rank_key(candidate, ordered))
        number = self.numbers.setdefault(group_key(candidate), len(self.firsts))
        if number == len(self.firsts):
            self.firsts.append(index)
        elif number in self.shared:
            self.shared[number].append(index)
        else:
            self.shared[number] = [self.firsts[number], index]

    def one(self, value: tuple) -> tuple:
        """The tuple equal to `value` that the plan already holds, else `value`."""
        return self.tuples.setdefault(value, value)


def _candidates(groups: _Groups, spec: ServiceSpec, result: Plan) -> _Found:
    """Each group's candidate, or a Dropped saying why it has none."""
    found = _Found()
    terms = _Terms.of(spec)
    matched_by: dict[int, _Matched] = {}  # few distinct sets of alternatives: sum each up once
    unpriced: set[str] = set()  # the zones warned of
    for place, use_spot, bits in groups:
        if bits not in matched_by:
            matched_by[bits] = _Matched.of([a for n, a in enumerate(spec.alternatives)
                                            if bits >> n & 1])
        reason, candidate = _candidate(place, use_spot, matched_by[bits], terms)
        if candidate is None:
            result.dropped.append(Dropped(
                what=f"{place.accelerator}:{place.accelerator_count}", cloud=place.cloud,
                region=place.region, instance_type=place.instance_type, reason=reason))
            continue
        found.add(candidate, spec.ordered)
        if use_spot:
            for zone in _unpriced_spot_zones(candidate) - unpriced:
                unpriced.add(zone)
                result.warnings.append(_unpriced_note(candidate, zone))
    return found


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


@dataclass(frozen=True, slots=True)
class _Terms:
    """What every candidate takes from the spec, read once per plan."""

    replicas: int
    base_ondemand: int  # replicas kept on demand under spot (replica_policy)
    image_regions: frozenset[str] | None  # the regions resources.image_id names, if a mapping
    max_hourly_cost: float | None

    @classmethod
    def of(cls, spec: ServiceSpec) -> _Terms:
        base = spec.service.replica_policy.base_ondemand_fallback_replicas if spec.service else 0
        images = frozenset(spec.image_id) if isinstance(spec.image_id, dict) else None
        return cls(spec.replicas, base, images, spec.max_hourly_cost)


def _candidate(place: Place, use_spot: bool, matched: _Matched, terms: _Terms
               ) -> tuple[str, Candidate | None]:
    zone, price, zones = place.zone, place.price_for(use_spot), place.zones
    if matched.pinned:  # rare: the alternatives name zones
        reason, place, zone, price, zones = _pinned(place, use_spot, matched.pinned)
        if reason:
            return reason, None
    if price is None:
        return f"the catalog has no {'spot' if use_spot else 'on-demand'} price", None
    if terms.image_regions is not None and place.region not in terms.image_regions:
        return "resources.image_id names no image for this region", None
    if terms.max_hourly_cost is not None and price > terms.max_hourly_cost:
        return f"${price:.2f}/h is above max_hourly_cost ${terms.max_hourly_cost:g}/h", None
    replicas = terms.replicas
    total = _total(price, place.price, use_spot, terms.base_ondemand, replicas)
    price = round(price, 4)
    return "", Candidate(
        0, _candidate_id(place, zone or place.region, use_spot), place.cloud,
        place.region, zone, zones, place.instance_type, place.accelerator,
        place.accelerator_count, place.gpu_memory_gib, place.vcpus, place.memory_gib, use_spot,
        price, replicas, total, matched.preference, place.attached_gpu, place.source,
        place.date)


def _pinned(place: Place, use_spot: bool, pinned: frozenset[str]
            ) -> tuple[str, Place, str | None, float | None, tuple[str, ...]]:
    """The place cut down to the zones the alternatives pin: (why it cannot be, else ""), the
    place, its zone, price and zones. Pinned zone names (not IDs) are where it goes, priced at
    the dearest spot zone, as which priced zone a name is depends on the deploying account."""
    kept = [o for o in place.offers if any(_in_zone(z, o) for z in pinned)]
    place = replace(place, offers=kept).close()
    zone = place.zone or (sorted(pinned)[0] if len(pinned) == 1 else None)
    price, zones = place.price_for(use_spot), place.zones
    names = sorted(z for z in pinned if provider(place.cloud).unpriced_zone(z, place.region))
    if not names:
        return "", place, zone, price, zones
    if len(names) < len(pinned):
        others = ", ".join(sorted(pinned - set(names)))
        return (f"pinned to zone names ({', '.join(names)}) and zone IDs ({others}) at once; "
                "its subnets are looked up by one kind, so give names or IDs"), place, zone, \
            price, zones
    if use_spot:  # a missing fact never looks cheap
        price = max([o.spot_price for o in place.offers if o.spot_price is not None],
                    default=None)
    return "", place, zone, price, tuple(names)


def _total(price: float, on_demand: float | None, use_spot: bool, base: int,
           replicas: int) -> float | None:
    """The service's $/h; None when its on-demand base replicas have no price to count."""
    if use_spot and base:
        if on_demand is None:
            return None
        base = min(base, replicas)
        return round(base * on_demand + (replicas - base) * price, 4)
    return round(price * replicas, 4)


def _candidate_id(place: Place, where: str, use_spot: bool) -> str:
    """Unique per candidate: a host type with attached GPUs (GCP N1) also names them, as one
    host type in one region comes with several GPU kinds and counts (stacks are named by it)."""
    what = place.instance_type
    if place.attached_gpu:
        what = f"{what}-{place.accelerator_count}x{place.accelerator}"
    return f"{place.cloud}-{where}-{what}-{'spot' if use_spot else 'ondemand'}".lower()


def _rank(found: _Found) -> list[Candidate]:
    """Candidates best first, numbered, each with its group's price ranges (a candidate alone
    in its group was made with them). Candidates are numbered in the order they were made,
    which is the order they lie in memory, and only shared groups are gathered."""
    keys, candidates = found.keys, found.candidates
    order = sorted(range(len(keys)), key=keys.__getitem__)  # stable: ties keep found order
    rank_of = [0] * len(order)
    for rank, index in enumerate(order, 1):
        rank_of[index] = rank
    for candidate, rank in zip(candidates, rank_of, strict=True):
        candidate.rank = rank
    for members in found.shared.values():
        members.sort(key=rank_of.__getitem__)
        _set_group([candidates[index] for index in members], found.one)
    return [candidates[index] for index in order]


def _rank_key(c: Candidate, ordered: bool) -> str:
    """The candidate's place in the ranking as one string, which sorts without calls (a tuple
    of its parts would not): the user's preference when `ordered`, then the total $/h (an
    unknown total after every known one, never as cheap), then cloud, region, zone, instance
    type, on demand first. "\0" sorts before any character of a name and the numbers are
    zero-padded, so the string orders as the tuple of the parts would."""
    total = c.total_price_per_hour
    price = "~" if total is None else f"{total:020.4f}"
    preference = f"{c.preference or 0:09d}" if ordered else ""
    return "\0".join((preference, price, c.cloud, c.region, c.zone or "", c.instance_type,
                      "1" if c.use_spot else "0"))


def _set_group(members: list[Candidate], one: Callable[[tuple], tuple]) -> None:
    """Each member's group: itself first, then the others in rank order (one per type)."""
    prices = [m.price_per_hour for m in members]
    totals = [m.total_price_per_hour for m in members]
    known = [t for t in totals if t is not None]
    total_range = one((min(known), max(known))) if len(known) == len(totals) else None
    price_range = one((min(prices), max(prices)))
    types = list(dict.fromkeys(m.instance_type for m in members))
    for member in members:
        member.group_instance_types = one(
            (member.instance_type, *(t for t in types if t != member.instance_type)))
        member.group_price_per_hour = price_range
        member.group_total_price_per_hour = total_range
