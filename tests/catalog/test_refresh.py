"""`catalog refresh` against a real HTTP server serving each price API's documented shape."""

from __future__ import annotations

import shutil
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber
from servestack.catalog import DATA_DIR, PriceRow, aws, gcp, load_catalog, read_gpus, read_rows
from servestack.catalog.fetching import FetchContext, RefreshOptions
from servestack.catalog.http import Http
from servestack.catalog.refresh import compute_diff, load_facts, prepare, refresh

from servestack.cli.main import main
from servestack.errors import UserError
from tests.fixtures.catalog import fake_api as fake

Reply = fake.Reply
TODAY = date.today().isoformat()
PREVIOUS_AWS = """\
instance_type,accelerator,accelerator_count,gpu_memory_mib,vcpus,memory_gib,region,zone,price,spot_price,source,date
g5.xlarge,A10G,1,24576,4,16,us-east-1,use1-az1,1.0,0.3,old list,2026-01-02
g5.xlarge,A10G,1,24576,4,16,us-east-1,use1-az2,1.0,0.3,old list,2026-01-02
g5.xlarge,A10G,1,24576,4,16,us-west-2,usw2-az1,1.006,0.39,old list,2026-01-02
p3.2xlarge,V100,1,16384,8,61,us-east-1,use1-az4,3.06,0.9,old list,2026-01-02
"""


@pytest.fixture
def api():
    server = fake.FakeApi().start()
    fake.serve_azure(server, fake.azure_items())
    fake.serve_gcp(server, fake.gcp_skus())
    fake.serve_aws(server)
    yield server
    server.stop()


@pytest.fixture
def http(tmp_path):
    return Http(timeout=0.5, retries=1, backoff=0.01, cache_dir=tmp_path / "cache")


@pytest.fixture
def out(tmp_path):
    return tmp_path / "catalog"


def options(api, out, **changes) -> RefreshOptions:
    values = dict(catalog_dir=out, aws_spot="feed", gcp_api_key="test-key",
                  urls={"aws": api.url, "aws_spot": api.url + fake.SPOT_PATH, "gcp": api.url,
                        "azure": api.url + fake.AZURE_PATH})
    values.update(changes)
    return RefreshOptions(**values)


GPUS = read_gpus(DATA_DIR / "gpus.csv")


def table(path: Path) -> dict[tuple[str, str, str], tuple[float | None, float | None]]:
    rows = read_rows(path, GPUS)
    return {(r.instance_type, r.region, r.zone or ""): (r.price, r.spot_price) for r in rows}


def packaged_zones(cloud: str, instance_type: str, region: str) -> list[str]:
    rows = read_rows(DATA_DIR / f"{cloud}.csv", GPUS)
    return sorted({r.zone or "" for r in rows
                   if r.instance_type == instance_type and r.region == region}) or [""]


# --- Azure ---------------------------------------------------------------------------------------

def test_azure_pages_filters_and_writes_a_loadable_catalog(api, http, out):
    [outcome] = refresh(options(api, out, clouds=("azure",)), http).outcomes
    assert outcome.written and outcome.path == out / "azure.csv"
    assert table(out / "azure.csv") == {
        ("Standard_NC24ads_A100_v4", "eastus", ""): (3.673, 0.3898),
        ("Standard_NC24ads_A100_v4", "westus2", ""): (3.673, 0.41),
        ("Standard_NC48ads_A100_v4", "eastus", ""): (7.346, 0.888866),
        ("Standard_NC48ads_A100_v4", "westeurope", ""): (8.08, None),
        ("Standard_ND96asr_v4", "eastus", ""): (27.197, 2.99167),
        ("Standard_NV36ads_A10_v5", "eastus", ""): (3.2, 0.8),
    }  # no Windows, Low Priority, DevTest, reservation or superseded prices
    hits = api.hits(fake.AZURE_PATH)
    assert len(hits) >= 5 and any(h.one("$skip") for h in hits)  # NextPageLink was followed
    for hit in hits:
        odata = hit.one("$filter")
        assert "serviceName eq 'Virtual Machines'" in odata
        assert "priceType eq 'Consumption'" in odata
    catalog = load_catalog(out, clouds=("azure",))
    offer = next(o for o in catalog.offers if o.instance_type == "Standard_NV36ads_A10_v5")
    assert (offer.accelerator, offer.accelerator_count, offer.vcpus) == ("A10", 1, 36)
    assert offer.source.startswith("Azure Retail Prices API") and offer.date == TODAY
    assert "Azure Retail Prices API" in (out / "azure.csv").read_text().splitlines()[1]


