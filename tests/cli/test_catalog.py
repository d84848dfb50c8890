"""`servestack catalog show` / `validate`, and the `catalog` command's place in an argparse CLI."""

from __future__ import annotations

import argparse
import shutil
from datetime import date, timedelta
from pathlib import Path

import pytest

from servestack.cli.catalog import register, summarize
from servestack.cli.main import main

# The GPU table these rows were written against (the shipped one changes with the data)
FIXTURE_GPUS = Path(__file__).parents[1] / "fixtures" / "catalog" / "gpus.csv"
HEADER = ("instance_type,accelerator,accelerator_count,gpu_memory_mib,vcpus,memory_gib,region,"
          "zone,price,spot_price,source,date\n")


def make_catalog(path, aws_rows: list[str], azure_rows: list[str] | None = None):
    path.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FIXTURE_GPUS, path / "gpus.csv")
    (path / "aws.csv").write_text(HEADER + "".join(r + "\n" for r in aws_rows))
    if azure_rows is not None:
        (path / "azure.csv").write_text(HEADER + "".join(r + "\n" for r in azure_rows))
    return path


def day(days_ago: int) -> str:
    return (date.today() - timedelta(days=days_ago)).isoformat()


@pytest.fixture
def catalog(tmp_path):
    return make_catalog(tmp_path / "cat", [
        f"g5.xlarge,A10G,1,24576,4,16,us-east-1,use1-az1,1.006,0.4025,AWS Price List API,{day(3)}",
        f"g5.xlarge,A10G,1,24576,4,16,us-east-1,use1-az2,1.006,1.2,AWS Price List API,{day(3)}",
        f"p5e.48xlarge,H200,8,144384,192,2048,us-east-2,use2-az3,,,AWS Price List API,{day(40)}",
    ], [
        f"Standard_NC24ads_A100_v4,A100-80GB,1,81920,24,220,eastus,,3.673,0.39,Azure,{day(30)}",
    ])


def test_summary_names_the_file_in_use_its_rows_gpus_and_age(catalog):
    _, summaries = summarize(catalog)
    aws, gcp, azure = summaries
    assert (aws.file.path, aws.file.origin) == (catalog / "aws.csv", "user")
    assert (len(aws.rows), aws.offers, aws.gpus) == (3, 3, ["A10G", "H200"])
    assert (aws.file.oldest, aws.file.newest, aws.age_days(date.today())) == (day(40), day(3), 40)
    assert not gcp.exists
    assert (len(azure.rows), azure.age_days(date.today())) == (1, 30)


