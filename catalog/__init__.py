"""The offer catalog: which GPU VMs AWS, GCP and Azure sell, where, and at what price.

The data lives beside this code as reviewable CSV files, one per cloud (`aws.csv`, `gcp.csv`,
`azure.csv`), plus the GPU table `gpus.csv`, the instance facts `instances.csv` (what refresh
prices), `regions.csv` and `azure_zones.csv`. Every row names its source and its source's date.
`load_catalog()` reads and validates them into `Offer`s; a broken row fails loudly with the file,
line and column.

Where things live: base.py (record types, CatalogError), files.py (CSV cells), loader.py (which
file is in use: shipped or user; untrusted prices), registry.py + aws.py/gcp.py/azure.py (each
cloud's rules and price fetcher), checks.py (`catalog validate`'s consistency report),
refresh.py/http.py/fetching.py (rebuilding files from price APIs), skypilot_import.py.

This package imports no cloud SDK and no Pulumi, and planning never loads `requests`: the planner
depends on it. The names below are the package's public API.
"""

from .azure import azure_zones
from .base import (
    CLOUD_TITLES,
    CLOUDS,
    Catalog,
    CatalogError,
    CloudFile,
    Gpu,
    Instance,
    Offer,
    PriceRow,
)
from .files import DATA_DIR, read_gpus, read_rows, records
from .loader import (
    STALE_DAYS,
    cloud_rows,
    known_regions,
    load_catalog,
    load_gpus,
    stale_prices,
    trusted_prices,
    user_dir,
)
from .registry import provider

__all__ = [
    "CLOUDS", "CLOUD_TITLES", "DATA_DIR", "STALE_DAYS", "Catalog", "CatalogError", "CloudFile",
    "Gpu", "Instance", "Offer", "PriceRow", "azure_zones", "cloud_rows", "known_regions",
    "load_catalog", "load_gpus", "provider", "read_gpus", "read_rows", "records", "stale_prices",
    "trusted_prices", "user_dir",
]