def test_azure_empty_page_in_the_middle_is_skipped(api, http, out):
    items = fake.azure_items()

    def pages(request):
        step = request.one("step") or "1"
        link = {"1": f"{api.url}/paged?step=2", "2": f"{api.url}/paged?step=3"}.get(step)
        chunk = {"1": items[:2], "2": [], "3": items[2:]}[step]
        return Reply.json({"Items": chunk, "NextPageLink": link, "Count": len(chunk)})

    api.route("/paged", pages)
    refresh(options(api, out, clouds=("azure",), urls={"azure": f"{api.url}/paged"}), http)
    assert ("Standard_NV36ads_A10_v5", "eastus", "") in table(out / "azure.csv")
    assert [h.one("step") for h in api.hits("/paged")][:3] == [None, "2", "3"]


def test_azure_no_prices_refuses_to_write_unless_forced(api, http, out):
    api.reply("/empty", Reply.json({"Items": [], "NextPageLink": None, "Count": 0}))
    empty = options(api, out, clouds=("azure",), urls={"azure": f"{api.url}/empty"})
    with pytest.raises(UserError, match="azure: the source gave no priced offers"):
        refresh(empty, http)
    assert not (out / "azure.csv").exists()
    empty.force = True
    refresh(empty, http)
    assert table(out / "azure.csv") == {}


def test_azure_regions_replace_only_those_regions_behind_the_shrink_guard(api, http, out):
    out.mkdir()
    shutil.copyfile(DATA_DIR / "azure.csv", out / "azure.csv")
    before = table(out / "azure.csv")
    east = options(api, out, clouds=("azure",), regions=("eastus",))
    with pytest.raises(UserError, match=r"azure: the new catalog has 4 rows where the current "
                                        r"one has \d+ \(less than 50%\).*--force"):
        refresh(east, http)
    assert table(out / "azure.csv") == before
    assert all("armRegionName eq 'eastus'" in h.one("$filter")
               for h in api.hits(fake.AZURE_PATH))
    east.force = True
    [outcome] = refresh(east, http).outcomes
    after = table(out / "azure.csv")
    assert {k: v for k, v in after.items() if k[1] != "eastus"} == \
        {k: v for k, v in before.items() if k[1] != "eastus"}
    assert sorted(k[0] for k in after if k[1] == "eastus") == [
        "Standard_NC24ads_A100_v4", "Standard_NC48ads_A100_v4", "Standard_ND96asr_v4",
        "Standard_NV36ads_A10_v5"]
    assert outcome.diff.removed_offers > 0


# --- AWS -----------------------------------------------------------------------------------------

def test_aws_offer_csv_and_spot_feed(api, http, out):
    out.mkdir()
    (out / "aws.csv").write_text(PREVIOUS_AWS)
    [outcome] = refresh(options(api, out, clouds=("aws",)), http).outcomes
    assert table(out / "aws.csv") == {
        ("g5.xlarge", "us-east-1", "use1-az1"): (1.006, 0.4025),
        ("g5.xlarge", "us-east-1", "use1-az2"): (1.006, 0.4025),
        ("g5.xlarge", "us-west-2", "usw2-az1"): (1.006, 0.39),
        ("g5.48xlarge", "us-east-1", ""): (16.288, 5.1),
        ("g5.48xlarge", "us-west-2", ""): (16.288, None),
        ("g6.48xlarge", "us-east-1", ""): (13.3504, 3.7),
        ("p4d.24xlarge", "us-east-1", ""): (32.7726, None),  # feed says "N/A*"
    }  # Windows, dedicated, reserved, SQL and unused-reservation rates are not on-demand Linux
    diff = outcome.diff
    assert diff.removed_types == ["p3.2xlarge"]
    assert diff.added_types == ["g5.48xlarge", "g6.48xlarge", "p4d.24xlarge"]
    assert [(c.instance_type, c.kind) for c in diff.changes] == [
        ("g5.xlarge", "spot"), ("g5.xlarge", "spot")]  # +34%; on-demand +0.6% is below 5%
    assert "g5.xlarge us-east-1 use1-az1 spot: $0.3000 -> $0.4025 (+34.2%)" in \
        "\n".join(outcome.lines())
    assert [h.path for h in api.requests] == [
        fake.AWS_INDEX_PATH, fake.aws_offer_path("us-east-1"), fake.aws_offer_path("us-west-2"),
        fake.SPOT_PATH]
    load_catalog(out, clouds=("aws",))


