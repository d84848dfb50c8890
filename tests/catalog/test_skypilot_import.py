"""`catalog import-skypilot` on CSV samples written in SkyPilot's v8 `vms.csv` column layout."""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
from datetime import date
from pathlib import Path

import pytest
from servestack.catalog import DATA_DIR, load_catalog, provider, read_gpus, read_rows
from servestack.catalog.refresh import load_facts
from servestack.catalog.skypilot_import import find_files, import_file, snapshot_date

from servestack.cli.main import main
from servestack.errors import UserError

FIXTURES = Path(__file__).parents[1] / "fixtures" / "catalog"
SAMPLES = FIXTURES / "skypilot" / "v8"
# The instance facts and GPU table these samples were written against (the shipped ones change
# whenever the catalog is rebuilt)
INSTANCES = FIXTURES / "instances.csv"
GPUS = read_gpus(FIXTURES / "gpus.csv")


def rows_of(cloud: str, path: Path | None = None):
    result = import_file(provider(cloud), path or SAMPLES / cloud / "vms.csv",
                         load_facts(cloud, INSTANCES), GPUS)
    return result, {(r.instance_type, r.region, r.zone or ""): r for r in result.rows}


def test_aws_rows_keep_zone_ids_and_empty_prices():
    result, rows = rows_of("aws")
    assert sorted(rows) == [
        ("g5.48xlarge", "ap-northeast-1", "apne1-az1"), ("g5.48xlarge", "us-east-1", "use1-az1"),
        ("g5.48xlarge", "us-east-1", "use1-az2"), ("g5.xlarge", "us-east-1", "use1-az1"),
        ("g6.48xlarge", "us-east-1", "use1-az1"), ("g6.48xlarge", "us-east-2", "use2-az1"),
        ("gr6.4xlarge", "us-east-1", "use1-az4"), ("p3.2xlarge", "us-east-1", "use1-az4"),
        ("p4de.24xlarge", "us-east-1", "use1-az6"), ("p5e.48xlarge", "us-east-2", "use2-az3"),
    ]  # CPU-only a1.2xlarge, Inferentia2 and Radeon rows are skipped
    g5 = rows[("g5.48xlarge", "us-east-1", "use1-az2")]
    assert (g5.accelerator, g5.accelerator_count, g5.gpu_memory_mib, g5.vcpus, g5.memory_gib,
            g5.price, g5.spot_price) == ("A10G", 8, 24576, 192, 768, 16.288, 7.0077)
    assert rows[("p4de.24xlarge", "us-east-1", "use1-az6")].spot_price is None
    p5e = rows[("p5e.48xlarge", "us-east-2", "use2-az3")]
    assert (p5e.price, p5e.spot_price) == (None, None)
    gr6 = rows[("gr6.4xlarge", "us-east-1", "use1-az4")]  # not in instances.csv: SkyPilot's facts
    assert (gr6.accelerator, gr6.accelerator_count, gr6.vcpus, gr6.memory_gib) == ("L4", 1, 16,
                                                                                   128)
    assert g5.source == "skypilot-catalog v8 aws/vms.csv (imported by servestack)"
    assert g5.date == snapshot_date(SAMPLES / "aws" / "vms.csv")
    assert "skipped 1 row(s): GPU Inferentia2 is not in gpus.csv" in result.notes


def test_gcp_host_and_gpu_rows_are_joined_per_zone():
    result, rows = rows_of("gcp")
    assert sorted(rows) == [
        ("a2-highgpu-1g", "us-central1", "us-central1-a"),
        ("a2-highgpu-1g", "us-central1", "us-central1-b"),
        ("g2-standard-96", "us-central1", "us-central1-a"),
        ("n1-standard-4", "us-central1", "us-central1-a"),
        ("n1-standard-8", "us-central1", "us-central1-a"),
        ("nvidia-tesla-t4", "us-central1", "us-central1-a"),
        ("nvidia-tesla-t4", "us-central1", "us-central1-b"),
    ]  # europe-west4 a2 host has no GPU row; n1-standard-1 fits no GPU; us-west1 has no T4
    a2 = rows[("a2-highgpu-1g", "us-central1", "us-central1-a")]
    assert (a2.accelerator, a2.accelerator_count, a2.price, a2.spot_price) == \
        ("A100", 1, 3.673908, 1.32)  # host 0.74 + GPU 2.933908; spot 0.22 + 1.1
    assert rows[("g2-standard-96", "us-central1", "us-central1-a")].price == 7.98032
    host = rows[("n1-standard-4", "us-central1", "us-central1-a")]
    assert (host.accelerator, host.vcpus, host.memory_gib, host.price) == (None, 4, 15, 0.189999)
    t4 = rows[("nvidia-tesla-t4", "us-central1", "us-central1-b")]  # from the 4-GPU row: /4
    assert (t4.accelerator, t4.accelerator_count, t4.vcpus, t4.price, t4.spot_price) == \
        ("T4", 1, None, 0.35, 0.14)
    assert any("bundled GPUs not in instances.csv" in n for n in result.notes)  # a4-highgpu-8g


