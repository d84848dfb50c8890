"""The catalog's shared vocabulary: one record type per stage, the loaded Catalog, CatalogError.

- `Gpu`: a row of the GPU table (gpus.csv).
- `Instance`: what one instance type carries (a row of instances.csv); refresh prices these.
- `PriceRow`: one row of a cloud file (aws.csv, gcp.csv, azure.csv), as read, fetched or imported.
- `Offer`: what the planner reads: one VM type with its GPUs, priced at one place.
- `Place`: the offers of one instance type at one region (or spot zone), summed up once per
  catalog (`Catalog.places`) so that a plan filters places, not every offer.

Nothing here reads a file, talks to a cloud or knows a cloud's billing rules: those live in
`files.py`, `loader.py` and the per-cloud modules.
"""

from __future__ import annotations

import gc
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

CLOUDS = ("aws", "gcp", "azure")
CLOUD_TITLES = {"aws": "AWS", "gcp": "GCP", "azure": "Azure"}
MIB_PER_GIB = 1024


class CatalogError(Exception):
    """A catalog file is missing or has a broken row."""


def clean_price(value: float | None) -> float | None:
    """Round to 6 decimals; a missing, non-finite or zero price is None (the loader rejects 0)."""
    if value is None or not math.isfinite(value) or value <= 0:
        return None
    rounded = round(value, 6)
    return rounded if rounded > 0 else None


@dataclass(frozen=True, slots=True)
class Gpu:
    name: str
    memory_mib: int  # one GPU's memory as the driver reports it (nvidia-smi), not the data sheet
    vendor: str
    architecture: str

    @property
    def memory_gib(self) -> float:
        return self.memory_mib / MIB_PER_GIB


@dataclass(frozen=True, slots=True)
class Instance:
    """What one instance type carries. On GCP, hosts have no accelerator and attachable GPUs no
    vCPUs (see gcp.py)."""

    cloud: str
    instance_type: str
    accelerator: str | None
    accelerator_count: int | None
    gpu_memory_mib: int | None
    vcpus: int | None
    memory_gib: float | None


@dataclass(frozen=True, slots=True)
class PriceRow:
    """One row of a cloud file: an instance type's prices at one region (and zone)."""

    instance_type: str
    accelerator: str | None
    accelerator_count: int | None
    gpu_memory_mib: int | None
    vcpus: int | None
    memory_gib: float | None
    region: str
    zone: str | None
    price: float | None
    spot_price: float | None
    source: str
    date: str  # the source's own date (snapshot commit, API read), ISO YYYY-MM-DD
    where: str = field(default="", compare=False)  # "file:line" when read from a file

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.instance_type, self.region, self.zone or "")

    @property
    def place(self) -> str:
        return self.zone or self.region

    @classmethod
    def priced(cls, instance: Instance, region: str, zone: str | None, price: float | None,
               spot_price: float | None, source: str, day: str) -> PriceRow:
        return cls(instance.instance_type, instance.accelerator, instance.accelerator_count,
                   instance.gpu_memory_mib, instance.vcpus, instance.memory_gib, region, zone,
                   clean_price(price), clean_price(spot_price), source, day)