def test_aws_json_offer_files_give_the_same_on_demand_prices(api, http, out):
    refresh(options(api, out, clouds=("aws",), regions=("us-east-1",), aws_format="json",
                    aws_spot="none"), http)
    prices = {k[0]: v[0] for k, v in table(out / "aws.csv").items()}
    assert prices == {"g5.xlarge": 1.006, "g5.48xlarge": 16.288, "g6.48xlarge": 13.3504,
                      "p4d.24xlarge": 32.7726}
    assert api.hits(fake.aws_offer_path("us-east-1", "json"))
    assert all(v[1] is None for v in table(out / "aws.csv").values())


def _stubbed_ec2(history):
    client = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="test",
                          aws_secret_access_key="test")
    stub = Stubber(client)
    if isinstance(history, Exception):
        stub.add_client_error("describe_spot_price_history", "UnauthorizedOperation",
                              "You are not authorized to perform this operation.")
    else:
        stub.add_response("describe_spot_price_history", {"SpotPriceHistory": history})
    stub.activate()
    return client


def _spot_item(instance_type, zone_id, price, minutes_ago):
    return {"AvailabilityZone": "us-east-1" + zone_id[-1:], "AvailabilityZoneId": zone_id,
            "InstanceType": instance_type, "ProductDescription": "Linux/UNIX",
            "SpotPrice": price,
            "Timestamp": datetime.now(timezone.utc) - timedelta(minutes=minutes_ago)}


def _aws_context(http, regions=("us-east-1",)):
    known = [PriceRow("g5.xlarge", "A10G", 1, 24576, 4, 16, "us-east-1", "use1-az2", 1.0, 0.3,
                      "old", "2026-01-01")]
    return FetchContext(http=http, facts=load_facts("aws"), known=known,
                        regions=frozenset(regions), today=TODAY)


def test_aws_spot_price_history_gives_prices_per_zone_id(api, http):
    client = _stubbed_ec2([
        _spot_item("g5.xlarge", "use1-az1", "0.4100", 5),
        _spot_item("g5.xlarge", "use1-az1", "0.3900", 60),  # older: ignored
        _spot_item("g5.xlarge", "use1-az3", "0.4500", 5),
        _spot_item("g5.48xlarge", "use1-az2", "4.5408", 5),
    ])
    result = aws.fetch(_aws_context(http), base_url=api.url, spot_mode="history",
                       ec2_client=lambda region: client)
    rows = {(r.instance_type, r.zone): (r.price, r.spot_price) for r in result.rows}
    assert rows == {
        ("g5.xlarge", "use1-az1"): (1.006, 0.41),
        ("g5.xlarge", "use1-az2"): (1.006, None),  # zone from the current catalog
        ("g5.xlarge", "use1-az3"): (1.006, 0.45),
        ("g5.48xlarge", "use1-az2"): (16.288, 4.5408),
        ("g6.48xlarge", None): (13.3504, None),
        ("p4d.24xlarge", None): (32.7726, None),
    }
    assert "DescribeSpotPriceHistory" in result.source
    assert not api.hits(fake.SPOT_PATH)


def test_aws_auto_spot_falls_back_to_the_public_feed(api, http):
    client = _stubbed_ec2(Exception("denied"))
    result = aws.fetch(_aws_context(http), base_url=api.url,
                       spot_url=api.url + fake.SPOT_PATH, spot_mode="auto",
                       ec2_client=lambda region: client)
    spot = {(r.instance_type, r.zone): r.spot_price for r in result.rows}
    assert spot[("g5.xlarge", "use1-az2")] == 0.4025
    assert any("UnauthorizedOperation" in n and "public spot feed" in n for n in result.notes)


