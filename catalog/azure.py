"""Azure: what the catalog knows of Azure VMs, their zones, and how their prices are fetched.

Offers: one per row of azure.csv. Azure prices per region, so rows have no zone; each offer
carries its region's numbered availability zones (azure_zones.csv, read here and nowhere else)
so the planner and the deploy loop see them. `azure_zones(region)` answers the same question.

Prices come from the Azure Retail Prices API (public, no credentials).

One OData `$filter` per batch of VM sizes from instances.csv (Linux pay-as-you-go and Spot
meters, every region unless --regions), paged with `NextPageLink` until it is null. A meter whose
skuName or meterName contains "Spot" is the Spot price; Windows products, Low Priority meters,
DevTest prices and anything not billed per hour are skipped.

Not here: reading and writing the cloud files (files.py), the guarded write (refresh.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from servestack.errors import UserError

from .base import Gpu, Offer, PriceRow
from .fetching import FetchContext, FetchResult, RefreshOptions
from .files import DATA_DIR, records
from .skypilot_import import COLUMNS, ImportContext, SkyLine, vm_rows

if TYPE_CHECKING:
    from .http import Http

PRICES_URL = "https://prices.azure.com/api/retail/prices"
ENV_URL = "SERVESTACK_AZURE_PRICES_URL"
SOURCE = "Azure Retail Prices API (prices.azure.com/api/retail/prices), Linux consumption + Spot"
SKUS_PER_QUERY = 15  # armSkuName clauses per $filter, keeps the URL short
MAX_PAGES = 1000
HOURLY_UNIT = "1 Hour"


ZONES_FILE = DATA_DIR / "azure_zones.csv"


class Azure:
    name: str = "azure"
    spot_per_zone: bool = False
    skypilot_columns: tuple[str, ...] = COLUMNS

    def offers(self, rows: list[PriceRow], gpus: dict[str, Gpu]) -> list[Offer]:
        return [Offer.from_row(self.name, row, azure_zones(row.region)) for row in rows]

    def unpriced_zone(self, zone: str, region: str) -> bool:
        return False  # priced per region: its offers hold the region's zones as they are

    def regional_image(self, image: str) -> bool:
        return False  # image resource ids and gallery images are referenced by id

    def missing_credentials(self, options: RefreshOptions) -> str | None:
        return None  # the Retail Prices API is public

    def fetch(self, ctx: FetchContext, options: RefreshOptions) -> FetchResult:
        return fetch(ctx, base_url=options.urls.get("azure"))

    def import_skypilot(self, lines: list[SkyLine], ctx: ImportContext) -> list[PriceRow]:
        return vm_rows(lines, ctx, keep_zone=False)  # SkyPilot's Azure zones are not priced


PROVIDER = Azure()


def azure_zones(region: str) -> tuple[str, ...]:
    """The availability zones ("1", "2", "3") of an Azure region; () where it has none."""
    return _zone_table().get(region, ())


@cache
def _zone_table() -> dict[str, tuple[str, ...]]:
    return {r["region"].strip(): tuple(r["zones"].split())
            for _, r in records(ZONES_FILE, ("region", "zones"))}


def resolve_url(flag: str | None = None) -> str:
    return flag or os.environ.get(ENV_URL) or PRICES_URL


def fetch(ctx: FetchContext, base_url: str | None = None) -> FetchResult:
    url = resolve_url(base_url)
    names = sorted(ctx.facts)
    items: list[dict[str, Any]] = []
    for start in range(0, len(names), SKUS_PER_QUERY):
        batch = names[start:start + SKUS_PER_QUERY]
        items.extend(_items(ctx.http, url, _filter(batch, ctx.regions)))
    prices = _price_table(items, set(names))
    rows = []
    for (sku, region), quote in sorted(prices.items()):
        if not ctx.wants(region):
            continue
        rows.append(PriceRow.priced(ctx.facts[sku], region, None, quote.price, quote.spot,
                                    SOURCE, ctx.today))
    notes = [f"{len(items)} price meters read"]
    unpriced = sorted(set(names) - {sku for sku, _ in prices})
    if unpriced:
        notes.append(f"no Linux price for: {', '.join(unpriced)}")
    return FetchResult(rows=rows, source=SOURCE, notes=notes)


@dataclass
class _Quote:
    price: float | None = None
    spot: float | None = None
    price_since: str = ""
    spot_since: str = ""

    def add(self, value: float, spot: bool, since: str) -> None:
        if spot and since >= self.spot_since:
            self.spot, self.spot_since = value, since
        elif not spot and since >= self.price_since:
            self.price, self.price_since = value, since


def _items(http: Http, url: str, odata_filter: str) -> list[dict[str, Any]]:
    """Every item of a filtered query, following NextPageLink."""
    items: list[dict[str, Any]] = []
    params: dict[str, Any] | None = {"$filter": odata_filter}
    seen: set[str] = set()
    for page in range(1, MAX_PAGES + 1):
        data = http.get_json(url, params=params, label=f"Azure prices page {page}")
        if not isinstance(data, dict) or not isinstance(data.get("Items"), list):
            raise UserError(f"Azure prices page {page}: unexpected response (no Items list)")
        items.extend(i for i in data["Items"] if isinstance(i, dict))
        http.progress.update(f"Azure prices: page {page}, {len(items)} meters")
        link = data.get("NextPageLink")
        if not link:
            http.progress.done(f"Azure prices: {page} page(s), {len(items)} meters")
            return items
        if link in seen:
            raise UserError(f"Azure prices page {page}: NextPageLink repeats ({link})")
        seen.add(link)
        url, params = link, None
    raise UserError(f"Azure prices: more than {MAX_PAGES} pages; giving up")


def _filter(skus: list[str], regions: frozenset[str] | None) -> str:
    parts = ["serviceName eq 'Virtual Machines'", "priceType eq 'Consumption'",
             "(" + " or ".join(f"armSkuName eq '{s}'" for s in skus) + ")"]
    if regions:
        parts.append("(" + " or ".join(f"armRegionName eq '{r}'" for r in sorted(regions)) + ")")
    return " and ".join(parts)


def _price_table(items: list[dict[str, Any]], wanted: set[str]) -> dict[tuple[str, str], _Quote]:
    table: dict[tuple[str, str], _Quote] = {}
    for item in items:
        parsed = _parse_item(item, wanted)
        if parsed is None:
            continue
        sku, region, spot, value, since = parsed
        table.setdefault((sku, region), _Quote()).add(value, spot, since)
    return table


def _parse_item(item: dict[str, Any], wanted: set[str]):
    """(sku, region, is_spot, $/h, effective date) for a Linux hourly meter, else None."""
    sku = str(item.get("armSkuName") or "")
    region = str(item.get("armRegionName") or "")
    if sku not in wanted or not region:
        return None
    if item.get("type", "Consumption") != "Consumption":
        return None
    if item.get("unitOfMeasure") != HOURLY_UNIT or item.get("currencyCode", "USD") != "USD":
        return None
    names = " ".join(str(item.get(k) or "") for k in ("productName", "skuName", "meterName"))
    if "Windows" in names or "Low Priority" in names:
        return None
    value = item.get("retailPrice", item.get("unitPrice"))
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        return None
    spot = "Spot" in f"{item.get('skuName') or ''} {item.get('meterName') or ''}"
    return sku, region, spot, float(value), str(item.get("effectiveStartDate") or "")
