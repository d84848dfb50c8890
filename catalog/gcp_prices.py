"""GCP Compute Engine prices from the Cloud Billing Catalog API, composed the way GCP bills.

GCP prices a VM by parts: a per-vCPU-hour SKU and a per-GiB-hour RAM SKU for each machine family,
and a per-GPU-hour SKU for each GPU model; Spot has its own SKUs ("Spot Preemptible ..."). The
API (`GET {base}/v1/services/6F81-5844-456A/skus?key=...`, pageToken paging, an API key from the
environment) lists them with the regions they are sold in. From them:
- bundled machine types (a2/a3/g2): full price = vCPUs x core + GiB x RAM + GPUs x GPU;
- N1 hosts: vCPUs x core + GiB x RAM, in regions that sell an attachable GPU;
- attachable GPUs (T4, V100): the price of one GPU.
Local SSD bundled with a2-ultragpu/a3 machine types is billed apart and not included. Only SKU
descriptions of the exact forms below are used, so commitment, reservation, DWS and Virtual
Workstation SKUs never mix in.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

from servestack.errors import UserError

from .refresh import Fact, FetchContext, FetchResult, Http, PriceRow

BILLING_URL = "https://cloudbilling.googleapis.com"
ENV_URL = "SERVESTACK_GCP_BILLING_URL"
ENV_API_KEYS = ("SERVESTACK_GCP_API_KEY", "GOOGLE_API_KEY")
SKUS_PATH = "/v1/services/6F81-5844-456A/skus"  # 6F81-5844-456A = Compute Engine
PAGE_SIZE = 5000
MAX_PAGES = 200
SOURCE = "GCP Cloud Billing Catalog API (Compute Engine SKUs: vCPU + RAM + GPU, as billed)"
# Machine-type prefix -> the family name in core/RAM SKU descriptions (longest prefix wins).
FAMILIES = {
    "a2-": "A2",
    "a3-highgpu-": "A3",
    "a3-megagpu-": "A3Plus",
    "a3-ultragpu-": "A3Ultra",
    "g2-": "G2",
    "n1-": "N1 Predefined",
}
# GPU name (gpus.csv) -> the GPU part of its SKU description.
GPU_SKUS = {
    "A100": "Nvidia Tesla A100 GPU",
    "A100-80GB": "Nvidia Tesla A100 80GB GPU",
    "H100": "Nvidia H100 80GB GPU",
    "H100-MEGA": "Nvidia H100 80GB Mega GPU",
    "H200": "H200 141GB GPU",
    "L4": "Nvidia L4 GPU",
    "T4": "Nvidia Tesla T4 GPU",
    "V100": "Nvidia Tesla V100 GPU",
}
UNITS = {"core": "h", "ram": "GiBy.h", "gpu": "h"}
USAGE_TYPES = {False: "OnDemand", True: "Preemptible"}

Part = tuple[str, str, bool]  # (kind, family or GPU name, spot)


def resolve_url(flag: str | None = None) -> str:
    return (flag or os.environ.get(ENV_URL) or BILLING_URL).rstrip("/")


def resolve_key(flag: str | None = None) -> str | None:
    return flag or next((os.environ[n] for n in ENV_API_KEYS if os.environ.get(n)), None)


def require_key(base_url: str | None = None, api_key: str | None = None) -> str | None:
    """The API key to send; an error before any download when Google's endpoint needs one."""
    key = resolve_key(api_key)
    if key is None and resolve_url(base_url) == BILLING_URL:
        raise UserError("GCP refresh needs a Cloud Billing API key: set SERVESTACK_GCP_API_KEY "
                        "(or refresh only --cloud aws / --cloud azure)")
    return key


def fetch(ctx: FetchContext, base_url: str | None = None,
          api_key: str | None = None) -> FetchResult:
    key = require_key(base_url, api_key)
    skus = _skus(ctx.http, resolve_url(base_url) + SKUS_PATH, key)
    table = _price_table(skus)
    rows: list[PriceRow] = []
    notes = [f"{len(skus)} SKUs read"]
    attach_regions = _attach_regions(table, ctx.facts)
    for fact in sorted(ctx.facts.values(), key=lambda f: f.instance_type):
        parts = _parts(fact)
        if parts is None:
            notes.append(f"no billing SKUs known for {fact.instance_type}; skipped")
            continue
        regions = attach_regions if _is_host(fact) else None
        rows.extend(_rows(ctx, fact, parts, table, regions))
    return FetchResult(rows=rows, source=SOURCE, notes=notes)


def _skus(http: Http, url: str, key: str | None) -> list[dict[str, Any]]:
    """Every SKU of the service, following nextPageToken."""
    skus: list[dict[str, Any]] = []
    token = ""
    seen: set[str] = set()
    for page in range(1, MAX_PAGES + 1):
        params: dict[str, Any] = {"currencyCode": "USD", "pageSize": PAGE_SIZE}
        if key:
            params["key"] = key
        if token:
            params["pageToken"] = token
        data = http.get_json(url, params=params, label=f"GCP billing SKUs page {page}")
        if not isinstance(data, dict) or not isinstance(data.get("skus", []), list):
            raise UserError(f"GCP billing SKUs page {page}: unexpected response (no skus list)")
        skus.extend(s for s in data.get("skus", []) if isinstance(s, dict))
        http.progress.update(f"GCP billing SKUs: page {page}, {len(skus)} SKUs")
        token = str(data.get("nextPageToken") or "")
        if not token:
            http.progress.done(f"GCP billing SKUs: {page} page(s), {len(skus)} SKUs")
            return skus
        if token in seen:
            raise UserError(f"GCP billing SKUs page {page}: nextPageToken repeats")
        seen.add(token)
    raise UserError(f"GCP billing SKUs: more than {MAX_PAGES} pages; giving up")


