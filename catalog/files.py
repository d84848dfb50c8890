"""The catalog's CSV files, cell by cell: read with validation, and written back.

A broken cell raises CatalogError naming file, line and column. What a cloud's rows mean (GCP's
host + GPU billing, Azure zones) is not decided here but in the per-cloud modules; which file is
in use (shipped or user) is decided in loader.py.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator
from pathlib import Path

from .base import CatalogError, Gpu, Instance, PriceRow

DATA_DIR = Path(__file__).resolve().parent  # the catalog shipped inside the package
COLUMNS = (
    "instance_type", "accelerator", "accelerator_count", "gpu_memory_mib", "vcpus",
    "memory_gib", "region", "zone", "price", "spot_price", "source", "date",
)
GPU_COLUMNS = ("name", "memory_mib", "vendor", "architecture", "source", "date")
INSTANCE_COLUMNS = ("cloud", "instance_type", "accelerator", "accelerator_count",
                    "gpu_memory_mib", "vcpus", "memory_gib")
# A row's GPU memory may differ a little from the GPU table (drivers reserve different amounts);
# beyond this share it is a wrong unit or a wrong GPU, and the row is refused.
MEMORY_TOLERANCE = 0.10


def records(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
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


def read_gpus(path: Path) -> dict[str, Gpu]:
    gpus: dict[str, Gpu] = {}
    for line, record in records(path, GPU_COLUMNS):
        where = f"{path}:{line}"
        name = _required(record, "name", where)
        if name in gpus:
            raise CatalogError(f"{where}: GPU {name!r} is listed twice")
        gpus[name] = Gpu(
            name=name,
            memory_mib=_whole(record, "memory_mib", where, required=True) or 0,
            vendor=_required(record, "vendor", where),
            architecture=record["architecture"].strip(),
        )
    return gpus


def read_instances(path: Path, cloud: str) -> dict[str, Instance]:
    """instances.csv lines of one cloud, by instance type."""
    instances: dict[str, Instance] = {}
    for line, record in records(path, INSTANCE_COLUMNS):
        if record["cloud"].strip() != cloud:
            continue
        where = f"{path}:{line}"
        instance = Instance(
            cloud=cloud, instance_type=_required(record, "instance_type", where),
            accelerator=record["accelerator"].strip() or None,
            accelerator_count=_whole(record, "accelerator_count", where),
            gpu_memory_mib=_whole(record, "gpu_memory_mib", where),
            vcpus=_whole(record, "vcpus", where),
            memory_gib=_number(record, "memory_gib", where),
        )
        instances[instance.instance_type] = instance
    if not instances:
        raise CatalogError(f"{path}: no instance facts for {cloud}")
    return instances


def read_rows(path: Path, gpus: dict[str, Gpu]) -> list[PriceRow]:
    """Parse one cloud file; raise CatalogError naming file, line and column on a broken row."""
    rows: list[PriceRow] = []
    seen: dict[tuple[str, str, str], int] = {}
    for line, record in records(path, COLUMNS):
        where = f"{path}:{line}"
        row = _parse_row(record, where, gpus)
        if row.key in seen:
            instance_type, region, zone = row.key
            raise CatalogError(
                f"{where}: duplicate row for {instance_type} in {region} {zone} "
                f"(first at line {seen[row.key]})"
            )
        seen[row.key] = line
        rows.append(row)
    return rows


def render(rows: list[PriceRow], header: list[str]) -> str:
    """A cloud file: '#' header lines, the column line, rows sorted by (type, region, zone)."""
    out = io.StringIO()
    for line in header:
        out.write(f"# {line}\n")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in sorted(rows, key=lambda r: r.key):
        writer.writerow([row.instance_type, row.accelerator or "", _text(row.accelerator_count),
                         _text(row.gpu_memory_mib), _text(row.vcpus), _text(row.memory_gib),
                         row.region, row.zone or "", _text(row.price), _text(row.spot_price),
                         row.source, row.date])
    return out.getvalue()


def memory_disagrees(row_mib: int, table_mib: int, tolerance: float = 0.0) -> bool:
    return abs(row_mib - table_mib) > tolerance * table_mib


def _parse_row(record: dict[str, str], where: str, gpus: dict[str, Gpu]) -> PriceRow:
    accelerator = record["accelerator"].strip() or None
    count = _whole(record, "accelerator_count", where, required=accelerator is not None)
    gpu_memory = _whole(record, "gpu_memory_mib", where, required=accelerator is not None)
    if accelerator is not None:
        gpu = gpus.get(accelerator)
        if gpu is None:
            raise CatalogError(
                f"{where}: column accelerator: unknown GPU {accelerator!r} "
                f"(known: {', '.join(sorted(gpus))})"
            )
        if count is None or count <= 0:
            raise CatalogError(f"{where}: column accelerator_count: must be a positive integer")
        if gpu_memory is not None and memory_disagrees(gpu_memory, gpu.memory_mib,
                                                       MEMORY_TOLERANCE):
            raise CatalogError(
                f"{where}: column gpu_memory_mib: {gpu_memory} does not match the GPU table "
                f"({accelerator} has {gpu.memory_mib} MiB)"
            )
    date = _required(record, "date", where)
    if len(date) != 10 or date[4] != "-" or date[7] != "-" or not date.replace("-", "").isdigit():
        raise CatalogError(f"{where}: column date: {date!r} is not an ISO date (YYYY-MM-DD)")
    return PriceRow(
        instance_type=_required(record, "instance_type", where),
        accelerator=accelerator,
        accelerator_count=count,
        gpu_memory_mib=gpu_memory,
        vcpus=_whole(record, "vcpus", where),
        memory_gib=_number(record, "memory_gib", where),
        region=_required(record, "region", where),
        zone=record["zone"].strip() or None,
        price=_price(record, "price", where),
        spot_price=_price(record, "spot_price", where),
        source=_required(record, "source", where),
        date=date,
        where=where,
    )


def _required(record: dict[str, str], column: str, where: str) -> str:
    value = record[column].strip()
    if not value:
        raise CatalogError(f"{where}: column {column}: must not be empty")
    return value


def _number(record: dict[str, str], column: str, where: str,
            required: bool = False) -> float | None:
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


def _whole(record: dict[str, str], column: str, where: str, required: bool = False) -> int | None:
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


def _text(value: float | int | None) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    return f"{value:.6f}".rstrip("0").rstrip(".")