@dataclass(frozen=True, slots=True)
class Offer:
    """One VM type with its GPUs, offered in one region (and zone where the cloud prices per zone).

    `price` and `spot_price` are $/hour for one VM, GPUs included; None when the catalog has no
    (trustworthy) price. On GCP an N1 host with attached GPUs is one Offer whose `attached_gpu`
    is the GCP accelerator type (e.g. `nvidia-tesla-t4`) and whose price is host plus GPUs.
    `zones` lists where a region-priced offer may be placed (Azure: the region's numbered zones);
    it is empty when the offer has a `zone` of its own or the region has no zones.
    """

    cloud: str
    instance_type: str
    accelerator: str
    accelerator_count: int
    gpu_memory_mib: int
    vcpus: int
    memory_gib: float
    region: str
    zone: str | None
    price: float | None
    spot_price: float | None
    source: str
    date: str
    attached_gpu: str | None = None
    zones: tuple[str, ...] = ()

    @property
    def gpu_memory_gib(self) -> float:
        return self.gpu_memory_mib / MIB_PER_GIB

    def price_for(self, spot: bool) -> float | None:
        return self.spot_price if spot else self.price

    @classmethod
    def from_row(cls, cloud: str, row: PriceRow, zones: tuple[str, ...] = ()) -> Offer:
        """A row that is a whole VM (it names its GPUs, vCPUs and memory) as an Offer."""
        if row.accelerator is None or row.vcpus is None or row.memory_gib is None:
            raise CatalogError(f"{row.where}: a {CLOUD_TITLES[cloud]} row needs accelerator, "
                               "vcpus and memory_gib")
        return cls(cloud=cloud, instance_type=row.instance_type, accelerator=row.accelerator,
                   accelerator_count=row.accelerator_count or 0,
                   gpu_memory_mib=row.gpu_memory_mib or 0, vcpus=row.vcpus,
                   memory_gib=row.memory_gib, region=row.region, zone=row.zone, price=row.price,
                   spot_price=row.spot_price, source=row.source, date=row.date, zones=zones)


@dataclass(frozen=True)
class CloudFile:
    """The file a cloud's offers were read from, and how old its prices are."""

    cloud: str
    path: Path
    origin: str  # "shipped" (inside the package) or "user" (refreshed, or --catalog-dir)
    newest: str | None  # the newest row date
    oldest: str | None

    @property
    def span(self) -> str:
        """Its price dates: one date, or the oldest to the newest row."""
        if self.oldest == self.newest:
            return self.newest or "-"
        return f"{self.oldest}..{self.newest}"


@dataclass(eq=False, slots=True)
class Place:
    """The offers of one instance type with one GPU set at one place: a region, or a zone of a
    cloud whose (spot) prices differ per zone. Offers are in catalog order; `close()` sums them
    up (cheapest prices, zones, oldest date) and copies the instance type's facts, so that a
    plan reads places only: on a big catalog, reaching into scattered offers is what costs."""

    cloud: str
    region: str
    zone: str | None  # set only where the place is a zone
    instance_type: str
    accelerator: str
    accelerator_count: int
    offers: list[Offer]
    price: float | None = None
    spot_price: float | None = None
    zones: tuple[str, ...] = ()  # the offers' own zones, or where region-priced ones may go
    date: str = ""
    # the instance type's facts, the same in every offer of the place (see `close`)
    gpu_memory_mib: int = 0
    vcpus: int = 0
    memory_gib: float = 0.0
    attached_gpu: str | None = None
    source: str = ""

    def price_for(self, spot: bool) -> float | None:
        return self.spot_price if spot else self.price

    @property
    def gpu_memory_gib(self) -> float:
        return self.gpu_memory_mib / MIB_PER_GIB

    def close(self) -> Place:
        offers = self.offers
        first = offers[0]
        self.gpu_memory_mib, self.vcpus, self.memory_gib = \
            first.gpu_memory_mib, first.vcpus, first.memory_gib
        self.attached_gpu, self.source = first.attached_gpu, first.source
        if len(offers) == 1:  # most places (every region-priced one): no sums to make
            self.price, self.spot_price, self.date = first.price, first.spot_price, first.date
            self.zones = (first.zone,) if first.zone else first.zones
            return self
        self.price = min([o.price for o in offers if o.price is not None], default=None)
        self.spot_price = min([o.spot_price for o in offers if o.spot_price is not None],
                              default=None)
        self.zones = tuple(sorted({z for o in offers for z in ((o.zone,) if o.zone else o.zones)}))
        self.date = min([o.date for o in offers])
        return self


# One lock for the lazily grouped places: two threads planning over one catalog must be handed
# the same place objects (taken rarely: once per catalog and GPU set).
_GROUPING = threading.Lock()


