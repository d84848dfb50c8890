"""The per-cloud modules by name: the one list of the clouds the catalog knows.

Code outside aws.py, gcp.py and azure.py asks a cloud's module (through `provider`) instead of
branching on the cloud's name. Adding a cloud means one module with the methods of `Provider`
and one line here. What each cloud knows lives in its module, not here.
"""

from __future__ import annotations

from typing import Protocol

from . import aws, azure, gcp
from .base import CLOUDS, CatalogError, Gpu, Offer, PriceRow
from .fetching import FetchContext, FetchResult, RefreshOptions
from .skypilot_import import ImportContext, SkyLine


class Provider(Protocol):
    name: str
    spot_per_zone: bool  # spot prices differ per zone: the planner keeps spot candidates per zone
    skypilot_columns: tuple[str, ...]  # the SkyPilot vms.csv columns import_skypilot reads

    def offers(self, rows: list[PriceRow], gpus: dict[str, Gpu]) -> list[Offer]:
        """The cloud file's rows as Offers (the rows are validated already)."""
        ...

    def unpriced_zone(self, zone: str, region: str) -> bool:
        """A spec's zone of `region` that names no zone the catalog prices (AWS: a zone name,
        us-east-1a, while offers are per zone ID): it may hold any of the region's offers, and
        its spot price is the dearest of theirs, since which one it is is known only at deploy."""
        ...

    def regional_image(self, image: str) -> bool:
        """Whether a `resources.image_id` names an image that exists in one region only
        (AWS: an AMI id), so a plan may not spread it over several regions."""
        ...

    def missing_credentials(self, options: RefreshOptions) -> str | None:
        """Why `fetch` cannot run here (e.g. no API key), or None."""
        ...

    def fetch(self, ctx: FetchContext, options: RefreshOptions) -> FetchResult: ...

    def import_skypilot(self, lines: list[SkyLine], ctx: ImportContext) -> list[PriceRow]: ...


PROVIDERS: dict[str, Provider] = {p.name: p for p in (aws.PROVIDER, gcp.PROVIDER, azure.PROVIDER)}
assert tuple(PROVIDERS) == CLOUDS, "base.CLOUDS and the registry list the same clouds"


def provider(cloud: str) -> Provider:
    try:
        return PROVIDERS[cloud]
    except KeyError:
        raise CatalogError(f"unknown cloud {cloud!r} (known: {', '.join(PROVIDERS)})") from None
