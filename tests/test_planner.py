"""The planner: every feasible offer, model fit, drops with reasons, ranking, JSON contract."""

from __future__ import annotations

import pytest

from servestack import models
from servestack.deployment.build import build_deployment
from servestack.errors import UserError
from servestack.inputs import load_inputs
from servestack.planner import Candidate, NothingFits, Options, _Found, _rank, group_key, plan
from servestack.report import best_per_group, plan_json, plan_table

from .conftest import SHARED_MIXTRAL
from .fakes import FROZEN_CATALOG


def make_plan(path=None, options=None, model=None):
    inputs = load_inputs(str(path) if path else None, model=model)
    return inputs, plan(inputs.spec, inputs.catalog, inputs.facts, options, model=inputs.model)


def test_embedded_mixtral_plan_keeps_every_instance_type(embedded):
    result = plan(embedded.spec, embedded.catalog, embedded.facts, model=embedded.model)
    types = {c.instance_type for c in result.candidates}
    # several AWS instance types with 4 x L40S, not only the cheapest (SkyPilot issue #3193)
    assert {"g6e.12xlarge", "g6e.24xlarge"} <= types
    assert {"g6.48xlarge", "g5.48xlarge", "p4d.24xlarge", "a2-ultragpu-2g", "g2-standard-96",
            "Standard_NC48ads_A100_v4"} <= types
    assert [c.rank for c in result.candidates] == list(range(1, len(result.candidates) + 1))


def test_a10_8_is_dropped_with_the_counts_that_exist(embedded):
    result = plan(embedded.spec, embedded.catalog, embedded.facts, model=embedded.model)
    reasons = {d.what: d.reason for d in result.dropped}
    assert reasons["A10:8"] == "no cloud offers 8 x A10 per VM; counts that exist: 1, 2"


def test_sets_rank_by_total_cost_with_deterministic_ties(embedded):
    result = plan(embedded.spec, embedded.catalog, embedded.facts, model=embedded.model)
    keys = [(c.total_price_per_hour, c.cloud, c.region, c.zone or "", c.instance_type)
            for c in result.candidates]
    assert keys == sorted(keys)
    again = plan(embedded.spec, embedded.catalog, embedded.facts, model=embedded.model)
    assert [c.id for c in again.candidates] == [c.id for c in result.candidates]
    assert len({c.id for c in result.candidates}) == len(result.candidates)


def test_one_host_type_with_two_attached_gpu_kinds_gets_two_candidate_ids(write_spec):
    # GCP N1 hosts take T4 or V100 (and counts): stacks and journals are named by the id
    path = write_spec("resources: {accelerators: {T4: 1, V100: 1}, cloud: gcp, "
                      "region: us-central1}\nrun: vllm serve TinyLlama/TinyLlama-1.1B-Chat-v1.0\n")
    _, result = make_plan(path)
    ids = [c.id for c in result.candidates]
    assert len(set(ids)) == len(ids)
    by_type: dict[str, set[str]] = {}
    for c in result.candidates:
        by_type.setdefault(c.instance_type, set()).add(c.accelerator)
    assert by_type["n1-standard-8"] == {"T4", "V100"}
    assert "gcp-us-central1-n1-standard-8-1xt4-ondemand" in ids
    assert "gcp-us-central1-n1-standard-8-1xv100-ondemand" in ids
    # one N1 group's template attaches one GPU type: its group lists only hosts of that GPU
    v100 = next(c for c in result.candidates
                if c.id == "gcp-us-central1-n1-standard-8-1xv100-ondemand")
    v100_types = {c.instance_type for c in result.candidates if c.accelerator == "V100"}
    assert set(v100.group_instance_types) == v100_types
    assert "n1-standard-4" not in v100_types  # a T4 host here: not in the V100 group
    # a type that carries its GPUs keeps the plain id
    _, mixtral = make_plan()
    assert "aws-us-east-1-p4d.24xlarge-ondemand" in {c.id for c in mixtral.candidates}


