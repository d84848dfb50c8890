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
corrections, e.g. Azure H100 NVL sizes). A file's date is its snapshot's: the last commit that
touched it when it sits in a git checkout (such as skypilot-catalog), else its modification day.

This module reads the files and holds the helpers; how each cloud's lines become rows is each
per-cloud module's `import_skypilot`. Writing is refresh.py's guarded writer.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Protocol

from servestack.errors import UserError

from .base import CLOUDS, Gpu, Instance, PriceRow, clean_price

FILE_NAME = "vms.csv"
# The vms.csv columns every cloud's file has; a cloud module adds the ones it reads besides.
COLUMNS = ("InstanceType", "AcceleratorName", "AcceleratorCount", "vCPUs", "MemoryGiB", "Price",
           "SpotPrice", "Region")
VERSION_DIR = re.compile(r"^v\d+$")


@dataclass
class ImportResult:
    cloud: str
    path: Path
    rows: list[PriceRow]
    source: str
    notes: list[str] = field(default_factory=list)


@dataclass
class ImportContext:
    """What a per-cloud `import_skypilot` needs; `skipped` counts dropped lines by reason."""

    cloud: str
    facts: dict[str, Instance]
    gpus: dict[str, Gpu]
    source: str
    day: str
    skipped: dict[str, int] = field(default_factory=lambda: defaultdict(int))


@dataclass(frozen=True)
class SkyLine:
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


class Converter(Protocol):
    """The part of a per-cloud module that reads SkyPilot's files."""

    name: str
    skypilot_columns: tuple[str, ...]  # the vms.csv columns it needs

    def import_skypilot(self, lines: list[SkyLine], ctx: ImportContext) -> list[PriceRow]: ...


def import_file(cloud: Converter, path: Path, facts: dict[str, Instance], gpus: dict[str, Gpu],
                day: str | None = None) -> ImportResult:
    """Read one vms.csv and turn its lines into rows with the cloud's `import_skypilot`."""
    lines = _read(path, cloud.name, cloud.skypilot_columns)
    total = len(lines)
    ctx = ImportContext(cloud.name, facts, gpus, _source(cloud.name, path),
                        day or snapshot_date(path))
    if any(not line.region for line in lines):
        ctx.skipped["no region"] += sum(1 for line in lines if not line.region)
        lines = [line for line in lines if line.region]
    rows, duplicates = _dedupe(cloud.import_skypilot(lines, ctx))
    notes = [f"read {total} rows from {path}, kept {len(rows)}"]
    notes += [f"skipped {n} row(s): {why}" for why, n in sorted(ctx.skipped.items())]
    if duplicates:
        notes.append(f"dropped {duplicates} duplicate row(s) (same type, region and zone)")
    return ImportResult(cloud.name, path, rows, ctx.source, notes)


def snapshot_date(path: Path) -> str:
    """The day of the last commit that touched `path` if it is committed unchanged, else the
    day it was last written."""
    import subprocess  # here, not at the top: planning imports this module and never needs it

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args, "--", path.name], cwd=path.parent,
                              capture_output=True, text=True, timeout=10)

    try:
        committed = git("log", "-1", "--format=%cs")
        day = committed.stdout.strip()
        if committed.returncode == 0 and len(day) == 10 and git("diff", "--quiet", "HEAD")\
                .returncode == 0:
            return day
    except (OSError, subprocess.SubprocessError):
        pass  # no git: the file's own date is all there is
    return date.fromtimestamp(path.stat().st_mtime).isoformat()


def vm_rows(lines: list[SkyLine], ctx: ImportContext, keep_zone: bool) -> list[PriceRow]:
    """Rows for clouds whose vms.csv lines are whole VMs with their GPUs (AWS, Azure)."""
    rows = []
    for line in lines:
        instance = ctx.facts.get(line.instance_type) or _instance_from_line(line, ctx)
        if instance is not None:
            zone = line.zone if keep_zone else None
            rows.append(PriceRow.priced(instance, line.region, zone, line.price, line.spot,
                                        ctx.source, ctx.day))
    return rows


def _instance_from_line(line: SkyLine, ctx: ImportContext) -> Instance | None:
    reason = gpu_problem(line, ctx.gpus)
    if reason is None and (line.vcpus is None or line.memory is None):
        reason = "no vCPUs or memory"
    if reason is not None:
        ctx.skipped[reason] += 1
        return None
    gpu = ctx.gpus[line.accelerator]
    return Instance(ctx.cloud, line.instance_type, gpu.name, int(line.count or 0), gpu.memory_mib,
                    int(line.vcpus or 0), line.memory)


def gpu_problem(line: SkyLine, gpus: dict[str, Gpu]) -> str | None:
    if not line.accelerator:
        return "no GPU"
    if line.accelerator not in gpus:
        return f"GPU {line.accelerator} is not in gpus.csv"
    if line.count is None or line.count < 1 or line.count != int(line.count):
        return "fractional or missing GPU count"
    return None


def _dedupe(rows: list[PriceRow]) -> tuple[list[PriceRow], int]:
    seen: dict[tuple[str, str, str], PriceRow] = {}
    for row in rows:
        seen.setdefault(row.key, row)
    return list(seen.values()), len(rows) - len(seen)


def _source(cloud: str, path: Path) -> str:
    version = next((p for p in reversed(path.parts[:-1]) if VERSION_DIR.match(p)), "")
    label = f"{version} " if version else ""
    return f"skypilot-catalog {label}{cloud}/{FILE_NAME} (imported by servestack)"


def _read(path: Path, cloud: str, required: tuple[str, ...]) -> list[SkyLine]:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            missing = [c for c in required if c not in header]
            if missing:
                raise UserError(f"{path}: not a SkyPilot {cloud} vms.csv (missing column(s) "
                                f"{', '.join(missing)})")
            return [_parse_line(record, reader.line_num, path) for record in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path}: cannot read: {exc}") from None


def _parse_line(record: dict[str, str | None], number: int, path: Path) -> SkyLine:
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

    return SkyLine(number=number, instance_type=text("InstanceType"),
                 accelerator=text("AcceleratorName"), count=number_of("AcceleratorCount"),
                 vcpus=number_of("vCPUs"), memory=number_of("MemoryGiB"),
                 region=text("Region"), zone=text("AvailabilityZone") or None,
                 price=clean_price(number_of("Price")), spot=clean_price(number_of("SpotPrice")))
