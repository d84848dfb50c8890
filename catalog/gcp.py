"""GCP: what the catalog knows of Compute Engine, how GCP bills GPUs, and how prices are fetched.

a2/a3/g2 machine types carry their GPUs; T4 and V100 attach to N1 hosts. gcp.csv holds three
kinds of rows: machine types with bundled GPUs (full price), N1 hosts without GPUs (host price),
and attachable GPUs (instance_type is the GCP accelerator type such as `nvidia-tesla-t4`, no
vCPUs, price of one GPU). `compose_offers` turns them into Offers; an N1 host with n attached
GPUs costs host + n x GPU in the same zone. GCP prices spot per region, not per zone.

Prices come from the Cloud Billing Catalog API, composed the way GCP bills: a per-vCPU-hour SKU
and a per-GiB-hour RAM SKU for each machine family, and a per-GPU-hour SKU for each GPU model;
Spot has its own SKUs ("Spot Preemptible ..."). The API (`GET {base}/v1/services/
6F81-5844-456A/skus?key=...`, pageToken paging, an API key from the environment) lists them with
the regions they are sold in. From them:
- bundled machine types (a2/a3/g2): full price = vCPUs x core + GiB x RAM + GPUs x GPU;
- N1 hosts: vCPUs x core + GiB x RAM, in regions that sell an attachable GPU;
- attachable GPUs (T4, V100): the price of one GPU.
Local SSD bundled with a2-ultragpu/a3 machine types is billed apart and not included. Only SKU
descriptions of the exact forms below are used, so commitment, reservation, DWS and Virtual
Workstation SKUs never mix in.

SkyPilot's gcp vms.csv has host lines and GPU lines; bundled machine types become one row with
the full price (host + GPUs of the same zone), N1 hosts stay host rows where an attachable GPU is
sold, and T4/V100 GPU lines become per-single-GPU rows.

Not here: reading and writing the cloud files (files.py), the guarded write (refresh.py).
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from servestack.errors import UserError

from .base import CatalogError, Gpu, Instance, Offer, PriceRow
from .fetching import FetchContext, FetchResult, RefreshOptions
from .skypilot_import import COLUMNS, ImportContext, SkyLine

if TYPE_CHECKING:
    from .http import Http

# Which N1 hosts may carry n GPUs of a kind: (min vCPUs, max vCPUs, max memory GiB).
# The maxima are GCP's published N1 limits for attached GPUs; the minima keep the host large
# enough to feed the GPUs (one host vCPU per 2-4 GPU SMs is the common guidance).
N1_ATTACH_LIMITS: dict[str, dict[int, tuple[int, int, float]]] = {
    "T4": {1: (4, 48, 312), 2: (8, 48, 312), 4: (16, 96, 624)},
    "V100": {1: (8, 12, 78), 2: (16, 24, 156), 4: (32, 48, 312), 8: (64, 96, 624)},
}
ACCELERATOR_TYPES = {"T4": "nvidia-tesla-t4", "V100": "nvidia-tesla-v100"}
# Machine families whose GPUs come with the machine type (SkyPilot: host row + GPU row).
BUNDLED_PREFIXES = ("a2-", "a3-", "a4-", "g2-", "g4-")


class Gcp:
    name: str = "gcp"
    spot_per_zone: bool = False
    skypilot_columns: tuple[str, ...] = (*COLUMNS, "AvailabilityZone")

    def offers(self, rows: list[PriceRow], gpus: dict[str, Gpu]) -> list[Offer]:
        return compose_offers(rows, gpus)

    def unpriced_zone(self, zone: str, region: str) -> bool:
        return False  # its zones are the ones the catalog and the API name

    def regional_image(self, image: str) -> bool:
        return False  # images are global resources of a project

    def missing_credentials(self, options: RefreshOptions) -> str | None:
        return KEY_NEEDED if _needs_key(options.urls.get("gcp"), options.gcp_api_key) else None

    def fetch(self, ctx: FetchContext, options: RefreshOptions) -> FetchResult:
        return fetch(ctx, base_url=options.urls.get("gcp"), api_key=options.gcp_api_key)

    def import_skypilot(self, lines: list[SkyLine], ctx: ImportContext) -> list[PriceRow]:
        return _skypilot_rows(lines, ctx)


PROVIDER = Gcp()


def compose_offers(rows: list[PriceRow], gpus: dict[str, Gpu]) -> list[Offer]:
    bundled = [r for r in rows if r.accelerator and r.vcpus is not None]
    hosts = [r for r in rows if not r.accelerator]
    attachable = [r for r in rows if r.accelerator and r.vcpus is None]
    for row in hosts:
        if row.vcpus is None or row.memory_gib is None:
            raise CatalogError(f"{row.where}: a GCP host row needs vcpus and memory_gib")
        if not row.instance_type.startswith("n1-"):
            raise CatalogError(
                f"{row.where}: GPUs attach only to N1 hosts, not {row.instance_type}")
    for row in attachable:
        if row.accelerator not in N1_ATTACH_LIMITS or row.accelerator_count != 1:
            raise CatalogError(
                f"{row.where}: attachable GPU rows are priced per single GPU for "
                f"{', '.join(N1_ATTACH_LIMITS)}; got {row.accelerator}:{row.accelerator_count}"
            )
    offers = [Offer.from_row("gcp", row) for row in bundled]
    offers.extend(_attached_offers(hosts, attachable, gpus))
    return offers


def _attached_offers(hosts: list[PriceRow], attachable: list[PriceRow],
                     gpus: dict[str, Gpu]) -> list[Offer]:
    hosts_by_zone: dict[tuple[str, str | None], list[PriceRow]] = defaultdict(list)
    for host in hosts:
        hosts_by_zone[(host.region, host.zone)].append(host)
    offers = []
    for gpu_row in attachable:
        name = gpu_row.accelerator or ""
        for count, (min_cpu, max_cpu, max_mem) in N1_ATTACH_LIMITS[name].items():
            for host in hosts_by_zone.get((gpu_row.region, gpu_row.zone), []):
                vcpus, memory = host.vcpus or 0, host.memory_gib or 0.0
                if not (min_cpu <= vcpus <= max_cpu and memory <= max_mem):
                    continue
                offers.append(Offer(
                    cloud="gcp", instance_type=host.instance_type, accelerator=name,
                    accelerator_count=count, gpu_memory_mib=gpus[name].memory_mib,
                    vcpus=vcpus, memory_gib=memory, region=host.region, zone=host.zone,
                    price=_sum(host.price, gpu_row.price, count),
                    spot_price=_sum(host.spot_price, gpu_row.spot_price, count),
                    source=f"{host.source} + {gpu_row.source}" if host.source != gpu_row.source
                    else host.source,
                    date=min(host.date, gpu_row.date),
                    attached_gpu=gpu_row.instance_type,
                ))
    return offers


def _sum(host: float | None, gpu: float | None, count: int) -> float | None:
    if host is None or gpu is None:
        return None
    return round(host + count * gpu, 6)


BILLING_URL = "https://cloudbilling.googleapis.com"
ENV_URL = "SERVESTACK_GCP_BILLING_URL"
ENV_API_KEYS = ("SERVESTACK_GCP_API_KEY", "GOOGLE_API_KEY")
KEY_NEEDED = ("GCP refresh needs a Cloud Billing API key: set SERVESTACK_GCP_API_KEY "
              "(or refresh only --cloud aws / --cloud azure)")
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
    if _needs_key(base_url, api_key):
        raise UserError(KEY_NEEDED)
    return resolve_key(api_key)


def _needs_key(base_url: str | None, api_key: str | None) -> bool:
    """Google's endpoint needs a key; a stand-in (tests, a proxy) may not."""
    return resolve_key(api_key) is None and resolve_url(base_url) == BILLING_URL


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