def _rows(ctx: FetchContext, fact: Fact, parts: list[tuple[str, str, float]],
          table: dict[Part, dict[str, float]], only: set[str] | None) -> list[PriceRow]:
    rows = []
    for region in sorted(_regions(parts, table)):
        if not ctx.wants(region) or (only is not None and region not in only):
            continue
        price = _total(parts, table, region, spot=False)
        spot = _total(parts, table, region, spot=True)
        if price is None and spot is None:
            continue
        for zone in ctx.zones(fact.instance_type, region):
            rows.append(PriceRow.from_fact(fact, region, zone, price, spot, SOURCE, ctx.today))
    return rows


def _parts(fact: Fact) -> list[tuple[str, str, float]] | None:
    """[(kind, name, quantity)] that make up one hour of this instance type, or None."""
    if fact.vcpus is None:  # an attachable GPU, priced per single GPU
        gpu = fact.accelerator or ""
        return [("gpu", gpu, 1.0)] if gpu in GPU_SKUS else None
    family = _family(fact.instance_type)
    if family is None or fact.memory_gib is None:
        return None
    parts = [("core", family, float(fact.vcpus)), ("ram", family, float(fact.memory_gib))]
    if fact.accelerator:
        if fact.accelerator not in GPU_SKUS:
            return None
        parts.append(("gpu", fact.accelerator, float(fact.accelerator_count or 0)))
    return parts


def _is_host(fact: Fact) -> bool:
    return fact.vcpus is not None and not fact.accelerator


def _attach_regions(table: dict[Part, dict[str, float]], facts: dict[str, Fact]) -> set[str]:
    """Regions selling an attachable GPU on demand: the only places N1 host rows are useful."""
    gpus = {f.accelerator for f in facts.values() if f.vcpus is None and f.accelerator}
    return {r for g in gpus for r in table.get(("gpu", g, False), {})}


def _regions(parts: list[tuple[str, str, float]], table: dict[Part, dict[str, float]]) -> set[str]:
    found: set[str] = set()
    for spot in (False, True):
        sets = [set(table.get((kind, name, spot), {})) for kind, name, _ in parts]
        found |= set.intersection(*sets) if sets else set()
    return found


def _total(parts: list[tuple[str, str, float]], table: dict[Part, dict[str, float]],
           region: str, spot: bool) -> float | None:
    total = 0.0
    for kind, name, quantity in parts:
        unit = table.get((kind, name, spot), {}).get(region)
        if unit is None:
            return None
        total += unit * quantity
    return total


def _family(instance_type: str) -> str | None:
    matches = [p for p in FAMILIES if instance_type.startswith(p)]
    return FAMILIES[max(matches, key=len)] if matches else None


def _price_table(skus: list[dict[str, Any]]) -> dict[Part, dict[str, float]]:
    heads = _description_heads()
    table: dict[Part, dict[str, float]] = defaultdict(dict)
    for sku in skus:
        part = _parse_sku(sku, heads)
        if part is None:
            continue
        key, price = part
        for region in sku.get("serviceRegions") or []:
            table[key].setdefault(str(region), price)
    return dict(table)


def _description_heads() -> dict[str, Part]:
    """Exact description text before " running in <place>" -> the price part it is."""
    heads: dict[str, Part] = {}
    for family in set(FAMILIES.values()):
        for kind, word in (("core", "Core"), ("ram", "Ram")):
            heads[f"{family} Instance {word}"] = (kind, family, False)
            heads[f"Spot Preemptible {family} Instance {word}"] = (kind, family, True)
    for gpu, text in GPU_SKUS.items():
        heads[text] = ("gpu", gpu, False)
        heads[f"{text} attached to Spot Preemptible VMs"] = ("gpu", gpu, True)
    return heads


def _parse_sku(sku: dict[str, Any], heads: dict[str, Part]) -> tuple[Part, float] | None:
    head, sep, _ = str(sku.get("description") or "").partition(" running in ")
    part = heads.get(head) if sep else None
    if part is None:
        return None
    category = sku.get("category") or {}
    if category.get("usageType") != USAGE_TYPES[part[2]]:
        return None
    price = _parse_unit_price(sku, UNITS[part[0]])
    return (part, price) if price is not None else None


def _parse_unit_price(sku: dict[str, Any], unit: str) -> float | None:
    """USD per usage unit from the latest pricingInfo; None if absent or in another unit."""
    infos = sku.get("pricingInfo") or []
    if not infos or not isinstance(infos[-1], dict):
        return None
    expression = infos[-1].get("pricingExpression") or {}
    if expression.get("usageUnit") != unit:
        return None
    rates = sorted(expression.get("tieredRates") or [],
                   key=lambda r: float(r.get("startUsageAmount") or 0))
    for rate in rates:
        money = rate.get("unitPrice") or {}
        if money.get("currencyCode", "USD") != "USD":
            return None
        try:
            value = int(money.get("units") or 0) + int(money.get("nanos") or 0) / 1e9
        except (TypeError, ValueError):
            return None
        if value > 0:
            return value
    return None