def test_aws_spot_history_errors_are_one_line(api, http):
    client = _stubbed_ec2(Exception("denied"))
    with pytest.raises(UserError, match=r"^AWS spot price history in us-east-1: .*"
                                        r"UnauthorizedOperation"):
        aws.fetch(_aws_context(http), base_url=api.url, spot_mode="history",
                  ec2_client=lambda region: client)


def test_aws_unknown_region_and_bad_offer_file(api, http, out):
    with pytest.raises(UserError, match="AWS has no EC2 price list for region.s. us-east-9"):
        refresh(options(api, out, clouds=("aws",), regions=("us-east-9",)), http)
    api.reply(fake.aws_offer_path("us-west-2"), Reply(200, "<html>Access Denied</html>"))
    with pytest.raises(UserError, match="AWS us-west-2 price list: not an EC2 offer file"):
        refresh(options(api, out, clouds=("aws",), regions=("us-west-2",)), http)
    assert not (out / "aws.csv").exists()


# --- GCP -----------------------------------------------------------------------------------------

def test_gcp_prices_are_composed_as_gcp_bills_them(api, http, out):
    refresh(options(api, out, clouds=("gcp",)), http)
    rows = table(out / "gcp.csv")

    def price(instance_type, region):
        zones = packaged_zones("gcp", instance_type, region)
        found = {rows[(instance_type, region, z)] for z in zones}
        assert len(found) == 1 and len(rows) >= len(zones)
        return found.pop()

    # 12 vCPU x 0.031611 + 85 GiB x 0.004237 + 1 A100 x 2.933908 (spot from the Spot SKUs)
    assert price("a2-highgpu-1g", "us-central1") == (3.673385, 1.321795)
    assert price("a2-highgpu-1g", "europe-west4") == (4.014112, None)
    assert price("a2-ultragpu-1g", "us-central1") == (5.027702, None)  # no 80GB spot SKU
    assert price("g2-standard-4", "us-central1") == (0.7062, 0.25816)
    assert price("n1-standard-4", "us-central1") == (0.189999, 0.04202)
    assert price("nvidia-tesla-t4", "us-central1") == (0.35, 0.14)
    regions = {(k[0].split("-")[0], k[1]) for k in rows}
    assert ("n1", "us-west1") not in regions  # N1 is sold there, but no attachable GPU
    assert not any(k[0].startswith(("a3-", "nvidia-tesla-v100")) for k in rows)
    assert not any(k[0].startswith("a2-") and k[1] == "us-east1" for k in rows)  # no A100 SKU
    tokens = [h.one("pageToken") for h in api.hits(fake.GCP_PATH)]
    assert tokens == [None, "t4", "t8", "t12", "t16", "t20", "t24"]
    assert {h.one("key") for h in api.hits(fake.GCP_PATH)} == {"test-key"}
    assert {h.one("currencyCode") for h in api.hits(fake.GCP_PATH)} == {"USD"}
    catalog = load_catalog(out, clouds=("gcp",))
    attached = [o for o in catalog.offers
                if o.instance_type == "n1-standard-4" and o.accelerator == "T4"]
    assert attached and all(o.price == pytest.approx(0.539999) for o in attached)


def test_gcp_needs_an_api_key_for_the_public_endpoint(http, monkeypatch):
    for name in ("SERVESTACK_GCP_API_KEY", "GOOGLE_API_KEY", "SERVESTACK_GCP_BILLING_URL"):
        monkeypatch.delenv(name, raising=False)
    ctx = FetchContext(http=http, facts=load_facts("gcp"), known=[], today=TODAY)
    with pytest.raises(UserError, match="needs a Cloud Billing API key: set "
                                        "SERVESTACK_GCP_API_KEY"):
        gcp.fetch(ctx)


