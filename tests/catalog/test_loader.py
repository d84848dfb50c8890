"""The shipped catalog: real, dated rows; loud failures on broken rows; GCP host + GPU pricing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from servestack.catalog import DATA_DIR, CatalogError, load_catalog

MIXTRAL_TYPES = {
    ("aws", "g5.48xlarge"): ("A10G", 8), ("aws", "g6.48xlarge"): ("L4", 8),
    ("aws", "p4d.24xlarge"): ("A100", 8), ("aws", "p4de.24xlarge"): ("A100-80GB", 8),
    ("gcp", "g2-standard-96"): ("L4", 8), ("gcp", "a2-highgpu-4g"): ("A100", 4),
    ("gcp", "a2-ultragpu-2g"): ("A100-80GB", 2),
    ("azure", "Standard_NC48ads_A100_v4"): ("A100-80GB", 2),
    ("azure", "Standard_ND96asr_v4"): ("A100", 8),
}


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def test_every_cloud_is_dated_and_sourced(catalog):
    assert set(catalog.dates) == {"aws", "gcp", "azure"}
    assert all(o.source and o.date for o in catalog.offers)


def test_mixtral_instance_types_carry_their_real_gpus(catalog):
    seen = {(o.cloud, o.instance_type): (o.accelerator, o.accelerator_count)
            for o in catalog.offers if o.attached_gpu is None}
    for key, gpus in MIXTRAL_TYPES.items():
        assert seen.get(key) == gpus, key


def test_inference_gpus_are_covered_across_continents(catalog):
    gpus = {o.accelerator for o in catalog.offers}
    assert {"T4", "L4", "A10G", "A10", "L40S", "V100", "A100", "A100-80GB", "H100"} <= gpus
    regions = {o.region for o in catalog.offers}
    assert {"us-east-1", "eu-west-1", "ap-northeast-1", "europe-west4", "asia-east1",
            "eastus"} <= regions


def test_gcp_n1_with_attached_t4_costs_host_plus_gpus(catalog):
    rows = {(o.instance_type, o.accelerator, o.accelerator_count): o for o in catalog.offers
            if o.cloud == "gcp" and o.zone == "us-central1-a"}
    host = next(o for o in _raw_gcp("n1-standard-16", "us-central1-a"))
    gpu = next(o for o in _raw_gcp("nvidia-tesla-t4", "us-central1-a"))
    offer = rows[("n1-standard-16", "T4", 2)]
    assert offer.attached_gpu == "nvidia-tesla-t4"
    assert offer.price == pytest.approx(host["price"] + 2 * gpu["price"])
    assert offer.spot_price == pytest.approx(host["spot_price"] + 2 * gpu["spot_price"])
    # a2/g2 carry their GPUs: no attachment, full price in the row
    assert rows[("a2-highgpu-4g", "A100", 4)].attached_gpu is None


def test_gcp_attach_limits_keep_hosts_in_range(catalog):
    v100 = [o for o in catalog.offers if o.cloud == "gcp" and o.accelerator == "V100"]
    assert v100 and all(o.vcpus <= 12 for o in v100 if o.accelerator_count == 1)
    assert not [o for o in catalog.offers
                if o.cloud == "gcp" and o.accelerator == "T4" and o.accelerator_count == 8]


def _raw_gcp(instance_type: str, zone: str):
    import csv

    lines = [line for line in (DATA_DIR / "gcp.csv").read_text().splitlines()
             if line and not line.startswith("#")]
    for row in csv.DictReader(lines):
        if row["instance_type"] == instance_type and row["zone"] == zone:
            yield {"price": float(row["price"]), "spot_price": float(row["spot_price"])}


def test_spot_above_on_demand_is_a_warning_not_an_error(catalog):
    assert all("spot" in w for w in catalog.warnings if "above on-demand" in w)


@pytest.fixture
def copy_dir(tmp_path) -> Path:
    for name in ("gpus.csv", "regions.csv", "aws.csv", "gcp.csv", "azure.csv"):
        shutil.copy(DATA_DIR / name, tmp_path / name)
    return tmp_path


def _append(path: Path, line: str) -> None:
    with path.open("a") as handle:
        handle.write(line + "\n")


@pytest.mark.parametrize("line, words", [
    ("g5.xlarge,A10G,one,24,4,16,us-east-1,use1-az1,1.0,0.5,src,2026-11-24",
     "column accelerator_count: 'one' is not a number"),
    ("g5.xlarge,A10G,1,24576,4,16,us-east-1,use1-az1,1.0,0.5,src,yesterday",
     "column date"),
    ("g5.xlarge,B999,1,24,4,16,us-east-1,use1-az1,1.0,0.5,src,2026-11-24",
     "unknown GPU 'B999'"),
    ("g5.xlarge,A10G,1,40,4,16,us-east-1,use1-az1,1.0,0.5,src,2026-11-24",
     "does not match the GPU table"),
    ("g5.xlarge,A10G,1,24576,4,16,us-east-1,use1-az1,0,0.5,src,2026-11-24",
     "a price of 0 is not real"),
    ("g5.xlarge,A10G,1,24576,4,16,us-east-1", "expected 12 columns"),
])
def test_broken_rows_fail_loudly_with_file_and_line(copy_dir, line, words):
    path = copy_dir / "aws.csv"
    _append(path, line)
    last = len(path.read_text().splitlines())
    with pytest.raises(CatalogError) as info:
        load_catalog(copy_dir)
    assert f"aws.csv:{last}:" in str(info.value) and words in str(info.value)


def test_duplicate_rows_are_rejected(copy_dir):
    path = copy_dir / "azure.csv"
    last_row = [line for line in path.read_text().splitlines() if line][-1]
    _append(path, last_row)
    with pytest.raises(CatalogError, match="duplicate row"):
        load_catalog(copy_dir)


def test_header_must_match(copy_dir):
    (copy_dir / "aws.csv").write_text("a,b,c\n")
    with pytest.raises(CatalogError, match="header must be"):
        load_catalog(copy_dir)


def test_missing_cloud_file_is_a_warning(copy_dir):
    (copy_dir / "azure.csv").unlink()
    catalog = load_catalog(copy_dir)
    assert not [o for o in catalog.offers if o.cloud == "azure"]
    assert any("azure.csv: missing" in w for w in catalog.warnings)
