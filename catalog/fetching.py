"""What a per-cloud price fetcher is given and gives back (the contract refresh.py drives).

`FetchContext` carries the HTTP client, the instance facts to price, the rows in use today (for
zones) and the region filter; `FetchResult` carries the priced rows and notes for the user. The
fetchers themselves live in the per-cloud modules; the guarded write lives in refresh.py.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .base import CLOUDS, Instance, PriceRow

if TYPE_CHECKING:
    from .http import Http

DEFAULT_THRESHOLD_PCT = 5.0


@dataclass
class RefreshOptions:
    clouds: tuple[str, ...] = CLOUDS
    regions: tuple[str, ...] | None = None  # ("all",) = every region the source prices
    catalog_dir: str | os.PathLike | None = None
    force: bool = False
    dry_run: bool = False
    threshold_pct: float = DEFAULT_THRESHOLD_PCT
    urls: dict[str, str | None] = field(default_factory=dict)  # aws, aws_spot, gcp, azure
    aws_spot: str = "auto"
    aws_format: str = "csv"
    gcp_api_key: str | None = None


@dataclass
class FetchResult:
    """What a fetcher returns: rows, the source line for the file header, and notes for the user."""

    rows: list[PriceRow]
    source: str
    notes: list[str] = field(default_factory=list)


@dataclass
class FetchContext:
    """What a fetcher needs. `regions` None = no filter; `all_regions` = the user asked for all."""

    http: Http
    facts: dict[str, Instance]
    known: list[PriceRow]
    regions: frozenset[str] | None = None
    all_regions: bool = False
    today: str = ""
    _zones: dict[tuple[str, str], list[str]] | None = field(default=None, repr=False)

    def zones(self, instance_type: str, region: str) -> list[str | None]:
        """Zones the current catalog lists for a type in a region; [None] when it lists none."""
        if self._zones is None:
            self._zones = group_zones(self.known)
        return list(self._zones.get((instance_type, region), [])) or [None]

    def wants(self, region: str) -> bool:
        return self.regions is None or region in self.regions


def group_zones(rows: list[PriceRow]) -> dict[tuple[str, str], list[str]]:
    """(instance_type, region) -> zones listed, for callers that need them all at once."""
    zones: dict[tuple[str, str], set[str]] = defaultdict(set)
    for row in rows:
        if row.zone:
            zones[(row.instance_type, row.region)].add(row.zone)
    return {key: sorted(value) for key, value in zones.items()}
