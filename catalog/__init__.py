"""The offer catalog: which GPU VMs AWS, GCP and Azure sell, where, and at what price.

The data lives beside this module as reviewable CSV files, one per cloud (`aws.csv`, `gcp.csv`,
`azure.csv`) plus the GPU table `gpus.csv`. Every row names its source and the date its prices
were observed. `load_catalog()` reads and validates them into `Offer`s; a broken row fails loudly
with the file, line and column.

This module imports no cloud SDK and no Pulumi: the planner depends on it.
"""

from __future__ import annotations

import csv
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

CLOUDS = ("aws", "gcp", "azure")
CLOUD_TITLES = {"aws": "AWS", "gcp": "GCP", "azure": "Azure"}
COLUMNS = (
    "instance_type", "accelerator", "accelerator_count", "gpu_memory_mib", "vcpus",
    "memory_gib", "region", "zone", "price", "spot_price", "source", "date",
)
GPU_COLUMNS = ("name", "memory_mib", "vendor", "architecture", "source", "date")
DATA_DIR = Path(__file__).resolve().parent
ENV_DIR = "SERVESTACK_CATALOG_DIR"


class CatalogError(Exception):
    """A catalog file is missing or has a broken row."""


@dataclass(frozen=True, slots=True)
class Gpu:
    name: str
    memory_mib: int  # as the driver reports it (nvidia-smi)
    vendor: str
    architecture: str

    @property
    def memory_gib(self) -> float:
        return self.memory_mib / 1024