def _made(i: int, total: float | None, region: str, zone: str | None, preference: int | None,
          spot: bool = False) -> Candidate:
    return Candidate(0, f"c{i}", "aws", region, zone, (), "g6.48xlarge", "L4", 8, 22.4, 192,
                     768.0, spot, total or 1.0, 1, total, preference, None, "src", "2026-01-01")


@pytest.mark.parametrize("ordered", [False, True])
def test_ranking_is_the_documented_tuple_order(ordered):
    # preference (when ordered), unknown totals last, total, then cloud, region, zone, type,
    # on demand first; ties beyond that keep the order found. The rank key is one string:
    # check it orders as the tuple on the tricky cases (prefix names, unequal digit counts).
    import random

    rng = random.Random(5)
    made = [_made(i, rng.choice([None, 9.5, 10.25, 99.0, 100.0, 1000.0001]),
                  rng.choice(["us-east-1", "us-east-1-x", "us-east-10", "eu-west-1"]),
                  rng.choice([None, "use1-az1", "use1-az10"]), rng.choice([None, 0, 1, 12]),
                  rng.choice([False, True])) for i in range(400)]
    found = _Found()
    for candidate in made:
        found.add(candidate, ordered)
    ranked = _rank(found)

    def key(c: Candidate) -> tuple:
        preference = c.preference if ordered and c.preference is not None else 0
        total = c.total_price_per_hour
        return (preference, total is None, total or 0.0, c.cloud, c.region, c.zone or "",
                c.instance_type, c.use_spot, made.index(c))

    assert [c.id for c in ranked] == [c.id for c in sorted(made, key=key)]
    assert [c.rank for c in ranked] == list(range(1, 401))


def test_prices_are_per_replica_and_total(embedded):
    result = plan(embedded.spec, embedded.catalog, embedded.facts, model=embedded.model)
    for c in result.candidates:
        assert c.replicas == 2
        assert c.total_price_per_hour == pytest.approx(2 * c.price_per_hour, abs=1e-3)


def test_ordered_list_keeps_user_order_then_cost(write_spec):
    path = write_spec("resources:\n  accelerators: [A100-80GB:8, L4:8]\n")
    _, result = make_plan(path)
    gpus = [c.gpus for c in result.candidates]
    first_l4 = gpus.index("L4:8")
    assert set(gpus[:first_l4]) == {"A100-80GB:8"} and set(gpus[first_l4:]) == {"L4:8"}
    head = [c.total_price_per_hour for c in result.candidates[:first_l4]]
    assert head == sorted(head)


def test_aws_spot_is_per_zone_and_on_demand_per_region(write_spec):
    path = write_spec("resources: {accelerators: L4:8, cloud: aws, use_spot: true}")
    _, spot = make_plan(path)
    assert all(c.zone and c.use_spot for c in spot.candidates)
    assert spot.candidates[0].zone.startswith("use") or spot.candidates[0].zone
    _, on_demand = make_plan(path, Options(spot=False))
    assert all(c.zone is None and c.zones for c in on_demand.candidates)


def _aws_offers(inputs, instance_type: str, region: str = "us-east-1") -> list:
    return [o for o in inputs.catalog.offers if o.cloud == "aws" and o.region == region
            and o.instance_type == instance_type]


def test_aws_zone_name_pins_on_demand_to_its_region(write_spec):
    inputs, result = make_plan(write_spec("resources: {accelerators: A100:8, zone: us-east-1a}"))
    _, by_region = make_plan(write_spec("resources: {accelerators: A100:8, infra: aws/us-east-1}",
                                        name="region.yaml"))
    assert result.candidates
    assert {c.instance_type for c in result.candidates} == \
        {c.instance_type for c in by_region.candidates}
    for c in result.candidates:
        assert (c.cloud, c.region, c.zone, c.zones, c.use_spot) == \
            ("aws", "us-east-1", "us-east-1a", ("us-east-1a",), False)
        assert c.id == f"aws-us-east-1a-{c.instance_type}-ondemand"
        assert c.price_per_hour == round(min(o.price for o in _aws_offers(inputs, c.instance_type)),
                                         4)


