"""Which catalog files are in use, and loading them into a Catalog the planner can trust.

Two places hold cloud files. The shipped catalog sits inside the package and is never written;
`catalog refresh` writes the user catalog into $XDG_DATA_HOME/servestack/catalog (default
~/.local/share/servestack/catalog). Without an explicit folder the loader layers them per
cloud: the file whose newest row is newer wins, the user's on a tie. An explicit folder
(--catalog-dir or SERVESTACK_CATALOG_DIR) is read as the catalog itself; the GPU table and the
region list fall back to the shipped ones where it has none.

Spot at or above on-demand is not a price: the loader makes it unknown (None) and says so.

Not here: parsing cells (files.py), a cloud's billing rules (per-cloud modules), the
consistency report of `catalog validate` (checks.py).
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import replace
from datetime import date
from pathlib import Path

from .base import CLOUD_TITLES, CLOUDS, Catalog, CloudFile, Gpu, PriceRow
from .files import DATA_DIR, read_gpus, read_rows, records
from .registry import provider

ENV_DIR = "SERVESTACK_CATALOG_DIR"
STALE_DAYS = 90  # prices older than this are stale
REFRESH_COMMAND = "servestack catalog refresh"


def explicit_dir(override: str | os.PathLike | None = None) -> Path | None:
    """The folder the user named (flag, else SERVESTACK_CATALOG_DIR), or None."""
    named = override or os.environ.get(ENV_DIR)
    return Path(named) if named else None


def user_dir(override: str | os.PathLike | None = None) -> Path:
    """Where `catalog refresh` writes: the named folder, else the user's data folder."""
    named = explicit_dir(override)
    if named is not None:
        return named
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "servestack" / "catalog"


def load_gpus(directory: str | os.PathLike | None = None) -> dict[str, Gpu]:
    """The shipped GPU table, with the rows of the folder's own gpus.csv (if any) on top."""
    gpus = read_gpus(DATA_DIR / "gpus.csv")
    local = user_dir(directory) / "gpus.csv"
    if local.exists() and local.resolve() != (DATA_DIR / "gpus.csv").resolve():
        gpus.update(read_gpus(local))
    return gpus


def known_regions(directory: str | os.PathLike | None = None) -> dict[str, set[str]]:
    """Every public region per cloud (regions.csv), whether or not it has GPU offers."""
    path = user_dir(directory) / "regions.csv"
    if not path.exists():
        path = DATA_DIR / "regions.csv"
    regions: dict[str, set[str]] = defaultdict(set)
    for _, record in records(path, ("cloud", "region", "geography")):
        regions[record["cloud"].strip()].add(record["region"].strip())
    return regions


def cloud_rows(cloud: str, gpus: dict[str, Gpu],
               directory: str | os.PathLike | None = None) -> tuple[CloudFile, list[PriceRow]]:
    """The file in use for `cloud` and its rows as written (no price dropped yet).

    The CloudFile's path does not exist when neither place has a file for the cloud.
    """
    named = explicit_dir(directory)
    if named is not None:
        return _read(cloud, named / f"{cloud}.csv", gpus)
    shipped = _read(cloud, DATA_DIR / f"{cloud}.csv", gpus)
    user = _read(cloud, user_dir() / f"{cloud}.csv", gpus)
    if not user[1]:
        return shipped
    if shipped[1] and (shipped[0].newest or "") > (user[0].newest or ""):
        return shipped
    return user


def load_catalog(directory: str | os.PathLike | None = None,
                 clouds: tuple[str, ...] = CLOUDS) -> Catalog:
    """Read and validate the GPU table and each cloud's file in use (see the module docstring)."""
    gpus = load_gpus(directory)
    catalog = Catalog(gpus=gpus, offers=[])
    for cloud in clouds:
        file, rows = cloud_rows(cloud, gpus, directory)
        catalog.files[cloud] = file
        if not file.path.exists():
            catalog.warnings.append(f"{file.path}: missing; no {CLOUD_TITLES[cloud]} offers "
                                    "planned")
            continue
        rows, warnings = trusted_prices(cloud, rows)
        catalog.warnings.extend(warnings)
        catalog.offers.extend(provider(cloud).offers(rows, gpus))
        if file.newest:
            catalog.dates[cloud] = file.newest
    return catalog


def trusted_prices(cloud: str, rows: list[PriceRow]) -> tuple[list[PriceRow], list[str]]:
    """Rows with every spot price at or above on-demand made unknown, and a warning for each."""
    kept, warnings = [], []
    for row in rows:
        if row.price is not None and row.spot_price is not None and row.spot_price >= row.price:
            warnings.append(f"{row.where}: {CLOUD_TITLES[cloud]} {row.instance_type} in "
                            f"{row.place}: spot ${row.spot_price:.4f}/h is at or above on-demand "
                            f"${row.price:.4f}/h; spot price treated as unknown")
            row = replace(row, spot_price=None)
        kept.append(row)
    return kept, warnings


def stale_prices(oldest: dict[str, str], today: date | None = None,
                 max_age_days: int = STALE_DAYS) -> list[str]:
    """A warning per cloud whose oldest price in use (cloud -> ISO date) is too old."""
    today = today or date.today()
    warnings = []
    for cloud, day in sorted(oldest.items()):
        age = (today - date.fromisoformat(day)).days
        if age > max_age_days:
            warnings.append(f"{CLOUD_TITLES[cloud]} prices in use date from {day}, {age} days "
                            f"ago (more than {max_age_days}); run `{REFRESH_COMMAND} --cloud "
                            f"{cloud}`")
    return warnings


def _read(cloud: str, path: Path, gpus: dict[str, Gpu]) -> tuple[CloudFile, list[PriceRow]]:
    rows = read_rows(path, gpus) if path.exists() else []
    dates = [row.date for row in rows]
    origin = "shipped" if path.parent.resolve() == DATA_DIR else "user"
    return CloudFile(cloud, path, origin, max(dates, default=None),
                     min(dates, default=None)), rows
