"""--max-pools, --max-per-pool and --spread as a user runs them: the plan JSON's `placement`,
the table's "Placement:" line, one-line errors, the deploy journal's full regions, and
generate building every pool. deploy over several pools: tests/cli/test_deploy_pools.py."""

from __future__ import annotations

import json

import pytest
import yaml

from servestack.deploy.failures import Block
from servestack.deploy.journal import Journal
from tests.conftest import SHARED_MIXTRAL
from tests.test_placement import MULTI

POOL_KEYS = {"cloud", "region", "replicas", "instance_types", "price_per_hour",
             "candidate_ids", "zones"}
# The plan JSON's keys before placement existed (README, "Plan JSON"): all still there.
PLAN_KEYS = {"schema_version", "spec", "model", "replicas", "catalog_dates", "candidates",
             "scaling", "dropped", "warnings", "notes"}


@pytest.fixture
def multi(tmp_path):
    path = tmp_path / "multi.yaml"
    path.write_text(MULTI)
    return path


def plan_json(run_cli, *args, cwd=None) -> dict:
    result = run_cli("servestack", "plan", *args, "--json", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def cheapest_regions(data: dict) -> list[tuple[str, str]]:
    return list(dict.fromkeys((c["cloud"], c["region"]) for c in data["candidates"]))


def placed(data: dict) -> list[tuple[str, str, int]]:
    return [(p["cloud"], p["region"], p["replicas"]) for p in data["placement"]]


def test_spread_over_two_regions_json_and_table(run_cli, multi, tmp_path):
    data = plan_json(run_cli, str(multi), "--max-pools", "2", "--spread", cwd=tmp_path)
    first, second = cheapest_regions(data)[:2]
    assert placed(data) == [(*first, 2), (*second, 2)]
    assert all(set(p) == POOL_KEYS for p in data["placement"])
    best = data["candidates"][0]
    assert data["placement"][0]["candidate_ids"][0] == best["id"]
    assert data["placement"][0]["price_per_hour"] == best["price_per_hour"]
    table = run_cli("servestack", "plan", str(multi), "--max-pools", "2", "--spread",
                    cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    [line] = [x for x in table.stdout.splitlines() if x.startswith("Placement:")]
    assert line == ("Placement: 2 x Azure eastus (Standard_NC48ads_A100_v4, 7.35 $/h), "
                    "2 x Azure westus2 (Standard_NC48ads_A100_v4, 7.35 $/h).")


def test_a_pool_of_three_spills_one_replica_to_the_next_region(run_cli, multi, tmp_path):
    data = plan_json(run_cli, str(multi), "--max-pools", "2", "--max-per-pool", "3",
                     cwd=tmp_path)
    first, second = cheapest_regions(data)[:2]
    assert placed(data) == [(*first, 3), (*second, 1)]
    assert sum(p["replicas"] for p in data["placement"]) == data["replicas"] == 4


def test_default_is_one_pool_and_the_rest_of_the_json_unchanged(run_cli, multi, tmp_path):
    default = plan_json(run_cli, str(multi), cwd=tmp_path)
    assert set(default) == PLAN_KEYS | {"placement"}
    best = default["candidates"][0]
    assert placed(default) == [(best["cloud"], best["region"], 4)]
    assert default["placement"][0]["instance_types"] == best["group_instance_types"]
    spread = plan_json(run_cli, str(multi), "--max-pools", "3", "--spread", cwd=tmp_path)
    # placement decides where replicas go, nothing of the ranking
    assert {k: v for k, v in spread.items() if k != "placement"} == \
        {k: v for k, v in default.items() if k != "placement"}
    table = run_cli("servestack", "plan", str(multi), cwd=tmp_path)
    assert "Placement:" not in table.stdout


@pytest.mark.parametrize("args, message", [
    (("--max-pools", "0"), "argument --max-pools: must be at least 1"),
    (("--max-pools", "two"), "argument --max-pools: 'two' is not a whole number"),
    (("--max-per-pool", "0"), "argument --max-per-pool: must be at least 1"),
    (("--max-pools", "2", "--max-per-pool", "1"),
     "cannot place 4 replicas: 2 pools of at most 1 (--max-per-pool) hold 2; "
     "raise --max-pools or --max-per-pool"),
])
def test_bad_placement_is_one_line_exit_2(run_cli, multi, tmp_path, args, message):
    for json_flag in ((), ("--json",)):
        result = run_cli("servestack", "plan", str(multi), *args, *json_flag, cwd=tmp_path)
        assert result.returncode == 2
        assert result.stderr.startswith(f"servestack: error: {message}")
        assert len(result.stderr.strip().splitlines()) == 1 and not result.stdout


def test_plan_mixtral_takes_the_flags_too(run_cli, tmp_path):
    result = run_cli("plan-mixtral", "--json", "--max-pools", "2", "--spread", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [p["replicas"] for p in data["placement"]] == [1, 1]  # the example's 2 replicas


@pytest.mark.skipif(not SHARED_MIXTRAL.exists(), reason="shared/ not beside the checkout")
def test_skypilots_mixtral_spec_spreads_over_distinct_regions(run_cli, tmp_path):
    data = plan_json(run_cli, str(SHARED_MIXTRAL), "--max-pools", "2", "--max-per-pool", "1",
                     cwd=tmp_path)
    assert [p["replicas"] for p in data["placement"]] == [1, 1]
    assert len({(p["cloud"], p["region"]) for p in data["placement"]}) == 2


def test_regions_the_last_deploy_found_full_are_left_out(run_cli, multi, tmp_path):
    """A capacity block in the journal of the spec's service (`.servestack/multi/`) moves the
    replicas to the next region; the plan says why."""
    before = plan_json(run_cli, str(multi), cwd=tmp_path)
    first, second = cheapest_regions(before)[:2]
    journal = Journal.open(tmp_path / ".servestack", "multi")
    journal.add_blocks([Block(cloud=first[0], region=first[1], error_class="capacity",
                              code="SkuNotAvailable")])
    after = plan_json(run_cli, str(multi), cwd=tmp_path)
    assert placed(after) == [(*second, 4)]
    assert any("found without capacity" in w for w in after["warnings"])
    assert after["candidates"] == before["candidates"]  # the deploy still may try them


def test_regions_a_hedged_deploy_found_full_are_left_out(run_cli, multi, tmp_path):
    """A service over several pools keeps one journal per pool (`.servestack/multi/pools/`):
    the capacity its pools found moves the placement too."""
    from servestack.deploy.layout import POOLS_DIR, service_dir

    before = plan_json(run_cli, str(multi), "--max-pools", "2", "--spread", cwd=tmp_path)
    first, second, third = cheapest_regions(before)[:3]
    pools = service_dir(tmp_path / ".servestack", "multi") / POOLS_DIR
    journal = Journal.at(pools / f"{first[0]}-{first[1]}.json", "multi")
    journal.add_blocks([Block(cloud=first[0], region=first[1], error_class="capacity",
                              code="SkuNotAvailable")])
    Journal.at(pools / f"{third[0]}-{third[1]}.json", "multi").add_blocks(
        [Block(cloud=third[0], region=third[1], error_class="quota", code="QuotaExceeded")])
    after = plan_json(run_cli, str(multi), "--max-pools", "2", "--spread", cwd=tmp_path)
    assert placed(after) == [(*second, 2), (*third, 2)]  # a quota block is not a full region
    assert any("found without capacity" in w for w in after["warnings"])


def test_a_quota_block_is_not_a_full_region(run_cli, multi, tmp_path):
    before = plan_json(run_cli, str(multi), cwd=tmp_path)
    first = cheapest_regions(before)[0]
    journal = Journal.open(tmp_path / ".servestack", "multi")
    journal.add_blocks([Block(cloud=first[0], region=first[1], error_class="quota",
                              code="OperationNotAllowed")])
    assert placed(plan_json(run_cli, str(multi), cwd=tmp_path)) == placed(before)


@pytest.fixture
def hf_token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_stand_in_for_the_placement_tests")


def test_generate_with_two_azure_pools_needs_a_front(run_cli, multi, tmp_path, hf_token):
    """Azure pools have no domain-free front (Global Accelerator reaches ALBs only): one
    line, exit 2, nothing written."""
    result = run_cli("servestack", "generate", str(multi), "--max-pools", "2",
                     "--max-per-pool", "3", "--stack", "two", cwd=tmp_path)
    assert result.returncode == 2
    assert "need a front" in result.stderr and "--front route53" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "stacks").exists() or not any((tmp_path / "stacks").iterdir())


def test_generate_with_two_pools_writes_every_pool_and_the_front(run_cli, multi, tmp_path,
                                                                 hf_token):
    data = plan_json(run_cli, str(multi), "--max-pools", "2", "--max-per-pool", "3",
                     cwd=tmp_path)
    result = run_cli("servestack", "generate", str(multi), "--max-pools", "2",
                     "--max-per-pool", "3", "--stack", "two", "--front", "route53",
                     "--domain", "llm.example.com", "--hosted-zone-id", "Z0123456789ABCDEFGHIJ",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    stacks = tmp_path / "stacks"
    replicas = {}
    for pool in data["placement"]:
        name = f"two-{pool['candidate_ids'][0]}"
        config = yaml.safe_load((stacks / f"Pulumi.{name}.yaml").read_text())["config"]
        deployment = config["servestack:deployment"]
        assert deployment["region"] == pool["region"]
        assert deployment["shared_api_key"] == "two-key"
        replicas[pool["region"]] = deployment["min_replicas"]
    assert replicas == {p["region"]: p["replicas"] for p in data["placement"]}
    assert sum(replicas.values()) == 4
    assert (stacks / "Pulumi.two-key.yaml").exists() and (stacks / "Pulumi.two-front.yaml").exists()


def test_generate_with_one_pool_says_nothing_of_pools(run_cli, multi, tmp_path, hf_token):
    result = run_cli("servestack", "generate", str(multi), "--stack", "one", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--max-pools" not in result.stderr


def test_nothing_to_place_still_has_the_key(run_cli, tmp_path):
    spec = tmp_path / "a100x3.yaml"
    spec.write_text("resources:\n  accelerators: A100:3\n")
    result = run_cli("servestack", "plan", str(spec), "--json", "--max-pools", "2")
    assert result.returncode == 2
    data = json.loads(result.stdout)
    assert data["candidates"] == [] and data["placement"] == []