def test_aws_zone_name_spot_costs_the_dearest_zone_of_its_region(write_spec):
    path = write_spec("resources: {accelerators: A100:8, infra: aws/us-east-1/us-east-1a, "
                      "use_spot: true}")
    inputs, result = make_plan(path)
    assert [c.id for c in result.candidates] == ["aws-us-east-1a-p4d.24xlarge-spot"]
    c = result.candidates[0]
    assert (c.zone, c.zones) == ("us-east-1a", ("us-east-1a",))
    spot_prices = [o.spot_price for o in _aws_offers(inputs, "p4d.24xlarge")]
    assert len(set(spot_prices)) > 1  # the zone IDs differ, so the choice matters
    assert c.price_per_hour == round(max(spot_prices), 4) > min(spot_prices)
    assert sum("us-east-1a is a zone name" in w and "dearest spot price" in w
               for w in result.warnings) == 1


def test_aws_zone_id_keeps_its_own_spot_price(write_spec):
    inputs, result = make_plan(write_spec(
        "resources: {accelerators: A100:8, zone: use1-az2, use_spot: true}"))
    assert [(c.id, c.zone) for c in result.candidates] == \
        [("aws-use1-az2-p4d.24xlarge-spot", "use1-az2")]
    priced = [o.spot_price for o in _aws_offers(inputs, "p4d.24xlarge") if o.zone == "use1-az2"]
    assert [c.price_per_hour for c in result.candidates] == [round(p, 4) for p in priced]
    assert not any("zone name" in w for w in result.warnings)


def test_aws_zone_names_share_one_spot_candidate_of_their_region(write_spec):
    inputs, result = make_plan(write_spec(
        "resources:\n  accelerators: A100:8\n  use_spot: true\n"
        "  any_of: [{zone: us-east-1a}, {zone: us-east-1b}]\n"))
    assert [(c.id, c.zone, c.zones) for c in result.candidates] == \
        [("aws-us-east-1-p4d.24xlarge-spot", None, ("us-east-1a", "us-east-1b"))]
    spot_prices = [o.spot_price for o in _aws_offers(inputs, "p4d.24xlarge")]
    assert result.candidates[0].price_per_hour == round(max(spot_prices), 4)
    assert sum("is a zone name" in w for w in result.warnings) == 2


def test_aws_zone_name_and_zone_id_in_one_group_are_refused(write_spec):
    with pytest.raises(NothingFits) as caught:
        make_plan(write_spec("resources:\n  accelerators: A100:8\n"
                             "  any_of: [{zone: us-east-1a}, {zone: use1-az1}]\n"))
    assert [d.reason for d in caught.value.plan.dropped] == [
        "pinned to zone names (us-east-1a) and zone IDs (use1-az1) at once; its subnets are "
        "looked up by one kind, so give names or IDs"]


def test_filters_narrow_cloud_and_region(embedded):
    result = plan(embedded.spec, embedded.catalog, embedded.facts,
                  Options(cloud="azure", region="eastus"), model=embedded.model)
    assert {(c.cloud, c.region) for c in result.candidates} == {("azure", "eastus")}


def test_model_that_does_not_fit_is_dropped(write_spec):
    path = write_spec("resources: {accelerators: {L4:4, A100-80GB:1, A100-80GB:2}}\n"
                      "run: vllm serve mistralai/Mixtral-8x7B-Instruct-v0.1\n")
    _, result = make_plan(path)
    assert {c.gpus for c in result.candidates} == {"A100-80GB:2"}
    reasons = {d.what: d.reason for d in result.dropped}
    assert "needs 87 GiB for weights" in reasons["L4:4"]
    assert "A100-80GB:1" in reasons


def test_tensor_parallel_must_divide_heads():
    facts = models.lookup("mistralai/Mixtral-8x7B-Instruct-v0.1")
    assert not models.check_fit(facts, 80 * 1024, 3).ok
    assert "does not divide" in models.check_fit(facts, 80 * 1024, 3).reason
    assert models.check_fit(facts, 80 * 1024, 2).ok