def test_gcp_rejected_key_is_one_line_without_the_key(api, http, out):
    with pytest.raises(UserError) as info:
        refresh(options(api, out, clouds=("gcp",), gcp_api_key="WRONG-KEY-42"), http)
    assert "answered HTTP 400: API key not valid" in str(info.value)
    assert "WRONG-KEY-42" not in str(info.value)


# --- orchestration -------------------------------------------------------------------------------

def test_nothing_is_written_unless_every_cloud_was_fetched(api, http, out):
    api.reply(fake.GCP_PATH, Reply(503, "unavailable"))
    with pytest.raises(UserError, match="GCP billing SKUs page 1: HTTP 503"):
        refresh(options(api, out, clouds=("azure", "gcp")), http)
    assert not out.exists()


def test_dry_run_writes_nothing(api, http, out):
    [outcome] = refresh(options(api, out, clouds=("azure",), dry_run=True), http).outcomes
    assert not outcome.written and not out.exists()
    assert outcome.lines()[-1] == f"  would write {out / 'azure.csv'}"


def test_a_broken_current_file_is_only_replaced_with_force(api, http, out):
    out.mkdir()
    (out / "azure.csv").write_text("not,a,catalog\n")
    with pytest.raises(UserError, match="the current azure catalog is broken .*--force"):
        refresh(options(api, out, clouds=("azure",)), http)
    refresh(options(api, out, clouds=("azure",), force=True), http)
    assert len(table(out / "azure.csv")) == 6


def test_rows_the_loader_rejects_are_never_written(out):
    out.mkdir()
    (out / "aws.csv").write_text(PREVIOUS_AWS)
    bad = PriceRow("x1.large", "Z999", 8, 294912, 96, 2048.0, "us-east-1", None, 50.0, None,
                   "test", TODAY)
    with pytest.raises(UserError, match=r"aws: the new catalog does not load, nothing written: "
                                        r"new aws.csv:\d+: column accelerator: unknown GPU "
                                        r"'Z999'"):
        prepare("aws", out, [bad], ["test"], force=True)
    assert (out / "aws.csv").read_text() == PREVIOUS_AWS


def test_diff_reports_changes_beyond_the_threshold_only():
    def row(price, spot, zone="use1-az1", instance_type="g5.xlarge"):
        return PriceRow(instance_type, "A10G", 1, 24576, 4, 16, "us-east-1", zone, price, spot,
                        "s", TODAY)

    diff = compute_diff([row(1.0, 0.4), row(2.0, None, instance_type="g5.2xlarge")],
                        [row(1.04, 0.2), row(1.0, 0.3, zone="use1-az2")], threshold_pct=5)
    assert [(c.kind, round(c.percent)) for c in diff.changes] == [("spot", -50)]
    assert (diff.added_offers, diff.removed_offers) == (1, 1)
    assert diff.removed_types == ["g5.2xlarge"] and diff.added_types == []


# --- CLI -----------------------------------------------------------------------------------------

def _cli_args(api, out, tmp_path, *extra):
    return ["catalog", "refresh", "--catalog-dir", str(out), "--cache-dir",
            str(tmp_path / "cache"), "--timeout", "0.5", "--retries", "1", "--quiet", *extra]


def test_cli_refresh_prints_the_diff_and_uses_environment_urls(api, out, tmp_path, capsys,
                                                                monkeypatch):
    monkeypatch.setenv("SERVESTACK_AZURE_PRICES_URL", api.url + fake.AZURE_PATH)
    monkeypatch.setenv("SERVESTACK_GCP_BILLING_URL", api.url)
    monkeypatch.setenv("SERVESTACK_GCP_API_KEY", "test-key")
    assert main(_cli_args(api, out, tmp_path, "--cloud", "azure")) == 0
    assert main(_cli_args(api, out, tmp_path, "--cloud", "gcp")) == 0
    printed = capsys.readouterr().out
    assert "azure: 0 rows -> 6 rows (+6 / -0 offers)" in printed
    assert f"wrote {out / 'gcp.csv'}" in printed
    assert len(load_catalog(out, clouds=("azure", "gcp")).offers) > 6