class Places:
    """A catalog's offers grouped by place, for one choice of clouds priced per zone.

    Offers are split by GPU set (accelerator, count) once; a GPU set's places are made the first
    time a plan asks for them (`pool`), so a plan groups only the pools it reads, each in a
    dictionary of its own size rather than one over the whole catalog. By instance type
    (`of_type`, rare in specs) every pool is made once.
    """

    def __init__(self, offers: list[Offer], zoned: frozenset[str]) -> None:
        self.zoned = zoned
        self.offers: dict[tuple[str, int], list[Offer]] = {}  # GPU set -> its offers, in order
        for offer in offers:
            gpus = (offer.accelerator, offer.accelerator_count)
            found = self.offers.get(gpus)
            if found is None:
                found = self.offers[gpus] = []
            found.append(offer)
        self.pools: dict[tuple[str, int], list[Place]] = {}
        self.types: dict[str, list[Place]] | None = None

    def gpu_sets(self) -> list[tuple[str, int]]:
        return list(self.offers)

    def pool(self, gpus: tuple[str, int]) -> list[Place]:
        """The places with this GPU set, in order of first appearance (always the same objects:
        a plan tells places apart by identity)."""
        places = self.pools.get(gpus)
        if places is None:
            with _GROUPING, no_collection():
                places = self.pools.get(gpus)
                if places is None:
                    places = self.pools[gpus] = _grouped(self.offers.get(gpus, []), self.zoned)
        return places

    def of_type(self, instance_type: str) -> list[Place]:
        if self.types is None:
            self.types = {}
            for gpus in self.offers:
                for place in self.pool(gpus):
                    self.types.setdefault(place.instance_type, []).append(place)
        return self.types.get(instance_type, [])


@dataclass
class Catalog:
    gpus: dict[str, Gpu]
    offers: list[Offer]
    warnings: list[str] = field(default_factory=list)
    dates: dict[str, str] = field(default_factory=dict)  # cloud -> newest price date
    files: dict[str, CloudFile] = field(default_factory=dict)  # cloud -> the file in use
    _places: dict[frozenset[str], Places] = field(default_factory=dict, init=False, repr=False,
                                                  compare=False)

    def places(self, zoned: frozenset[str]) -> Places:
        """The offers grouped by place: per zone for the clouds in `zoned`, else per region.

        Split by GPU set once per `zoned` and kept, each GPU set's places made when first asked
        for (see `Places`), so that planning the same catalog again does not walk every offer;
        `offers` must not change after the first call.
        """
        places = self._places.get(zoned)
        if places is None:
            with _GROUPING, no_collection():
                places = self._places.get(zoned)
                if places is None:
                    places = self._places[zoned] = Places(self.offers, zoned)
        return places

    def regions(self, cloud: str) -> set[str]:
        return {o.region for o in self.offers if o.cloud == cloud}

    def zones(self, cloud: str) -> set[str]:
        return {o.zone for o in self.offers if o.cloud == cloud and o.zone}


@contextmanager
def no_collection() -> Iterator[None]:
    """Pause the cyclic garbage collector while building objects that all stay alive.

    Grouping a big catalog (or planning over it) allocates hundreds of thousands of tracked
    objects (places, their lists, keys, candidates) that survive: the allocation count keeps
    tripping collections, and the full ones walk every object of the catalog each time,
    finding nothing to free (no cycles are made here). On 100x the shipped rows that was
    two thirds of the first plan's time. Reference counting still frees what dies at once;
    the collector resumes afterwards (only if it was on: nesting and callers who turned it
    off themselves are respected)."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def _grouped(offers: list[Offer], zoned: frozenset[str]) -> list[Place]:
    """The offers (of one GPU set) as places, in order of first appearance."""
    buckets: dict[tuple[str, str, str | None, str], list[Offer]] = {}
    for offer in offers:
        zone = offer.zone if offer.cloud in zoned else None
        key = (offer.cloud, offer.region, zone, offer.instance_type)
        found = buckets.get(key)
        if found is None:
            found = buckets[key] = []
        found.append(offer)
    places = []
    for (cloud, region, zone, instance_type), bucket in buckets.items():
        first = bucket[0]
        places.append(Place(cloud, region, zone, instance_type, first.accelerator,
                            first.accelerator_count, offers=bucket).close())
    return places
