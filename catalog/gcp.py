"""GCP as it bills: a2/a3/g2 machine types carry their GPUs; T4 and V100 attach to N1 hosts.

gcp.csv holds three kinds of rows: machine types with bundled GPUs (full price), N1 hosts
without GPUs (host price), and attachable GPUs (instance_type is the GCP accelerator type such
as `nvidia-tesla-t4`, no vCPUs, price of one GPU). `compose_offers` turns them into Offers; an
N1 host with n attached GPUs costs host + n x GPU in the same zone.
"""

from __future__ import annotations

from collections import defaultdict

from . import CatalogError, Gpu, Offer, Row

# Which N1 hosts may carry n GPUs of a kind: (min vCPUs, max vCPUs, max memory GiB).
# The maxima are GCP's published N1 limits for attached GPUs; the minima keep the host large
# enough to feed the GPUs (one host vCPU per 2-4 GPU SMs is the common guidance).
N1_ATTACH_LIMITS: dict[str, dict[int, tuple[int, int, float]]] = {
    "T4": {1: (4, 48, 312), 2: (8, 48, 312), 4: (16, 96, 624)},
    "V100": {1: (8, 12, 78), 2: (16, 24, 156), 4: (32, 48, 312), 8: (64, 96, 624)},
}
ACCELERATOR_TYPES = {"T4": "nvidia-tesla-t4", "V100": "nvidia-tesla-v100"}


def compose_offers(rows: list[Row], gpus: dict[str, Gpu]) -> list[Offer]:
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
    offers = [_bundled_offer(row) for row in bundled]
    offers.extend(_attached_offers(hosts, attachable, gpus))
    return offers


def _bundled_offer(row: Row) -> Offer:
    return Offer(
        cloud="gcp", instance_type=row.instance_type, accelerator=row.accelerator or "",
        accelerator_count=row.accelerator_count or 0, gpu_memory_mib=row.gpu_memory_mib or 0,
        vcpus=row.vcpus or 0, memory_gib=row.memory_gib or 0.0, region=row.region, zone=row.zone,
        price=row.price, spot_price=row.spot_price, source=row.source, date=row.date,
    )


def _attached_offers(hosts: list[Row], attachable: list[Row], gpus: dict[str, Gpu]) -> list[Offer]:
    hosts_by_zone: dict[tuple[str, str | None], list[Row]] = defaultdict(list)
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