def test_show_prints_one_line_per_cloud_with_its_file_and_age(catalog, capsys):
    assert main(["catalog", "show", "--catalog-dir", str(catalog)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["CLOUD", "FROM", "ROWS", "OFFERS", "REGIONS", "ZONES",
                                "PRICES", "AS", "OF", "AGE", "GPUS"]
    assert lines[1].split() == ["AWS", "user", "3", "3", "2", "3", f"{day(40)}..{day(3)}", "40",
                                "d", "A10G,", "H200"]
    assert lines[2].split()[:2] == ["GCP", "-"] and lines[2].endswith("(no file)")
    assert lines[3].split()[:3] == ["Azure", "user", "1"]
    assert f"aws: {catalog / 'aws.csv'}" in lines
    assert "  source (3 rows): AWS Price List API" in lines
    assert main(["catalog", "show", "--cloud", "azure", "--catalog-dir", str(catalog)]) == 0
    assert "AWS" not in capsys.readouterr().out


def test_validate_lists_warnings_by_kind(catalog, capsys):
    assert main(["catalog", "validate", "--catalog-dir", str(catalog),
                 "--max-age-days", "20"]) == 0
    out = capsys.readouterr().out
    assert "missing files: 1" in out and "gcp.csv: missing" in out
    assert "spot at or above on-demand (treated as unknown): 1" in out
    assert "spot $1.2000/h is at or above on-demand $1.0060/h" in out
    assert "rows without an on-demand price: 1" in out and "p5e.48xlarge in use2-az3" in out
    assert "stale prices: 2" in out
    assert (f"azure.csv: 1 of 1 rows: Azure prices in use date from {day(30)}, 30 days ago "
            "(more than 20); run `servestack catalog refresh --cloud azure`") in out
    assert f"aws.csv: 1 of 3 rows: AWS prices in use date from {day(40)}" in out
    assert out.rstrip().endswith("catalog loads with 5 warning(s): 2 cloud file(s), 4 rows, "
                                 "4 offers")
    assert main(["catalog", "validate", "--catalog-dir", str(catalog), "--strict"]) == 1


def test_validate_warns_of_prices_older_than_90_days_by_default(tmp_path, capsys):
    cat = make_catalog(tmp_path / "old", [
        f"g5.xlarge,A10G,1,24576,4,16,us-east-1,use1-az1,1.006,0.4025,AWS,{day(90)}",
        f"g5.xlarge,A10G,1,24576,4,16,us-east-1,use1-az2,1.006,0.4025,AWS,{day(91)}"])
    main(["catalog", "validate", "--catalog-dir", str(cat)])
    out = capsys.readouterr().out
    assert "stale prices: 1" in out
    assert f"aws.csv: 1 of 2 rows: AWS prices in use date from {day(91)}, 91 days ago " \
           "(more than 90); run `servestack catalog refresh --cloud aws`" in out


def test_validate_finds_prices_far_apart_across_regions(tmp_path, capsys):
    cat = make_catalog(tmp_path / "spread", [
        f"g5.xlarge,A10G,1,24576,4,16,us-east-1,use1-az1,1.0,,AWS,{day(0)}",
        f"g5.xlarge,A10G,1,24576,4,16,us-west-2,usw2-az1,2.0,,AWS,{day(0)}",  # 2x: fine
        f"g6.xlarge,L4,1,24576,4,16,us-east-1,use1-az1,0.8,,AWS,{day(0)}",
        f"g6.xlarge,L4,1,24576,4,16,eu-west-1,euw1-az1,1.7,,AWS,{day(0)}"])
    main(["catalog", "validate", "--catalog-dir", str(cat)])
    out = capsys.readouterr().out
    assert "instance type priced more than 2x apart across regions: 1" in out
    assert "AWS g6.xlarge: $0.8000/h in use1-az1 (" in out and "$1.7000/h in euw1-az1" in out
    assert "g5.xlarge: $" not in out


def test_validate_finds_gpu_memory_that_differs_from_the_gpu_table(tmp_path, capsys):
    cat = make_catalog(tmp_path / "mem", [
        f"g5.xlarge,A10G,1,22888,4,16,us-east-1,use1-az1,1.0,,AWS,{day(0)}",
        f"g5.xlarge,A10G,1,22888,4,16,us-east-1,use1-az2,1.0,,AWS,{day(0)}",
        f"g5.2xlarge,A10G,1,24576,8,32,us-east-1,use1-az1,1.2,,AWS,{day(0)}"])
    main(["catalog", "validate", "--catalog-dir", str(cat)])
    out = capsys.readouterr().out
    assert "GPU memory that differs from gpus.csv: 1" in out  # one line per instance type
    assert "aws.csv:2: g5.xlarge: 22888 MiB per A10G, the GPU table says 24576 MiB" in out


def test_validate_clean_catalog(tmp_path, capsys):
    clean = make_catalog(tmp_path / "c", [
        f"g5.xlarge,A10G,1,24576,4,16,us-east-1,use1-az1,1.006,0.4025,AWS,{day(0)}"])
    for cloud in ("gcp", "azure"):
        (clean / f"{cloud}.csv").write_text(HEADER)
    assert main(["catalog", "validate", "--catalog-dir", str(clean), "--strict"]) == 0
    assert capsys.readouterr().out.strip() == "catalog OK: 3 cloud file(s), 1 rows, 1 offers"


def test_validate_many_warnings_are_shortened_unless_all(tmp_path, capsys):
    rows = [f"g5.xlarge,A10G,1,24576,4,16,us-east-1,use1-az{n},,,AWS,{day(0)}" for n in range(8)]
    cat = make_catalog(tmp_path / "m", rows)
    main(["catalog", "validate", "--catalog-dir", str(cat)])
    assert "... and 3 more (--all lists them)" in capsys.readouterr().out
    main(["catalog", "validate", "--catalog-dir", str(cat), "--all"])
    assert "use1-az7" in capsys.readouterr().out


def test_broken_catalog_is_one_line_with_exit_code_2(tmp_path, capsys):
    cat = make_catalog(tmp_path / "b", [
        f"g5.xlarge,A10G,1,99,4,16,us-east-1,use1-az1,1.0,0.4,AWS,{day(0)}"])
    for command in ("validate", "show"):
        assert main(["catalog", command, "--catalog-dir", str(cat)]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "aws.csv:2: column gpu_memory_mib: 99 does not match" in err


def test_shipped_catalog_loads():
    _, summaries = summarize()
    assert all(s.exists and s.rows for s in summaries)


def test_register_adds_the_catalog_command_to_a_parser():
    parser = argparse.ArgumentParser(prog="servestack")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["catalog", "refresh", "--cloud", "gcp", "--regions",
                              "us-central1,europe-west4", "--force"])
    assert (args.command, args.catalog_command, args.cloud, args.regions, args.force) == \
        ("catalog", "refresh", "gcp", ("us-central1", "europe-west4"), True)
    assert args.handler.__name__ == "run_refresh"
    for argv in (["catalog"], ["catalog", "refresh", "--regions", "all,us-east-1"],
                 ["catalog", "refresh", "--aws-spot", "maybe"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