def test_azure_rows_use_instance_facts_and_tolerate_empty_prices():
    _, rows = rows_of("azure")
    assert sorted(k[0] for k in rows) == [
        "Standard_NC24ads_A100_v4", "Standard_NC40ads_H100_v5", "Standard_NC48ads_A100_v4",
        "Standard_NC96ads_A100_v4", "Standard_ND96asr_v4", "Standard_NV72ads_A10_v5",
    ]  # fractional A10 (NV6ads), GPU-less NC16ads_A10_v4 and Basic_A0 skipped
    h100 = rows[("Standard_NC40ads_H100_v5", "eastus", "")]
    assert (h100.accelerator, h100.gpu_memory_mib) == ("H100-NVL", 94 * 1024)  # instances.csv wins
    empty = rows[("Standard_NC24ads_A100_v4", "westus3", "")]
    assert (empty.price, empty.spot_price, empty.zone) == (None, None, None)


def test_columns_are_read_by_name_not_position(tmp_path):
    source = SAMPLES / "gcp" / "vms.csv"
    with open(source, newline="") as handle:
        records = list(csv.DictReader(handle))
    order = list(reversed(records[0].keys()))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=order, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    shuffled = tmp_path / "vms.csv"
    shuffled.write_text(out.getvalue())
    os.utime(shuffled, (source.stat().st_atime, source.stat().st_mtime))
    assert rows_of("gcp", shuffled)[1].keys() == rows_of("gcp")[1].keys()
    assert [r.price for r in rows_of("gcp", shuffled)[0].rows] == \
        [r.price for r in rows_of("gcp")[0].rows]


def test_imported_files_load_as_a_catalog(tmp_path, capsys):
    out = tmp_path / "catalog"
    assert main(["catalog", "import-skypilot", str(SAMPLES), "--catalog-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "aws: 0 rows -> 10 rows" in printed and f"wrote {out / 'gcp.csv'}" in printed
    catalog = load_catalog(out)
    attached = [o for o in catalog.offers if o.attached_gpu == "nvidia-tesla-t4"]
    assert {(o.instance_type, o.accelerator_count) for o in attached} >= {("n1-standard-4", 1),
                                                                          ("n1-standard-8", 2)}
    assert any("g5.48xlarge" in w and "spot $23.6225/h is at or above" in w
               for w in catalog.warnings)
    header = (out / "azure.csv").read_text().splitlines()[0]
    assert header.startswith("# Azure GPU offers for servestack, imported by")


def test_import_one_cloud_from_a_bare_vms_csv(tmp_path):
    shutil.copyfile(SAMPLES / "azure" / "vms.csv", tmp_path / "vms.csv")
    assert find_files(tmp_path, "azure") == {"azure": tmp_path / "vms.csv"}
    assert find_files(SAMPLES) == {c: SAMPLES / c / "vms.csv" for c in ("aws", "gcp", "azure")}
    with pytest.raises(UserError, match="no SkyPilot catalog found"):
        find_files(tmp_path)


def test_import_guards_and_dry_run(tmp_path, capsys):
    out = tmp_path / "catalog"
    out.mkdir()
    shutil.copyfile(DATA_DIR / "aws.csv", out / "aws.csv")
    before = (out / "aws.csv").read_text()
    code = main(["catalog", "import-skypilot", str(SAMPLES), "--cloud", "aws",
                 "--catalog-dir", str(out)])
    assert code == 2 and "less than 50%" in capsys.readouterr().err
    assert main(["catalog", "import-skypilot", str(SAMPLES), "--cloud", "aws", "--force",
                 "--dry-run", "--catalog-dir", str(out)]) == 0
    assert "would write" in capsys.readouterr().out
    assert (out / "aws.csv").read_text() == before
    assert main(["catalog", "import-skypilot", str(SAMPLES), "--cloud", "aws", "--force",
                 "--catalog-dir", str(out)]) == 0
    assert len(read_rows(out / "aws.csv", GPUS)) == 10


@pytest.mark.parametrize("content, message", [
    ("InstanceType,Price\ng5.xlarge,1.0\n",
     "not a SkyPilot aws vms.csv (missing column(s) AcceleratorName, AcceleratorCount"),
    ("InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,GpuInfo,Price,SpotPrice,"
     "Region,AvailabilityZone,Arch\ng5.xlarge,A10G,1.0,4.0,16.0,,cheap,,us-east-1,use1-az1,x\n",
     "vms.csv:2: column Price: 'cheap' is not a number"),
])
def test_bad_input_is_one_line_with_exit_code_2(tmp_path, capsys, content, message):
    (tmp_path / "aws").mkdir()
    (tmp_path / "aws" / "vms.csv").write_text(content)
    assert main(["catalog", "import-skypilot", str(tmp_path),
                 "--catalog-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_missing_directory_is_one_line(tmp_path, capsys):
    assert main(["catalog", "import-skypilot", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip().endswith("nope: not a directory")


def test_a_snapshot_is_dated_by_its_last_commit_else_by_its_file(tmp_path):
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    vms = tmp_path / "vms.csv"
    vms.write_text("InstanceType\n")
    os.utime(vms, (0, 0))  # 1970: a date no commit here has
    assert snapshot_date(vms) == date.fromtimestamp(0).isoformat()  # not a git checkout
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "vms.csv"], check=True)
    when = {"GIT_COMMITTER_DATE": "2025-09-16T12:00:00Z", "GIT_AUTHOR_DATE": "2025-09-16T12:00:00Z"}
    subprocess.run([*git, "commit", "-q", "-m", "snapshot"], check=True,
                   env={**os.environ, **when})
    assert snapshot_date(vms) == "2025-09-16"
    vms.write_text("InstanceType,Price\n")  # changed since the commit: the file's own day
    assert snapshot_date(vms) == date.today().isoformat()
