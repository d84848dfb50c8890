"""`servestack gpus [NAME]`: what GPUs exist, where, at which prices (like `sky gpus list`)."""

from __future__ import annotations

import difflib
from collections import defaultdict
from collections.abc import Sequence

from .catalog import CLOUD_TITLES, CatalogError, Offer, load_catalog
from .errors import UserError


def gpus_table(name: str | None, *, cloud: str | None = None, region: str | None = None,
               catalog_dir: str | None = None) -> str:
    try:
        catalog = load_catalog(catalog_dir)
    except CatalogError as exc:
        raise UserError(str(exc)) from None
    offers = [o for o in catalog.offers
              if (cloud is None or o.cloud == cloud) and (region is None or o.region == region)]
    if name is None:
        return _summary(offers, catalog.gpus)
    by_upper = {g.upper(): g for g in catalog.gpus}
    gpu = by_upper.get(name.upper())
    if gpu is None:
        close = difflib.get_close_matches(name.upper(), list(by_upper), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(by_upper[c] for c in close)}?" if close else ""
        raise UserError(f"unknown GPU {name!r}{hint}")
    return _detail(gpu, [o for o in offers if o.accelerator == gpu])


def _summary(offers: list[Offer], gpus) -> str:
    counts: dict[str, set[int]] = defaultdict(set)
    clouds: dict[str, set[str]] = defaultdict(set)
    for offer in offers:
        counts[offer.accelerator].add(offer.accelerator_count)
        clouds[offer.accelerator].add(CLOUD_TITLES[offer.cloud])
    rows = [(g.name, str(g.memory_mib), ", ".join(map(str, sorted(counts[g.name]))),
             ", ".join(sorted(clouds[g.name])))
            for g in gpus.values() if counts.get(g.name)]
    return _render(("GPU", "MEM(MiB)", "COUNTS PER VM", "CLOUDS"), rows)


def _detail(gpu: str, offers: list[Offer]) -> str:
    best: dict[tuple, dict] = {}
    for offer in offers:
        key = (offer.cloud, offer.instance_type, offer.accelerator_count, offer.attached_gpu)
        entry = best.setdefault(key, {"offer": offer, "price": None, "spot": None,
                                      "regions": set()})
        entry["regions"].add(offer.region)
        for field, value in (("price", offer.price), ("spot", offer.spot_price)):
            if value is not None and (entry[field] is None or value < entry[field][0]):
                entry[field] = (value, offer.region)
    rows = []
    for (cloud, instance, count, attached), entry in sorted(
            best.items(), key=lambda kv: (kv[0][2], _price(kv[1]["price"]), kv[0][0])):
        offer = entry["offer"]
        rows.append((f"{gpu}:{count}", CLOUD_TITLES[cloud],
                     instance + (f" + {attached}" if attached else ""),
                     str(offer.vcpus), f"{offer.memory_gib:g}",
                     _money(entry["price"]), _money(entry["spot"]),
                     str(len(entry["regions"]))))
    if not rows:
        return f"No offers for {gpu} with these filters.\n"
    headers = ("GPUS", "CLOUD", "INSTANCE", "vCPUs", "Mem(GB)", "$/h (region)",
               "SPOT $/h (region)", "REGIONS")
    return _render(headers, rows)


def _price(value) -> float:
    return value[0] if value else float("inf")


def _money(value) -> str:
    return f"{value[0]:.2f} ({value[1]})" if value else "-"


def _render(headers: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in [headers, *rows]]
    return "\n".join(lines) + "\n"
