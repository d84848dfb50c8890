"""Placement: the plan's replicas over pools (cloud x region x spot), on real plans of the
shipped catalog, cheapest first or spread, within what each pool is known to hold."""

from __future__ import annotations

from dataclasses import replace

import pytest

from servestack.errors import UserError
from servestack.inputs import load_inputs
from servestack.placement import Capacity, place
from servestack.planner import Options, Plan, plan
from servestack.report import plan_json

from .conftest import SHARED_MIXTRAL

# Four replicas, two GPU sets, four regions of three clouds (SkyPilot's any_of form).
MULTI = """\
name: multi
service:
  readiness_probe: /health
  replica_policy:
    min_replicas: 4
resources:
  accelerators: {L4:8, A100-80GB:2}
  any_of:
    - {cloud: aws, region: us-east-1}
    - {cloud: gcp, region: us-central1}
    - {infra: azure/eastus}
    - {cloud: azure, region: westus2}
run: vllm serve mistralai/Mixtral-8x7B-Instruct-v0.1
"""


def planned(path) -> Plan:
    inputs = load_inputs(str(path))
    return plan(inputs.spec, inputs.catalog, inputs.facts, model=inputs.model)


@pytest.fixture
def multi(write_spec) -> Plan:
    return planned(write_spec(MULTI))


def regions_in_rank_order(result: Plan) -> list[tuple[str, str]]:
    """(cloud, region) of the candidates, best first, each once: what "cheapest" means."""
    return list(dict.fromkeys((c.cloud, c.region) for c in result.candidates))


def where(pools) -> list[tuple[str, str, int]]:
    return [(p.cloud, p.region, p.replicas) for p in pools]


def test_default_is_one_pool_holding_every_replica_at_the_best_candidate(multi):
    best = multi.candidates[0]
    [pool] = place(multi, 4)
    assert (pool.cloud, pool.region, pool.replicas) == (best.cloud, best.region, 4)
    assert pool.instance_types == best.group_instance_types  # the group the deploy builds
    assert pool.price_per_hour == best.price_per_hour
    assert pool.candidate_ids[0] == best.id


def test_spread_puts_four_replicas_in_the_two_cheapest_regions(multi):
    first, second = regions_in_rank_order(multi)[:2]
    pools = place(multi, 4, max_pools=2, spread=True)
    assert where(pools) == [(*first, 2), (*second, 2)]
    assert first != second


def test_spread_gives_the_odd_replica_to_the_cheapest_pool(multi):
    pools = place(multi, 5, max_pools=3, spread=True)
    assert [p.replicas for p in pools] == [2, 2, 1]
    assert len({(p.cloud, p.region) for p in pools}) == 3


def test_a_full_pool_spills_to_the_next_cheapest_region(multi):
    first, second = regions_in_rank_order(multi)[:2]
    pools = place(multi, 4, max_pools=2, capacity=Capacity(max_per_pool=3))
    assert where(pools) == [(*first, 3), (*second, 1)]


def test_spill_uses_only_the_pools_it_needs(multi):
    assert len(place(multi, 4, max_pools=3)) == 1
    assert len(place(multi, 4, max_pools=3, capacity=Capacity(max_per_pool=2))) == 2


def test_spread_within_a_cap_and_beyond_it(multi):
    pools = place(multi, 3, max_pools=3, spread=True, capacity=Capacity(max_per_pool=1))
    assert [p.replicas for p in pools] == [1, 1, 1]
    with pytest.raises(UserError, match="3 pools .* hold 3; raise --max-pools"):
        place(multi, 4, max_pools=3, spread=True, capacity=Capacity(max_per_pool=1))