@dataclass(frozen=True, slots=True)
class Offer:
    """One VM type with its GPUs, offered in one region (and zone where the cloud prices per zone).

    `price` and `spot_price` are $/hour for one VM, GPUs included; None when the catalog has no
    price. On GCP an N1 host with attached GPUs is one Offer whose `attached_gpu` is the GCP
    accelerator type (e.g. `nvidia-tesla-t4`) and whose price is host plus GPUs.
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

    @property
    def gpu_memory_gib(self) -> float:
        return self.gpu_memory_mib / 1024

    def price_for(self, spot: bool) -> float | None:
        return self.spot_price if spot else self.price


@dataclass
class Catalog:
    gpus: dict[str, Gpu]
    offers: list[Offer]
    warnings: list[str] = field(default_factory=list)
    dates: dict[str, str] = field(default_factory=dict)  # cloud -> newest price date

    def regions(self, cloud: str) -> set[str]:
        return {o.region for o in self.offers if o.cloud == cloud}

    def zones(self, cloud: str) -> set[str]:
        return {o.zone for o in self.offers if o.cloud == cloud and o.zone}

    def counts_by_accelerator(self) -> dict[str, set[int]]:
        counts: dict[str, set[int]] = defaultdict(set)
        for offer in self.offers:
            counts[offer.accelerator].add(offer.accelerator_count)
        return counts


@dataclass(frozen=True, slots=True)
class Row:
    """One validated line of a cloud CSV, before cloud-specific composition (GCP)."""

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
    date: str
    where: str = field(default="", compare=False)  # "file:line" when read from a file


def known_regions(directory: str | os.PathLike | None = None) -> dict[str, set[str]]:
    """Every public region per cloud (regions.csv), whether or not it has GPU offers."""
    path = catalog_dir(directory) / "regions.csv"
    if not path.exists():
        path = DATA_DIR / "regions.csv"
    regions: dict[str, set[str]] = defaultdict(set)
    for _, record in records(path, ("cloud", "region", "geography")):
        regions[record["cloud"].strip()].add(record["region"].strip())
    return regions


def catalog_dir(override: str | os.PathLike | None = None) -> Path:
    if override:
        return Path(override)
    return Path(os.environ.get(ENV_DIR) or DATA_DIR)


def load_catalog(directory: str | os.PathLike | None = None,
                 clouds: tuple[str, ...] = CLOUDS) -> Catalog:
    """Read and validate gpus.csv and the per-cloud files found in `directory`."""
    base = catalog_dir(directory)
    gpus = load_gpus(base / "gpus.csv")
    catalog = Catalog(gpus=gpus, offers=[])
    for cloud in clouds:
        path = base / f"{cloud}.csv"
        if not path.exists():
            catalog.warnings.append(f"{path}: missing; no {CLOUD_TITLES[cloud]} offers planned")
            continue
        rows = read_rows(path, gpus)
        if cloud == "gcp":
            from . import gcp

            offers = gcp.compose_offers(rows, gpus)
        else:
            offers = [_offer_from_row(cloud, row) for row in rows]
        catalog.offers.extend(offers)
        if rows:
            catalog.dates[cloud] = max(row.date for row in rows)
        catalog.warnings.extend(price_warnings(cloud, rows))
    return catalog


def load_gpus(path: Path) -> dict[str, Gpu]:
    gpus: dict[str, Gpu] = {}
    for line, record in records(path, GPU_COLUMNS):
        where = f"{path}:{line}"
        name = _required(record, "name", where)
        if name in gpus:
            raise CatalogError(f"{where}: GPU {name!r} is listed twice")
        gpus[name] = Gpu(
            name=name,
            memory_mib=_integer(record, "memory_mib", where, required=True),
            vendor=_required(record, "vendor", where),
            architecture=record["architecture"].strip(),
        )
    return gpus


def read_rows(path: Path, gpus: dict[str, Gpu]) -> list[Row]:
    """Parse one cloud file; raise CatalogError naming file, line and column on a broken row."""
    rows: list[Row] = []
    seen: dict[tuple[str, str, str], int] = {}
    for line, record in records(path, COLUMNS):
        where = f"{path}:{line}"
        row = _parse_row(record, where, gpus)
        key = (row.instance_type, row.region, row.zone or "")
        if key in seen:
            raise CatalogError(
                f"{where}: duplicate row for {key[0]} in {key[1]} {key[2]} "
                f"(first at line {seen[key]})"
            )
        seen[key] = line
        rows.append(row)
    return rows


def price_warnings(cloud: str, rows: list[Row]) -> list[str]:
    warnings = []
    for row in rows:
        if row.price is not None and row.spot_price is not None and row.spot_price > row.price:
            warnings.append(
                f"{row.where}: {cloud} {row.instance_type} in {row.zone or row.region}: "
                f"spot ${row.spot_price:.4f}/h is above on-demand ${row.price:.4f}/h"
            )
    return warnings


def _offer_from_row(cloud: str, row: Row) -> Offer:
    if row.accelerator is None or row.vcpus is None or row.memory_gib is None:
        raise CatalogError(f"{row.where}: a {cloud} row needs accelerator, vcpus and memory_gib")
    return Offer(
        cloud=cloud,
        instance_type=row.instance_type,
        accelerator=row.accelerator,
        accelerator_count=row.accelerator_count or 0,
        gpu_memory_mib=row.gpu_memory_mib or 0,
        vcpus=row.vcpus,
        memory_gib=row.memory_gib,
        region=row.region,
        zone=row.zone,
        price=row.price,
        spot_price=row.spot_price,
        source=row.source,
        date=row.date,
    )


def _parse_row(record: dict[str, str], where: str, gpus: dict[str, Gpu]) -> Row:
    accelerator = record["accelerator"].strip() or None
    count = _integer(record, "accelerator_count", where, required=accelerator is not None)
    gpu_memory = _integer(record, "gpu_memory_mib", where, required=accelerator is not None)
    if accelerator is not None:
        gpu = gpus.get(accelerator)
        if gpu is None:
            raise CatalogError(
                f"{where}: column accelerator: unknown GPU {accelerator!r} "
                f"(known: {', '.join(sorted(gpus))})"
            )
        if count is None or count <= 0:
            raise CatalogError(f"{where}: column accelerator_count: must be a positive integer")
        if gpu_memory != gpu.memory_mib:
            raise CatalogError(
                f"{where}: column gpu_memory_mib: {gpu_memory} does not match the GPU table "
                f"({accelerator} has {gpu.memory_mib} MiB)"
            )
    date = _required(record, "date", where)
    if len(date) != 10 or date[4] != "-" or date[7] != "-" or not date.replace("-", "").isdigit():
        raise CatalogError(f"{where}: column date: {date!r} is not an ISO date (YYYY-MM-DD)")
    return Row(
        instance_type=_required(record, "instance_type", where),
        accelerator=accelerator,
        accelerator_count=count,
        gpu_memory_mib=gpu_memory,
        vcpus=_integer(record, "vcpus", where),
        memory_gib=_number(record, "memory_gib", where),
        region=_required(record, "region", where),
        zone=record["zone"].strip() or None,
        price=_price(record, "price", where),
        spot_price=_price(record, "spot_price", where),
        source=_required(record, "source", where),
        date=date,
        where=where,
    )


def records(path: Path, columns: tuple[str, ...]):
    """Yield (line number, row dict) for each data line; '#' lines are comments."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CatalogError(f"{path}: catalog file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{path}: cannot read: {exc}") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise CatalogError(f"{path}: no header line")
    header_line, header = lines[0]
    if tuple(h.strip() for h in next(csv.reader([header]))) != columns:
        raise CatalogError(f"{path}:{header_line}: header must be: {','.join(columns)}")
    numbers = [n for n, _ in lines[1:]]
    for n, values in zip(numbers, csv.reader(line for _, line in lines[1:]), strict=True):
        if len(values) != len(columns):
            raise CatalogError(
                f"{path}:{n}: expected {len(columns)} columns, found {len(values)}"
            )
        yield n, dict(zip(columns, values, strict=True))


def _required(record: dict[str, str], column: str, where: str) -> str:
    value = record[column].strip()
    if not value:
        raise CatalogError(f"{where}: column {column}: must not be empty")
    return value


def _number(record: dict[str, str], column: str, where: str, required: bool = False):
    value = record[column].strip()
    if not value:
        if required:
            raise CatalogError(f"{where}: column {column}: must not be empty")
        return None
    try:
        number = float(value)
    except ValueError:
        raise CatalogError(f"{where}: column {column}: {value!r} is not a number") from None
    if not math.isfinite(number) or number < 0:
        raise CatalogError(f"{where}: column {column}: {value!r} must be a finite number >= 0")
    return number


def _integer(record: dict[str, str], column: str, where: str, required: bool = False):
    number = _number(record, column, where, required)
    if number is None:
        return None
    if number != int(number):
        raise CatalogError(f"{where}: column {column}: {record[column]!r} is not an integer")
    return int(number)


def _price(record: dict[str, str], column: str, where: str) -> float | None:
    price = _number(record, column, where)
    if price == 0:
        raise CatalogError(f"{where}: column {column}: a price of 0 is not real; leave it empty")
    return price