def test_cli_errors_are_one_line_with_exit_code_2(api, out, tmp_path, capsys):
    api.reply("/broken", Reply(200, "{not json", {"Content-Type": "application/json"}))
    code = main(_cli_args(api, out, tmp_path, "--cloud", "azure", "--azure-prices-url",
                          f"{api.url}/broken"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "Traceback" not in err
    assert err.startswith("servestack: error: Azure prices page 1: the response is not valid "
                          "JSON")
    assert main(_cli_args(api, out, tmp_path, "--regions", "eastus")) == 2
    assert "--regions needs --cloud" in capsys.readouterr().err
    assert main(_cli_args(api, out, tmp_path, "--timeout", "-1")) == 2
    err = capsys.readouterr().err
    assert err.startswith("servestack: error: argument --timeout: '-1' must be a finite number")
    assert len(err.splitlines()) == 1


def _without_gcp_key(monkeypatch):
    for name in ("SERVESTACK_GCP_API_KEY", "GOOGLE_API_KEY", "SERVESTACK_GCP_BILLING_URL"):
        monkeypatch.delenv(name, raising=False)


def test_gcp_alone_without_a_key_fails_before_any_download(api, http, out, monkeypatch):
    _without_gcp_key(monkeypatch)
    gcp_only = options(api, out, clouds=("gcp",), gcp_api_key=None)
    gcp_only.urls = {**gcp_only.urls, "gcp": None}
    with pytest.raises(UserError, match="SERVESTACK_GCP_API_KEY"):
        refresh(gcp_only, http)
    assert api.requests == []


def test_without_a_gcp_key_the_other_clouds_are_refreshed_and_gcp_skipped(api, http, out,
                                                                         monkeypatch):
    _without_gcp_key(monkeypatch)
    everything = options(api, out, gcp_api_key=None, dry_run=True)
    everything.urls = {**everything.urls, "gcp": None}
    refreshed = refresh(everything, http)
    assert [o.cloud for o in refreshed.outcomes] == ["aws", "azure"]
    assert refreshed.skipped == ["gcp: skipped: GCP refresh needs a Cloud Billing API key: set "
                                 "SERVESTACK_GCP_API_KEY (or refresh only --cloud aws / --cloud "
                                 "azure)"]
    assert not api.hits(fake.GCP_PATH) and not out.exists()


def test_cli_dry_run_without_a_gcp_key_says_gcp_was_skipped(api, out, tmp_path, capsys,
                                                            monkeypatch):
    _without_gcp_key(monkeypatch)
    monkeypatch.setenv("SERVESTACK_AZURE_PRICES_URL", api.url + fake.AZURE_PATH)
    monkeypatch.setenv("SERVESTACK_AWS_PRICING_URL", api.url)
    monkeypatch.setenv("SERVESTACK_AWS_SPOT_URL", api.url + fake.SPOT_PATH)
    assert main(_cli_args(api, out, tmp_path, "--dry-run", "--aws-spot", "feed")) == 0
    printed = capsys.readouterr().out
    assert f"would write {out / 'aws.csv'}" in printed
    assert f"would write {out / 'azure.csv'}" in printed
    assert "gcp: skipped: GCP refresh needs a Cloud Billing API key" in printed


def test_unwritable_catalog_folder_is_one_line(api, http, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the catalog folder should be")
    with pytest.raises(UserError, match=f"cannot write the catalog in {blocker}"):
        refresh(options(api, blocker, clouds=("azure",)), http)


def test_refresh_writes_the_user_catalog_never_the_package(api, http, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("SERVESTACK_CATALOG_DIR", raising=False)
    shipped = (DATA_DIR / "azure.csv").read_text()
    # the shipped file has many more rows than the fake API: --force passes the shrink guard
    [outcome] = refresh(options(api, None, clouds=("azure",), force=True), http).outcomes
    assert outcome.path == tmp_path / "data" / "servestack" / "catalog" / "azure.csv"
    assert outcome.written and (DATA_DIR / "azure.csv").read_text() == shipped
    assert outcome.diff.before == len(table(DATA_DIR / "azure.csv"))  # diffed with the file in use
    catalog = load_catalog()  # written today: newer than the shipped file, so it is used
    assert catalog.files["azure"].origin == "user"
    assert catalog.files["aws"].path == DATA_DIR / "aws.csv"