@pytest.mark.parametrize("replicas", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("max_pools", [1, 2, 3])
@pytest.mark.parametrize("cap", [None, 1, 2, 3])
@pytest.mark.parametrize("spread", [False, True])
def test_the_pools_hold_exactly_min_replicas_or_the_plan_says_why(multi, replicas, max_pools,
                                                                 cap, spread):
    regions = len(regions_in_rank_order(multi))
    room = min(max_pools, regions) * (cap or replicas)
    if room < replicas:
        with pytest.raises(UserError, match=f"cannot place {replicas} replicas"):
            place(multi, replicas, max_pools, spread, Capacity(max_per_pool=cap))
        return
    pools = place(multi, replicas, max_pools, spread, Capacity(max_per_pool=cap))
    assert sum(p.replicas for p in pools) == replicas
    assert all(p.replicas >= 1 and (cap is None or p.replicas <= cap) for p in pools)
    assert len(pools) <= max_pools
    assert len({(p.cloud, p.region) for p in pools}) == len(pools)


def test_the_error_names_the_flags_that_would_make_room(multi):
    with pytest.raises(UserError) as caught:
        place(multi, 4, max_pools=2, capacity=Capacity(max_per_pool=1))
    message = str(caught.value)
    assert "\n" not in message
    assert message == ("cannot place 4 replicas: 2 pools of at most 1 (--max-per-pool) "
                       "hold 2; raise --max-pools or --max-per-pool")


def test_too_few_regions_is_said_so(multi):
    """Four regions in the spec: a fifth pool cannot be had, whatever --max-pools says."""
    with pytest.raises(UserError, match="4 pools of at most 1 .* hold 4; no other region"):
        place(multi, 5, max_pools=9, spread=True, capacity=Capacity(max_per_pool=1))


@pytest.mark.parametrize("max_pools, cap, flag", [(0, None, "--max-pools"),
                                                  (-1, None, "--max-pools"),
                                                  (1, 0, "--max-per-pool")])
def test_out_of_range_flags_are_user_errors(multi, max_pools, cap, flag):
    with pytest.raises(UserError, match=f"^{flag} must be at least 1"):
        place(multi, 4, max_pools, capacity=Capacity(max_per_pool=cap))


def test_candidates_found_full_leave_their_pool(multi):
    """What the last deploy found without capacity is not "had": the cheapest region's
    candidates left out, its replicas go to the next region."""
    first, second = regions_in_rank_order(multi)[:2]
    full = frozenset(c.id for c in multi.candidates if (c.cloud, c.region) == first)
    [pool] = place(multi, 4, capacity=Capacity(without=full))
    assert (pool.cloud, pool.region) == second
    everything = frozenset(c.id for c in multi.candidates)
    with pytest.raises(UserError, match="without capacity"):
        place(multi, 4, capacity=Capacity(without=everything))


def test_a_pool_keeps_only_what_its_best_candidates_group_can_launch(embedded):
    """One instance group launches one GPU count: other counts of the same region are not in
    the pool; AWS spot candidates of several zones of one region are (one regional group)."""
    result = plan(embedded.spec, embedded.catalog, embedded.facts, Options(spot=True),
                  model=embedded.model)
    pools = place(result, 100, max_pools=100, spread=True)  # a pool in every region
    assert len(pools) == len(regions_in_rank_order(result))
    by_id = {c.id: c for c in result.candidates}
    for pool in pools:
        members = [by_id[i] for i in pool.candidate_ids]
        assert {m.accelerator_count for m in members} == {members[0].accelerator_count}
        assert {(m.cloud, m.region, m.use_spot) for m in members} == \
            {(pool.cloud, pool.region, pool.use_spot)}
        assert [m.rank for m in members] == sorted(m.rank for m in members)
        assert pool.instance_types == tuple(dict.fromkeys(m.instance_type for m in members))
    spot_zones = [p for p in pools if p.use_spot and len({by_id[i].zone for i in
                                                          p.candidate_ids}) > 1]
    assert spot_zones, "an AWS spot pool spans zones of its region"


def test_pools_follow_the_users_order_before_cost(write_spec):
    """ordered: the user's first choice is the first pool, even when dearer."""
    result = planned(write_spec(MULTI.replace(
        "  any_of:\n", "  ordered:\n").replace("accelerators: {L4:8, A100-80GB:2}",
                                              "accelerators: L4:8")))
    first = result.candidates[0]
    assert (first.cloud, first.region) == ("aws", "us-east-1")
    pools = place(result, 4, max_pools=2, spread=True)
    assert [(p.cloud, p.region) for p in pools] == [("aws", "us-east-1"), ("gcp", "us-central1")]


@pytest.mark.skipif(not SHARED_MIXTRAL.exists(), reason="shared/ not beside the checkout")
def test_skypilots_mixtral_spec_places_pools_in_distinct_regions():
    result = planned(SHARED_MIXTRAL)
    assert result.replicas == 2
    pools = place(result, 4, max_pools=4, spread=True)
    assert [p.replicas for p in pools] == [1, 1, 1, 1]
    assert len({(p.cloud, p.region) for p in pools}) == 4
    assert pools[0].candidate_ids[0] == result.candidates[0].id
    prices = [p.price_per_hour for p in pools]
    assert prices == sorted(prices)  # a set spec: cheapest first


def test_plan_json_always_has_placement_summing_to_replicas(multi, write_spec):
    inputs = load_inputs(str(write_spec(MULTI)))
    data = plan_json(multi, inputs.spec, inputs.catalog.dates)
    [pool] = data["placement"]
    assert set(pool) == {"cloud", "region", "replicas", "instance_types", "price_per_hour",
                         "candidate_ids", "zones"}
    assert pool["replicas"] == data["replicas"] == 4
    multi.placement = place(multi, 4, max_pools=2, spread=True)
    data = plan_json(multi, inputs.spec, inputs.catalog.dates)
    assert [p["replicas"] for p in data["placement"]] == [2, 2]


class _Counted:
    """A candidate whose attribute reads are counted (the work placement does on it)."""

    def __init__(self, candidate, reads: list[int]) -> None:
        self._candidate, self._reads = candidate, reads

    def __getattr__(self, name):
        self._reads[0] += 1
        return getattr(self._candidate, name)


@pytest.mark.parametrize("size", [400, 4000])
def test_placement_reads_each_candidate_a_bounded_number_of_times(multi, size):
    """Linear in the candidates: the same few reads per candidate whatever the plan's size
    (regions and types made up by renaming a real candidate)."""
    real = multi.candidates[0]
    reads = [0]
    fakes = [_Counted(replace(real, id=f"c{n}", region=f"r{n % (size // 4)}",
                              instance_type=f"t{n}", rank=n + 1), reads) for n in range(size)]
    fake_plan = Plan(candidates=fakes, dropped=[], replicas=4, model=None)  # type: ignore[arg-type]
    pools = place(fake_plan, 40, max_pools=size, spread=True)
    assert sum(p.replicas for p in pools) == 40
    assert reads[0] <= 12 * size


def test_a_number_as_capacity_is_the_most_per_pool(multi):
    assert [p.replicas for p in place(multi, 4, 2, False, 3)] == [3, 1]
