"""AWS: what the catalog knows of EC2, and how its prices are fetched.

Offers: one per row of aws.csv; zones are availability-zone IDs (use1-az1), and spot is priced
per zone, so the planner keeps spot candidates per zone. SkyPilot's vms.csv lines are whole VMs.

Prices: on-demand from the public Price List bulk API, spot from a public source.

On-demand: `{base}/offers/v1.0/aws/AmazonEC2/current/region_index.json` names each region's
current offer file; each is downloaded once (cached, with progress) and read for Linux, shared
tenancy, no pre-installed software, capacity status "Used", OnDemand, per-hour USD prices. The
CSV form of the offer file is the default because it streams: us-east-1's JSON form is hundreds
of MB and has to be parsed whole (`--aws-format json` reads it anyway).

Spot (`--aws-spot`):
- feed: the JSON feed behind the EC2 Spot pricing page (website.spot.ec2.aws.a2z.com/spot.json).
  Public, no credentials; one current Linux price per instance type and region, not per zone.
- history: EC2 DescribeSpotPriceHistory through boto3 (needs AWS credentials): the current price
  per availability-zone ID, which is what SkyPilot's catalog records.
- auto (default): history when AWS credentials are configured locally, else (or if it fails) feed.
- none: no spot prices.
Zone IDs come from spot history, else from the current catalog; with none known the row is
priced for the region with an empty zone.

Not here: reading and writing the CSV files (files.py), the guarded write (refresh.py).
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from servestack.errors import UserError

from .base import Gpu, Offer, PriceRow
from .fetching import FetchContext, FetchResult, RefreshOptions
from .skypilot_import import COLUMNS, ImportContext, SkyLine, vm_rows

if TYPE_CHECKING:
    from .http import Http

PRICING_URL = "https://pricing.us-east-1.amazonaws.com"
ENV_URL = "SERVESTACK_AWS_PRICING_URL"
SPOT_FEED_URL = "https://website.spot.ec2.aws.a2z.com/spot.json"
# A zone *name* of a region (us-east-1a). The catalog keeps zone IDs (use1-az1): IDs are the same
# zone in every account, while each account maps names to zones its own way ("AZ IDs", AWS RAM
# user guide), so only the deploying account knows which ID a name is.
ZONE_NAME = r"^{region}[a-z]$"
ENV_SPOT_URL = "SERVESTACK_AWS_SPOT_URL"
REGION_INDEX_PATH = "/offers/v1.0/aws/AmazonEC2/current/region_index.json"
SPOT_MODES = ("auto", "feed", "history", "none")
OFFER_FORMATS = ("csv", "json")
FALLBACK_REGIONS = ("us-east-1", "us-east-2", "us-west-2")
# Offer rows kept (CSV column, lower-cased -> allowed values); JSON attributes are mapped below.
OFFER_FILTERS = {
    "termtype": {"OnDemand"},
    "unit": {"Hrs"},
    "currency": {"USD"},
    "operating system": {"Linux"},
    "tenancy": {"Shared"},
    "capacitystatus": {"Used"},
    "pre installed s/w": {"", "NA"},
    "license model": {"", "No License required"},
    "operation": {"", "RunInstances"},
    "marketoption": {"", "OnDemand"},
    "product family": {"Compute Instance", "Compute Instance (bare metal)"},
}
REQUIRED_COLUMNS = ("instance type", "priceperunit", "termtype", "operating system", "tenancy")
JSON_ATTRIBUTES = {
    "operating system": "operatingSystem",
    "tenancy": "tenancy",
    "capacitystatus": "capacitystatus",
    "pre installed s/w": "preInstalledSw",
    "license model": "licenseModel",
    "operation": "operation",
    "marketoption": "marketoption",
}
# Region keys the spot feed has used besides the region codes themselves.
LEGACY_SPOT_REGIONS = {
    "us-east": "us-east-1",
    "us-west": "us-west-1",
    "eu-ireland": "eu-west-1",
    "apac-sin": "ap-southeast-1",
    "apac-syd": "ap-southeast-2",
    "apac-tokyo": "ap-northeast-1",
}
SPOT_PRODUCT = "Linux/UNIX"
PROGRESS_ROWS = 200_000

ClientFactory = Callable[[str], Any]


class Aws:
    name: str = "aws"
    spot_per_zone: bool = True  # EC2 spot prices differ per availability zone
    skypilot_columns: tuple[str, ...] = (*COLUMNS, "AvailabilityZone")

    def offers(self, rows: list[PriceRow], gpus: dict[str, Gpu]) -> list[Offer]:
        return [Offer.from_row(self.name, row) for row in rows]

    def unpriced_zone(self, zone: str, region: str) -> bool:
        return is_zone_name(zone, region)  # the catalog keeps zone IDs; a name maps per account

    def regional_image(self, image: str) -> bool:
        return image.startswith("ami-")  # an AMI id is one region's

    def missing_credentials(self, options: RefreshOptions) -> str | None:
        return None  # the price lists are public; spot history falls back to the public feed

    def fetch(self, ctx: FetchContext, options: RefreshOptions) -> FetchResult:
        return fetch(ctx, base_url=options.urls.get("aws"), spot_url=options.urls.get("aws_spot"),
                     spot_mode=options.aws_spot, offer_format=options.aws_format)

    def import_skypilot(self, lines: list[SkyLine], ctx: ImportContext) -> list[PriceRow]:
        return vm_rows(lines, ctx, keep_zone=True)


PROVIDER = Aws()


def resolve_url(flag: str | None = None) -> str:
    return (flag or os.environ.get(ENV_URL) or PRICING_URL).rstrip("/")


def resolve_spot_url(flag: str | None = None) -> str:
    return flag or os.environ.get(ENV_SPOT_URL) or SPOT_FEED_URL


def fetch(ctx: FetchContext, base_url: str | None = None, spot_url: str | None = None,
          spot_mode: str = "auto", offer_format: str = "csv",
          ec2_client: ClientFactory | None = None) -> FetchResult:
    if spot_mode not in SPOT_MODES or offer_format not in OFFER_FORMATS:
        raise UserError(f"--aws-spot must be one of {', '.join(SPOT_MODES)} and --aws-format "
                        f"one of {', '.join(OFFER_FORMATS)}")
    base = resolve_url(base_url)
    index = ctx.http.get_json(base + REGION_INDEX_PATH, label="AWS price list region index")
    regions = _regions(ctx, index)
    wanted = set(ctx.facts)
    on_demand: dict[str, dict[str, float]] = {}
    published = set()
    for region in regions:
        url = base + _offer_path(index, region, offer_format)
        path = ctx.http.download(url, label=f"AWS {region} price list")
        on_demand[region], day = _read_offer(path, wanted, offer_format, ctx.http, region)
        published.add(day)
    spot = _spot(ctx, regions, spot_mode, resolve_spot_url(spot_url), ec2_client)
    rows = _rows(ctx, regions, on_demand, spot, f"AWS Price List API on-demand + {spot.label}")
    source = (f"AWS Price List bulk API (AmazonEC2 offer files, {offer_format}, published "
              f"{', '.join(sorted(d for d in published if d)) or 'unknown'}); "
              f"spot: {spot.label}")
    return FetchResult(rows=rows, source=source, notes=spot.notes)


class _Spot:
    """Spot prices by (region, zone ID or None) -> instance type -> $/h, and where from."""

    def __init__(self, label: str, per_zone: bool,
                 prices: dict[tuple[str, str | None], dict[str, float]] | None = None,
                 notes: list[str] | None = None) -> None:
        self.label = label
        self.per_zone = per_zone
        self.prices = prices or {}
        self.notes = notes or []

    def zones(self, instance_type: str, region: str) -> set[str]:
        return {z for (r, z), types in self.prices.items()
                if r == region and z and instance_type in types}

    def price(self, instance_type: str, region: str, zone: str | None) -> float | None:
        key = (region, zone if self.per_zone else None)
        return self.prices.get(key, {}).get(instance_type)


def _rows(ctx: FetchContext, regions: list[str], on_demand: dict[str, dict[str, float]],
          spot: _Spot, source: str) -> list[PriceRow]:
    rows = []
    for name, fact in sorted(ctx.facts.items()):
        for region in regions:
            price = on_demand.get(region, {}).get(name)
            zones = set(z for z in ctx.zones(name, region) if z) | spot.zones(name, region)
            places: list[str | None] = [*sorted(zones)] or [None]  # None: priced per region
            for zone in places:
                spot_price = spot.price(name, region, zone)
                if price is None and spot_price is None:
                    continue
                rows.append(PriceRow.priced(fact, region, zone, price, spot_price, source,
                                            ctx.today))
    return rows


def _regions(ctx: FetchContext, index: Any) -> list[str]:
    available = set((index or {}).get("regions") or {}) if isinstance(index, dict) else set()
    if not available:
        raise UserError("AWS price list region index: unexpected response (no regions)")
    if ctx.regions is not None:
        unknown = sorted(ctx.regions - available)
        if unknown:
            raise UserError(f"AWS has no EC2 price list for region(s) {', '.join(unknown)}")
        return sorted(ctx.regions)
    if ctx.all_regions:
        return sorted(available)
    known = {r.region for r in ctx.known} & available
    return sorted(known or set(FALLBACK_REGIONS) & available)


def _offer_path(index: dict[str, Any], region: str, offer_format: str) -> str:
    entry = index["regions"].get(region) or {}
    path = str(entry.get("currentVersionUrl") or
               f"/offers/v1.0/aws/AmazonEC2/current/{region}/index.json")
    stem, dot, _ = path.rpartition(".")
    return f"{stem}.{offer_format}" if dot else path


def _read_offer(path: Path, wanted: set[str], offer_format: str, http: Http,
                region: str) -> tuple[dict[str, float], str]:
    label = f"AWS {region} price list"
    try:
        if offer_format == "json":
            return _parse_offer_json(path, wanted, label)
        return _parse_offer_csv(path, wanted, label, http)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        path.unlink(missing_ok=True)  # do not keep a damaged file in the cache
        raise UserError(f"{label}: cannot read the offer file: {exc}") from None


def _spot(ctx: FetchContext, regions: list[str], mode: str, feed_url: str,
          factory: ClientFactory | None) -> _Spot:
    if mode == "none":
        return _Spot("no spot prices (--aws-spot none)", per_zone=False)
    if mode == "history" or (mode == "auto" and (factory or _has_local_credentials())):
        try:
            prices = _spot_history(regions, set(ctx.facts), factory or _boto3_factory(ctx.http))
            return _Spot("EC2 DescribeSpotPriceHistory (Linux/UNIX, per zone ID)", True, prices)
        except UserError as exc:
            if mode == "history":
                raise
            note = f"spot price history unavailable ({exc}); used the public spot feed"
            feed = _spot_feed(ctx.http, feed_url)
            return _Spot(feed.label, False, feed.prices, [note])
    return _spot_feed(ctx.http, feed_url)


def _spot_feed(http: Http, url: str) -> _Spot:
    data = http.get_json(url, label="AWS spot price feed")
    return _Spot("EC2 Spot pricing page feed (spot.json, Linux, per region)", False,
                 {(region, None): types for region, types in _parse_spot_feed(data).items()})


def _spot_history(regions: list[str], types: set[str],
                  factory: ClientFactory) -> dict[tuple[str, str | None], dict[str, float]]:
    from botocore.exceptions import BotoCoreError, ClientError

    prices: dict[tuple[str, str | None], dict[str, float]] = defaultdict(dict)
    for region in regions:
        try:
            _history_region(factory(region), region, types, prices)
        except (BotoCoreError, ClientError) as exc:
            raise UserError(f"AWS spot price history in {region}: {exc}") from None
    return dict(prices)


def _history_region(client: Any, region: str, types: set[str],
                    prices: dict[tuple[str, str | None], dict[str, float]]) -> None:
    latest: dict[tuple[str, str], tuple[Any, float]] = {}
    names: dict[str, str] | None = None
    pages = client.get_paginator("describe_spot_price_history").paginate(
        InstanceTypes=sorted(types), ProductDescriptions=[SPOT_PRODUCT],
        StartTime=datetime.now(timezone.utc))
    for page in pages:
        for item in page.get("SpotPriceHistory", []):
            zone = item.get("AvailabilityZoneId")
            if not zone:
                names = names if names is not None else _zone_ids(client)
                zone = names.get(item.get("AvailabilityZone", ""))
            key = (item.get("InstanceType", ""), zone or "")
            stamp = item.get("Timestamp")
            if zone and key[0] in types and (key not in latest or stamp > latest[key][0]):
                latest[key] = (stamp, float(item["SpotPrice"]))
    for (instance_type, zone), (_, price) in latest.items():
        prices[(region, zone)][instance_type] = price


def _zone_ids(client: Any) -> dict[str, str]:
    zones = client.describe_availability_zones().get("AvailabilityZones", [])
    return {z["ZoneName"]: z["ZoneId"] for z in zones if "ZoneName" in z and "ZoneId" in z}


def _boto3_factory(http: Http) -> ClientFactory:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise UserError("--aws-spot history needs boto3 (pip install boto3)") from None
    config = Config(connect_timeout=http.timeout, read_timeout=http.timeout,
                    retries={"max_attempts": http.retries + 1, "mode": "standard"})
    return lambda region: boto3.client("ec2", region_name=region, config=config)


def _has_local_credentials() -> bool:
    """AWS credentials configured on this machine (no instance-metadata probe, which is slow)."""
    if any(os.environ.get(n) for n in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE",
                                       "AWS_WEB_IDENTITY_TOKEN_FILE")):
        return True
    path = os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials"
    return Path(path).expanduser().is_file()


def _parse_spot_feed(data: Any) -> dict[str, dict[str, float]]:
    """spot.json -> region code -> instance type -> Linux $/h."""
    config = data.get("config") if isinstance(data, dict) else None
    regions = config.get("regions") if isinstance(config, dict) else None
    if not isinstance(regions, list):
        raise UserError("AWS spot price feed: unexpected response (no config.regions list)")
    out: dict[str, dict[str, float]] = {}
    for entry in regions:
        code = str(entry.get("region") or "")
        prices = out.setdefault(LEGACY_SPOT_REGIONS.get(code, code), {})
        for family in entry.get("instanceTypes") or []:
            for size in family.get("sizes") or []:
                value = _feed_price(size)
                if value is not None:
                    prices[str(size.get("size"))] = value
    return out


def _feed_price(size: dict[str, Any]) -> float | None:
    for column in size.get("valueColumns") or []:
        if column.get("name") == "linux":
            usd = (column.get("prices") or {}).get("USD")
            try:
                value = float(usd) if usd is not None else 0.0
            except (TypeError, ValueError):
                return None  # "N/A*" and the like
            return value if value > 0 else None
    return None


def _parse_offer_csv(path: Path, wanted: set[str], label: str,
                     http: Http) -> tuple[dict[str, float], str]:
    """Stream an offer CSV: metadata lines, a header starting with "SKU", then one rate a row."""
    meta: dict[str, str] = {}
    prices: dict[str, float] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = _csv_header(reader, meta, label)
        col = {name: i for i, name in enumerate(header)}
        checks = [(col[name], allowed) for name, allowed in OFFER_FILTERS.items() if name in col]
        type_at, price_at = col["instance type"], col["priceperunit"]
        for count, values in enumerate(reader, 1):
            if count % PROGRESS_ROWS == 0:
                http.progress.update(f"{label}: read {count:,} rates")
            if len(values) != len(header) or values[type_at] not in wanted:
                continue
            if all(values[i] in allowed for i, allowed in checks):
                _keep_lowest(prices, values[type_at], values[price_at])
    return prices, meta.get("Publication Date", "")[:10]


def _csv_header(reader: Any, meta: dict[str, str], label: str) -> list[str]:
    for values in reader:
        if values and values[0] == "SKU":
            header = [v.strip().lower() for v in values]
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise UserError(f"{label}: not an EC2 offer file (no column {missing[0]!r})")
            return header
        if len(values) >= 2:
            meta[values[0]] = values[1]
    raise UserError(f"{label}: not an EC2 offer file (no header line starting with SKU)")


def _parse_offer_json(path: Path, wanted: set[str], label: str) -> tuple[dict[str, float], str]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except ValueError as exc:
        path.unlink(missing_ok=True)
        raise UserError(f"{label}: the offer file is not valid JSON ({exc})") from None
    products = data.get("products") if isinstance(data, dict) else None
    terms = (data.get("terms") or {}).get("OnDemand") if isinstance(data, dict) else None
    if not isinstance(products, dict) or not isinstance(terms, dict):
        raise UserError(f"{label}: not an EC2 offer file (no products / terms.OnDemand)")
    prices: dict[str, float] = {}
    for sku, product in products.items():
        name = _json_product_type(product, wanted)
        if name is None:
            continue
        for term in (terms.get(sku) or {}).values():
            for dimension in (term.get("priceDimensions") or {}).values():
                if dimension.get("unit") == "Hrs":
                    _keep_lowest(prices, name, (dimension.get("pricePerUnit") or {}).get("USD"))
    return prices, str(data.get("publicationDate") or "")[:10]


def _json_product_type(product: dict[str, Any], wanted: set[str]) -> str | None:
    attributes = product.get("attributes") or {}
    name = attributes.get("instanceType")
    if name not in wanted:
        return None
    if product.get("productFamily") not in OFFER_FILTERS["product family"]:
        return None
    for column, key in JSON_ATTRIBUTES.items():
        if str(attributes.get(key, "")) not in OFFER_FILTERS[column]:
            return None
    return name


def _keep_lowest(prices: dict[str, float], name: str, text: Any) -> None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return
    if value > 0 and (name not in prices or value < prices[name]):
        prices[name] = value


def is_zone_name(zone: str, region: str) -> bool:
    """A zone name of `region` (us-east-1a), not a zone ID (use1-az1)."""
    return re.match(ZONE_NAME.format(region=re.escape(region)), zone) is not None