def test_mixtral_facts_from_its_architecture():
    facts = models.lookup("mistralai/Mixtral-8x7B-Instruct-v0.1")
    assert facts.params / 1e9 == pytest.approx(46.7, abs=0.1)
    assert facts.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2
    llama = models.lookup("meta-llama/Llama-3.1-8B-Instruct")
    assert llama.params / 1e9 == pytest.approx(8.03, abs=0.02)


def test_local_config_json_and_command_flags(tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,'
                      ' "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32000,'
                      ' "max_position_embeddings": 32768, "num_local_experts": 8}')
    facts = models.lookup("my/mixtral", str(config))
    assert facts.params / 1e9 == pytest.approx(46.7, abs=0.1)
    tuned = models.apply_flags(facts, "vllm serve x --max-model-len 16k --quantization awq")
    assert tuned.context_tokens == 16384 and tuned.bytes_per_param == 0.5
    assert models.model_from_command("python -m vllm.entrypoints.openai.api_server \\\n"
                                     "  --model org/m --host 0.0.0.0") == "org/m"


def test_unknown_model_warns_and_skips_the_check(write_spec):
    path = write_spec("resources: {accelerators: L4:1}\nrun: vllm serve someone/unknown-7b\n")
    _, result = make_plan(path)
    assert result.candidates
    assert any("unknown to servestack" in w for w in result.warnings)


def test_nothing_left_is_an_error_listing_what_was_dropped(write_spec):
    path = write_spec("resources: {accelerators: A100:3}\n")
    with pytest.raises(NothingFits) as info:
        make_plan(path)
    assert "A100:3: no cloud offers 3 x A100 per VM; counts that exist: 1, 2, 4, 8, 16" \
        in str(info.value)


def test_json_contract_shape(embedded):
    result = plan(embedded.spec, embedded.catalog, embedded.facts, model=embedded.model)
    data = plan_json(result, embedded.spec, embedded.catalog.dates)
    assert data["schema_version"] == 1
    assert set(data) >= {"candidates", "dropped", "model", "replicas", "catalog_dates"}
    first = data["candidates"][0]
    for key in ("rank", "cloud", "region", "zone", "instance_type", "accelerator",
                "accelerator_count", "use_spot", "price_per_hour", "replicas",
                "total_price_per_hour", "id", "source", "price_date"):
        assert key in first
    assert first["rank"] == 1
    assert all({"what", "reason"} <= set(d) for d in data["dropped"])


def test_one_row_per_cloud_gpus_spot_group(embedded):
    result = plan(embedded.spec, embedded.catalog, embedded.facts, model=embedded.model)
    rows = best_per_group(result.candidates)
    keys = [(c.cloud, c.gpus, c.use_spot) for c in rows]
    assert len(keys) == len(set(keys)) and rows[0].rank == 1


@pytest.mark.skipif(not SHARED_MIXTRAL.exists(), reason="shared/ not beside the checkout")
def test_skypilot_mixtral_groups_match_its_published_shape():
    _, result = make_plan(SHARED_MIXTRAL)
    groups = {(c.cloud, c.gpus) for c in result.candidates}
    assert ("aws", "A100:4") not in groups  # AWS sells A100s only in 8-GPU boxes
    assert {("gcp", "A100-80GB:2"), ("azure", "A100-80GB:2"), ("aws", "L4:8"),
            ("aws", "A10G:8"), ("gcp", "L4:8")} <= groups
    best = result.candidates[0]
    # Azure's 2 x A100 80GB at its list price (7.346 $/h in eastus) wins now: GCP's
    # a2-ultragpu-2g rested on a per-GPU price below its own spot price, which the catalog
    # rebuild dropped (see catalog/gcp.csv's header).
    assert (best.cloud, best.instance_type, best.region) == \
        ("azure", "Standard_NC48ads_A100_v4", "eastus")
    assert best.price_per_hour == pytest.approx(7.346, abs=0.001)
    gcp = [c for c in result.candidates if c.instance_type == "a2-ultragpu-2g"]
    assert gcp and all(c.region != "us-central1" for c in gcp)