def _rows(ctx: FetchContext, fact: Instance, parts: list[tuple[str, str, float]],
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
            rows.append(PriceRow.priced(fact, region, zone, price, spot, SOURCE, ctx.today))
    return rows


def _parts(fact: Instance) -> list[tuple[str, str, float]] | None:
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


def _is_host(fact: Instance) -> bool:
    return fact.vcpus is not None and not fact.accelerator


def _attach_regions(table: dict[Part, dict[str, float]], facts: dict[str, Instance]) -> set[str]:
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


def _skypilot_rows(lines: list[SkyLine], ctx: ImportContext) -> list[PriceRow]:
    """Join SkyPilot's host and GPU lines per zone (see the module docstring)."""
    facts, gpus, source, day, skipped = ctx.facts, ctx.gpus, ctx.source, ctx.day, ctx.skipped
    gpu_lines = {(ln.accelerator, ln.count, ln.zone or ln.region): ln
                 for ln in lines if not ln.instance_type and ln.accelerator}
    attach_zones = {place for (acc, _, place) in gpu_lines if acc in ACCELERATOR_TYPES}
    rows = []
    for line in lines:
        if not line.instance_type:
            continue
        if line.instance_type.startswith(BUNDLED_PREFIXES):
            row = _skypilot_bundled(line, facts, gpu_lines, source, day, skipped)
        elif line.instance_type.startswith("n1-"):
            row = _skypilot_host(line, attach_zones, source, day, skipped)
        else:
            skipped["no GPU"] += 1
            row = None
        if row is not None:
            rows.append(row)
    rows.extend(_skypilot_attachable(gpu_lines, gpus, source, day))
    ignored = sum(1 for ln in lines if not ln.instance_type and ln.accelerator
                  and ln.accelerator not in ACCELERATOR_TYPES)
    if ignored:
        skipped["GPU rows joined into machine types or not attachable to N1"] += ignored
    return rows


def _skypilot_bundled(line: SkyLine, facts: dict[str, Instance], gpu_lines: dict, source: str,
                      day: str, skipped: dict[str, int]) -> PriceRow | None:
    fact = facts.get(line.instance_type)
    if fact is None or not fact.accelerator:
        skipped["GCP machine type with bundled GPUs not in instances.csv"] += 1
        return None
    gpu = gpu_lines.get((fact.accelerator, float(fact.accelerator_count or 0),
                         line.zone or line.region))
    if gpu is None:
        skipped["GCP machine type without a GPU row in its zone"] += 1
        return None
    return PriceRow.priced(fact, line.region, line.zone, _add(line.price, gpu.price),
                              _add(line.spot, gpu.spot), source, day)


def _skypilot_host(line: SkyLine, attach_zones: set[str], source: str, day: str,
                   skipped: dict[str, int]) -> PriceRow | None:
    vcpus, memory = line.vcpus, line.memory
    fits = vcpus is not None and memory is not None and any(
        lo <= vcpus <= hi and memory <= mem
        for limits in N1_ATTACH_LIMITS.values() for lo, hi, mem in limits.values())
    if not fits or (line.zone or line.region) not in attach_zones:
        skipped["N1 host that no attachable GPU fits, or in a zone without one"] += 1
        return None
    fact = Instance("gcp", line.instance_type, None, None, None, int(vcpus or 0), memory)
    return PriceRow.priced(fact, line.region, line.zone, line.price, line.spot, source, day)


def _skypilot_attachable(gpu_lines: dict, gpus: dict[str, Gpu], source: str,
                         day: str) -> list[PriceRow]:
    """Per-single-GPU rows for GPUs that attach to N1 hosts (from the smallest bundle listed)."""
    smallest: dict[tuple[str, str], SkyLine] = {}
    for (acc, count, place), line in gpu_lines.items():
        if acc in ACCELERATOR_TYPES and acc in gpus and count:
            key = (acc, place)
            if key not in smallest or count < (smallest[key].count or 0):
                smallest[key] = line
    rows = []
    for (acc, _), line in sorted(smallest.items()):
        count = line.count or 1.0
        fact = Instance("gcp", ACCELERATOR_TYPES[acc], acc, 1, gpus[acc].memory_mib, None, None)
        rows.append(PriceRow.priced(fact, line.region, line.zone, _per(line.price, count),
                                       _per(line.spot, count), source, day))
    return rows


def _add(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


def _per(value: float | None, count: float) -> float | None:
    return None if value is None else value / count
