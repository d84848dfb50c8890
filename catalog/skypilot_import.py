"""Import SkyPilot catalog files (`vms.csv`, schema v8) into servestack's catalog format.

SkyPilot keeps one `vms.csv` per cloud (`~/.sky/catalogs/v8/<cloud>/vms.csv`, or the
skypilot-catalog repository's `catalogs/v8/<cloud>/vms.csv`). Columns are read by NAME: their
order differs per cloud. What is kept:
- rows whose GPU is in gpus.csv with a whole GPU count (CPU-only VMs, TPUs, fractional GPUs and
  GPUs servestack does not know are skipped and counted);
- AWS: one row per (instance type, region, availability-zone ID); zone IDs stay IDs;
- GCP: host rows and GPU rows are joined per zone: bundled machine types (a2/a3/g2) become one
  row with the full price (host + GPUs), N1 hosts stay host rows where an attachable GPU is
  sold, and T4/V100 GPU rows become per-single-GPU rows (`nvidia-tesla-t4`, ...);
- Azure: region rows, no zones.
Empty prices stay empty. Where instances.csv knows an instance type its facts win (it carries
corrections, e.g. Azure H100 NVL sizes).
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from servestack.errors import UserError

from . import CLOUDS, Gpu
from .gcp import ACCELERATOR_TYPES, N1_ATTACH_LIMITS
from .refresh import Fact, PriceRow, clean_price

FILE_NAME = "vms.csv"
REQUIRED = {
    "aws": ("InstanceType", "AcceleratorName", "AcceleratorCount", "vCPUs", "MemoryGiB",
            "Price", "SpotPrice", "Region", "AvailabilityZone"),
    "gcp": ("InstanceType", "vCPUs", "MemoryGiB", "AcceleratorName", "AcceleratorCount",
            "Region", "AvailabilityZone", "Price", "SpotPrice"),
    "azure": ("InstanceType", "AcceleratorName", "AcceleratorCount", "vCPUs", "MemoryGiB",
              "Price", "SpotPrice", "Region"),
}
# GCP machine families whose GPUs come with the machine type (priced as host row + GPU row).
GCP_BUNDLED_PREFIXES = ("a2-", "a3-", "a4-", "g2-", "g4-")
VERSION_DIR = re.compile(r"^v\d+$")


@dataclass
class ImportResult:
    cloud: str
    path: Path
    rows: list[PriceRow]
    source: str
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Line:
    """One vms.csv line, parsed; `number` is the file line for messages."""

    number: int
    instance_type: str
    accelerator: str
    count: float | None
    vcpus: float | None
    memory: float | None
    region: str
    zone: str | None
    price: float | None
    spot: float | None


def find_files(directory: str | Path, cloud: str | None = None) -> dict[str, Path]:
    """<DIR>/<cloud>/vms.csv for each cloud found, or <DIR>/vms.csv when --cloud names it."""
    base = Path(directory)
    if not base.is_dir():
        raise UserError(f"{base}: not a directory")
    found: dict[str, Path] = {}
    for name in (cloud,) if cloud else CLOUDS:
        for candidate in (base / name / FILE_NAME, base / "catalogs" / "v8" / name / FILE_NAME):
            if candidate.is_file():
                found[name] = candidate
                break
    if cloud and cloud not in found and (base / FILE_NAME).is_file():
        found[cloud] = base / FILE_NAME
    if not found:
        where = f"{cloud}/{FILE_NAME}" if cloud else f"<cloud>/{FILE_NAME} (aws, gcp, azure)"
        raise UserError(f"{base}: no SkyPilot catalog found (expected {where})")
    return found


def import_file(cloud: str, path: Path, facts: dict[str, Fact], gpus: dict[str, Gpu],
                day: str | None = None) -> ImportResult:
    lines = _read(path, cloud)
    total = len(lines)
    day = day or date.fromtimestamp(path.stat().st_mtime).isoformat()
    source = _source(cloud, path)
    skipped: dict[str, int] = defaultdict(int)
    if any(not line.region for line in lines):
        skipped["no region"] += sum(1 for line in lines if not line.region)
        lines = [line for line in lines if line.region]
    if cloud == "gcp":
        rows = _gcp_rows(lines, facts, gpus, source, day, skipped)
    else:
        rows = [r for line in lines
                if (r := _vm_row(cloud, line, facts, gpus, source, day, skipped)) is not None]
    rows, duplicates = _dedupe(rows)
    notes = [f"read {total} rows from {path}, kept {len(rows)}"]
    notes += [f"skipped {n} row(s): {why}" for why, n in sorted(skipped.items())]
    if duplicates:
        notes.append(f"dropped {duplicates} duplicate row(s) (same type, region and zone)")
    return ImportResult(cloud, path, rows, source, notes)


def _vm_row(cloud: str, line: _Line, facts: dict[str, Fact], gpus: dict[str, Gpu],
            source: str, day: str, skipped: dict[str, int]) -> PriceRow | None:
    """An AWS or Azure VM row with its GPUs, or None (counted in `skipped`)."""
    fact = facts.get(line.instance_type) or _fact_from_line(cloud, line, gpus, skipped)
    if fact is None:
        return None
    zone = line.zone if cloud == "aws" else None
    return PriceRow.from_fact(fact, line.region, zone, line.price, line.spot, source, day)


def _fact_from_line(cloud: str, line: _Line, gpus: dict[str, Gpu],
                    skipped: dict[str, int]) -> Fact | None:
    reason = _gpu_problem(line, gpus)
    if reason is None and (line.vcpus is None or line.memory is None):
        reason = "no vCPUs or memory"
    if reason is not None:
        skipped[reason] += 1
        return None
    gpu = gpus[line.accelerator]
    return Fact(cloud, line.instance_type, gpu.name, int(line.count or 0), gpu.memory_mib,
                int(line.vcpus or 0), line.memory)


def _gpu_problem(line: _Line, gpus: dict[str, Gpu]) -> str | None:
    if not line.accelerator:
        return "no GPU"
    if line.accelerator not in gpus:
        return f"GPU {line.accelerator} is not in gpus.csv"
    if line.count is None or line.count < 1 or line.count != int(line.count):
        return "fractional or missing GPU count"
    return None


def _gcp_rows(lines: list[_Line], facts: dict[str, Fact], gpus: dict[str, Gpu], source: str,
              day: str, skipped: dict[str, int]) -> list[PriceRow]:
    gpu_lines = {(ln.accelerator, ln.count, ln.zone or ln.region): ln
                 for ln in lines if not ln.instance_type and ln.accelerator}
    attach_zones = {place for (acc, _, place) in gpu_lines if acc in ACCELERATOR_TYPES}
    rows = []
    for line in lines:
        if not line.instance_type:
            continue
        if line.instance_type.startswith(GCP_BUNDLED_PREFIXES):
            row = _gcp_bundled(line, facts, gpu_lines, source, day, skipped)
        elif line.instance_type.startswith("n1-"):
            row = _gcp_host(line, attach_zones, source, day, skipped)
        else:
            skipped["no GPU"] += 1
            row = None
        if row is not None:
            rows.append(row)
    rows.extend(_gcp_attachable(gpu_lines, gpus, source, day))
    ignored = sum(1 for ln in lines if not ln.instance_type and ln.accelerator
                  and ln.accelerator not in ACCELERATOR_TYPES)
    if ignored:
        skipped["GPU rows joined into machine types or not attachable to N1"] += ignored
    return rows


def _gcp_bundled(line: _Line, facts: dict[str, Fact], gpu_lines: dict, source: str, day: str,
                 skipped: dict[str, int]) -> PriceRow | None:
    fact = facts.get(line.instance_type)
    if fact is None or not fact.accelerator:
        skipped["GCP machine type with bundled GPUs not in instances.csv"] += 1
        return None
    gpu = gpu_lines.get((fact.accelerator, float(fact.accelerator_count or 0),
                         line.zone or line.region))
    if gpu is None:
        skipped["GCP machine type without a GPU row in its zone"] += 1
        return None
    return PriceRow.from_fact(fact, line.region, line.zone, _add(line.price, gpu.price),
                              _add(line.spot, gpu.spot), source, day)


def _gcp_host(line: _Line, attach_zones: set[str], source: str, day: str,
              skipped: dict[str, int]) -> PriceRow | None:
    vcpus, memory = line.vcpus, line.memory
    fits = vcpus is not None and memory is not None and any(
        lo <= vcpus <= hi and memory <= mem
        for limits in N1_ATTACH_LIMITS.values() for lo, hi, mem in limits.values())
    if not fits or (line.zone or line.region) not in attach_zones:
        skipped["N1 host that no attachable GPU fits, or in a zone without one"] += 1
        return None
    fact = Fact("gcp", line.instance_type, None, None, None, int(vcpus or 0), memory)
    return PriceRow.from_fact(fact, line.region, line.zone, line.price, line.spot, source, day)


def _gcp_attachable(gpu_lines: dict, gpus: dict[str, Gpu], source: str,
                    day: str) -> list[PriceRow]:
    """Per-single-GPU rows for GPUs that attach to N1 hosts (from the smallest bundle listed)."""
    smallest: dict[tuple[str, str], _Line] = {}
    for (acc, count, place), line in gpu_lines.items():
        if acc in ACCELERATOR_TYPES and acc in gpus and count:
            key = (acc, place)
            if key not in smallest or count < (smallest[key].count or 0):
                smallest[key] = line
    rows = []
    for (acc, _), line in sorted(smallest.items()):
        count = line.count or 1.0
        fact = Fact("gcp", ACCELERATOR_TYPES[acc], acc, 1, gpus[acc].memory_mib, None, None)
        rows.append(PriceRow.from_fact(fact, line.region, line.zone, _per(line.price, count),
                                       _per(line.spot, count), source, day))
    return rows


def _dedupe(rows: list[PriceRow]) -> tuple[list[PriceRow], int]:
    seen: dict[tuple[str, str, str], PriceRow] = {}
    for row in rows:
        seen.setdefault(row.key, row)
    return list(seen.values()), len(rows) - len(seen)


def _source(cloud: str, path: Path) -> str:
    version = next((p for p in reversed(path.parts[:-1]) if VERSION_DIR.match(p)), "")
    label = f"{version} " if version else ""
    return f"skypilot-catalog {label}{cloud}/{FILE_NAME} (imported by servestack)"


def _add(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


def _per(value: float | None, count: float) -> float | None:
    return None if value is None else value / count


def _read(path: Path, cloud: str) -> list[_Line]:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            missing = [c for c in REQUIRED[cloud] if c not in header]
            if missing:
                raise UserError(f"{path}: not a SkyPilot {cloud} vms.csv (missing column(s) "
                                f"{', '.join(missing)})")
            return [_parse_line(record, reader.line_num, path) for record in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path}: cannot read: {exc}") from None


def _parse_line(record: dict[str, str | None], number: int, path: Path) -> _Line:
    def text(name: str) -> str:
        return (record.get(name) or "").strip()

    def number_of(name: str) -> float | None:
        value = text(name)
        if not value:
            return None
        try:
            return float(value)
        except ValueError:
            raise UserError(f"{path}:{number}: column {name}: {value!r} is not a number") from None

    return _Line(number=number, instance_type=text("InstanceType"),
                 accelerator=text("AcceleratorName"), count=number_of("AcceleratorCount"),
                 vcpus=number_of("vCPUs"), memory=number_of("MemoryGiB"),
                 region=text("Region"), zone=text("AvailabilityZone") or None,
                 price=clean_price(number_of("Price")), spot=clean_price(number_of("SpotPrice")))
