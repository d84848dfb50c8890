"""`catalog validate`'s consistency report: what loads, but looks wrong.

The loader refuses what is broken (a bad cell, an unknown GPU, a duplicate row, GPU memory in
the wrong unit) and makes spot at or above on-demand unknown. This module lists, per kind, what
a reviewer should look at: those inverted spot prices, the same instance type priced more than
`SPREAD_LIMIT` times apart across one cloud's regions, GPU memory that differs from the GPU
table, rows without an on-demand price, and prices older than the staleness limit.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date

from .base import CLOUD_TITLES, CloudFile, Gpu, PriceRow
from .files import memory_disagrees
from .loader import STALE_DAYS, stale_prices, trusted_prices

SPREAD_LIMIT = 2.0  # one instance type's on-demand price across regions of one cloud

SPOT_INVERTED = "spot at or above on-demand (treated as unknown)"
SPREAD = f"instance type priced more than {SPREAD_LIMIT:g}x apart across regions"
MEMORY = "GPU memory that differs from gpus.csv"
NO_PRICE = "rows without an on-demand price"
STALE = "stale prices"


def findings(file: CloudFile, rows: list[PriceRow], gpus: dict[str, Gpu],
             today: date | None = None, max_age_days: int = STALE_DAYS) -> dict[str, list[str]]:
    """Kind -> one line per suspicious thing in one cloud's file in use; empty kinds left out."""
    kinds = {
        SPOT_INVERTED: trusted_prices(file.cloud, rows)[1],
        SPREAD: price_spreads(file.cloud, rows),
        MEMORY: memory_differences(rows, gpus),
        NO_PRICE: [f"{r.where}: {r.instance_type} in {r.place}" for r in rows if r.price is None],
        STALE: stale_rows(file, rows, today, max_age_days),
    }
    return {kind: lines for kind, lines in kinds.items() if lines}


def price_spreads(cloud: str, rows: list[PriceRow]) -> list[str]:
    by_type: dict[str, list[PriceRow]] = defaultdict(list)
    for row in rows:
        if row.price is not None:
            by_type[row.instance_type].append(row)
    lines = []
    for instance_type, priced in sorted(by_type.items()):
        low = min(priced, key=lambda r: r.price or 0.0)
        high = max(priced, key=lambda r: r.price or 0.0)
        if low.price and high.price and high.price > SPREAD_LIMIT * low.price:
            lines.append(f"{CLOUD_TITLES[cloud]} {instance_type}: ${low.price:.4f}/h in "
                         f"{low.place} ({low.where}) but ${high.price:.4f}/h in {high.place} "
                         f"({high.where}), {high.price / low.price:.1f}x")
    return lines


def memory_differences(rows: list[PriceRow], gpus: dict[str, Gpu]) -> list[str]:
    """One line per (instance type, memory) whose GPU memory is not the GPU table's figure."""
    first: dict[tuple[str, int], PriceRow] = {}
    for row in rows:
        gpu = gpus.get(row.accelerator or "")
        mib = row.gpu_memory_mib
        if gpu is not None and mib is not None and memory_disagrees(mib, gpu.memory_mib):
            first.setdefault((row.instance_type, mib), row)
    return [f"{row.where}: {row.instance_type}: {row.gpu_memory_mib} MiB per {row.accelerator}, "
            f"the GPU table says {gpus[row.accelerator or ''].memory_mib} MiB"
            for row in first.values()]


def stale_rows(file: CloudFile, rows: list[PriceRow], today: date | None,
               max_age_days: int) -> list[str]:
    if not file.oldest:
        return []
    warnings = stale_prices({file.cloud: file.oldest}, today, max_age_days)
    cutoff = date.fromordinal((today or date.today()).toordinal() - max_age_days).isoformat()
    old = sum(1 for row in rows if row.date < cutoff)
    return [f"{file.path.name}: {old} of {len(rows)} rows: {line}" for line in warnings]