SPOT_WITH_ON_DEMAND_BASE = """\
service:
  readiness_probe: /health
  replica_policy: {min_replicas: 2, base_ondemand_fallback_replicas: 1}
resources:
  accelerators: H200:8
  use_spot: true
run: vllm serve meta-llama/Llama-3.1-8B-Instruct
"""


def test_an_unknown_on_demand_base_price_ranks_last_with_no_total(write_spec):
    # The frozen catalog has spot prices for p5e.48xlarge but no on-demand one: its total
    # (one on-demand base replica + one spot) is unknown, and it must not rank as cheap.
    inputs = load_inputs(str(write_spec(SPOT_WITH_ON_DEMAND_BASE)), catalog_dir=FROZEN_CATALOG)
    result = plan(inputs.spec, inputs.catalog, inputs.facts, model=inputs.model)
    unknown = [c for c in result.candidates if c.total_price_per_hour is None]
    assert unknown and {c.instance_type for c in unknown} == {"p5e.48xlarge"}
    # counted at its spot price alone (as before), it would rank ahead of priced candidates
    assert 2 * min(c.price_per_hour for c in unknown) < max(
        c.total_price_per_hour for c in result.candidates if c.total_price_per_hour is not None)
    known = len(result.candidates) - len(unknown)
    assert result.candidates[known:] == unknown  # every priced candidate ranks first
    assert all(c.group_total_price_per_hour is None for c in unknown)
    row = plan_table(result, inputs.spec, {}, show_all=True).splitlines()
    assert all(line.split()[-1] == "?" for line in row if "p5e.48xlarge" in line)
    assert plan_json(result, inputs.spec, {})["candidates"][-1]["total_price_per_hour"] is None


def test_a_candidate_shows_the_price_range_of_the_types_its_group_may_launch(embedded):
    result = plan(embedded.spec, embedded.catalog, embedded.facts, model=embedded.model)
    by_type = {}
    for c in result.candidates:
        by_type.setdefault(group_key(c), []).append(c)
    wide = [c for c in result.candidates if len(c.group_instance_types) > 1]
    assert wide, "the embedded plan has groups of several types (e.g. g6e on AWS)"
    for c in result.candidates:
        members = by_type[group_key(c)]
        assert c.group_instance_types[0] == c.instance_type
        assert set(c.group_instance_types) == {m.instance_type for m in members}
        prices = [m.price_per_hour for m in members]
        assert c.group_price_per_hour == (min(prices), max(prices))
        totals = [m.total_price_per_hour for m in members]
        assert c.group_total_price_per_hour == (min(totals), max(totals))
        # the group is what the deployment would launch, in the same order
        instances = build_deployment(embedded.spec, c, result.candidates,
                                     model=embedded.model).instances
        assert tuple(i.instance_type for i in instances) == c.group_instance_types
    c = wide[0]
    data = plan_json(result, embedded.spec, {})["candidates"][c.rank - 1]
    assert data["group_instance_types"] == list(c.group_instance_types)
    assert data["group_price_per_hour"] == {"min": c.group_price_per_hour[0],
                                            "max": c.group_price_per_hour[1]}
    low, high = c.group_price_per_hour
    row = next(line for line in plan_table(result, embedded.spec, {}, show_all=True).splitlines()
               if line.split()[:1] == [str(c.rank)])
    assert f"{low:.2f}-{high:.2f}" in row and f"(+{len(c.group_instance_types) - 1} type" in row


def test_one_ami_for_many_aws_regions_is_refused_and_one_region_is_fine(write_spec):
    path = write_spec("resources:\n  cloud: aws\n  accelerators: L4:1\n"
                      "  image_id: ami-0123456789abcdef0\n")
    with pytest.raises(UserError, match="the image belongs to one region, but the AWS "
                                        "candidates span"):
        make_plan(path)
    _, result = make_plan(path, Options(region="us-east-1"))
    assert {c.region for c in result.candidates} == {"us-east-1"}
