"""Which catalog file is in use (shipped or user, newest wins), prices the planner must not trust,
stale prices, and the catalog's import structure."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest
from servestack.catalog import CLOUDS, DATA_DIR, CatalogError, load_catalog, provider, read_gpus
from servestack.catalog.loader import cloud_rows

from servestack.inputs import load_inputs
from servestack.planner import NothingFits, Options, plan

FIXTURE_GPUS = Path(__file__).parents[1] / "fixtures" / "catalog" / "gpus.csv"
HEADER = ("instance_type,accelerator,accelerator_count,gpu_memory_mib,vcpus,memory_gib,region,"
          "zone,price,spot_price,source,date\n")
CATALOG = Path(__file__).parents[2] / "catalog"


def g5(day: str, price: str = "1.006", spot: str = "0.4", zone: str = "use1-az1") -> str:
    return f"g5.xlarge,A10G,1,24576,4,16,us-east-1,{zone},{price},{spot},test source,{day}\n"


def days_ago(n: int) -> str:
    return (date.today() - timedelta(days=n)).isoformat()


@pytest.fixture
def user_home(tmp_path, monkeypatch) -> Path:
    """An empty user data folder, with no catalog folder named by the environment."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("SERVESTACK_CATALOG_DIR", raising=False)
    folder = tmp_path / "data" / "servestack" / "catalog"
    folder.mkdir(parents=True)
    return folder


def _shipped_newest(cloud: str) -> str:
    file, _ = cloud_rows(cloud, read_gpus(DATA_DIR / "gpus.csv"), DATA_DIR)
    assert file.newest
    return file.newest


def test_without_a_user_file_the_shipped_catalog_is_used(user_home):
    catalog = load_catalog()
    assert {c: f.origin for c, f in catalog.files.items()} == dict.fromkeys(CLOUDS, "shipped")
    assert catalog.files["aws"].path == DATA_DIR / "aws.csv"


def test_a_user_file_newer_than_the_shipped_one_wins_for_its_cloud_only(user_home):
    newer = (date.fromisoformat(_shipped_newest("aws")) + timedelta(days=1)).isoformat()
    (user_home / "aws.csv").write_text(HEADER + g5(newer))
    catalog = load_catalog()
    assert catalog.files["aws"].origin == "user" and catalog.dates["aws"] == newer
    assert [o.instance_type for o in catalog.offers if o.cloud == "aws"] == ["g5.xlarge"]
    assert catalog.files["gcp"].origin == "shipped"


def test_a_user_file_older_than_the_shipped_one_is_not_used(user_home):
    (user_home / "aws.csv").write_text(HEADER + g5("2001-01-01"))
    catalog = load_catalog()
    assert catalog.files["aws"].origin == "shipped"
    assert len([o for o in catalog.offers if o.cloud == "aws"]) > 1


def test_a_broken_user_file_is_refused_even_when_older(user_home):
    (user_home / "aws.csv").write_text(HEADER + g5("2001-01-01", price="cheap"))
    with pytest.raises(CatalogError, match=r"aws.csv:2: column price: 'cheap' is not a number"):
        load_catalog()


def test_a_named_folder_is_the_whole_catalog(tmp_path, user_home):
    (tmp_path / "aws.csv").write_text(HEADER + g5("2001-01-01"))
    catalog = load_catalog(tmp_path)
    assert catalog.files["aws"].origin == "user"
    assert [o.instance_type for o in catalog.offers] == ["g5.xlarge"]  # no shipped gcp/azure
    assert catalog.gpus["H100"]  # the GPU table falls back to the shipped one


@pytest.mark.parametrize("spot", ["1.006", "1.5"])
def test_spot_at_or_above_on_demand_is_unknown_and_never_planned(tmp_path, spot):
    shutil.copyfile(FIXTURE_GPUS, tmp_path / "gpus.csv")
    (tmp_path / "aws.csv").write_text(HEADER + g5(days_ago(1), spot=spot))
    catalog = load_catalog(tmp_path, clouds=("aws",))
    [offer] = catalog.offers
    assert (offer.price, offer.spot_price) == (1.006, None)
    assert any(f"spot ${float(spot):.4f}/h is at or above on-demand $1.0060/h; spot price "
               "treated as unknown" in w for w in catalog.warnings)
    with pytest.raises(NothingFits) as nothing:
        plan(_one_a10g_spec(tmp_path), catalog, None, Options(spot=True))
    assert [d.reason for d in nothing.value.plan.dropped] == ["the catalog has no spot price"]


def _one_a10g_spec(tmp_path):
    spec_file = tmp_path / "one.yaml"
    spec_file.write_text("resources:\n  accelerators: A10G:1\n")
    return load_inputs(str(spec_file), catalog_dir=str(tmp_path)).spec


def test_a_plan_on_prices_older_than_90_days_says_how_to_refresh(tmp_path):
    shutil.copyfile(FIXTURE_GPUS, tmp_path / "gpus.csv")
    (tmp_path / "aws.csv").write_text(HEADER + g5(days_ago(91)) + g5(days_ago(2),
                                                                     zone="use1-az2"))
    catalog = load_catalog(tmp_path, clouds=("aws",))
    result = plan(_one_a10g_spec(tmp_path), catalog, None)
    assert (f"AWS prices in use date from {days_ago(91)}, 91 days ago (more than 90); run "
            "`servestack catalog refresh --cloud aws`") in result.warnings
    fresh = plan(_one_a10g_spec(tmp_path), catalog, None, today=date.today() - timedelta(days=5))
    assert not [w for w in fresh.warnings if "days ago" in w]


def test_every_cloud_module_is_registered():
    assert [provider(c).name for c in CLOUDS] == list(CLOUDS)
    assert provider("aws").spot_per_zone and not provider("azure").spot_per_zone


def test_catalog_modules_import_no_cycle():
    graph = {path.stem: _relative_imports(path) for path in CATALOG.glob("*.py")}
    visiting: set[str] = set()
    done: set[str] = set()

    def visit(module: str, trail: tuple[str, ...]) -> None:
        assert module not in visiting, f"import cycle: {' -> '.join((*trail, module))}"
        if module in done:
            return
        visiting.add(module)
        for imported in graph.get(module, ()):
            visit(imported, (*trail, module))
        visiting.discard(module)
        done.add(module)

    for module in graph:
        visit(module, ())
    assert "registry" in graph["loader"] and "http" not in graph["loader"]


def _relative_imports(path: Path) -> set[str]:
    """Modules of this package imported at run time (not under `if TYPE_CHECKING:`)."""
    tree = ast.parse(path.read_text())
    guarded = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
               and ast.unparse(block.test) == "TYPE_CHECKING" for node in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and id(node) not in guarded:
            found |= {node.module} if node.module else {a.name for a in node.names}
    return found - {path.stem}


def test_planning_imports_no_cloud_sdk_pulumi_or_http_client():
    code = ("import sys\n"
            "from servestack.inputs import load_inputs\n"
            "from servestack.planner import plan\n"
            "i = load_inputs(None)\n"
            "plan(i.spec, i.catalog, i.facts, model=i.model)\n"
            "roots = {m.split('.')[0] for m in sys.modules}\n"
            "print(sorted(roots & {'pulumi', 'pulumi_aws', 'pulumi_gcp', 'pulumi_azure_native', "
            "'boto3', 'botocore', 'google', 'azure', 'requests', 'urllib3'}))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"
