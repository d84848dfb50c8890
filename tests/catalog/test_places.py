"""Offers grouped by place: per GPU set on first use, the same objects every time, sums right."""

from __future__ import annotations

import threading
import time

import pytest
from servestack.catalog import Catalog, base

from servestack.inputs import load_inputs
from servestack.planner import plan

ZONED = frozenset({"aws"})


@pytest.fixture(scope="module")
def shipped() -> Catalog:
    return load_inputs(None).catalog


def fresh(catalog: Catalog) -> Catalog:
    return Catalog(gpus=catalog.gpus, offers=catalog.offers, dates=catalog.dates)


def test_every_offer_lands_in_one_place_with_the_sums_of_its_offers(shipped):
    places = fresh(shipped).places(ZONED)
    seen = 0
    for gpus in places.gpu_sets():
        for place in places.pool(gpus):
            seen += len(place.offers)
            assert {(o.cloud, o.region, o.instance_type, o.accelerator, o.accelerator_count)
                    for o in place.offers} == {(place.cloud, place.region, place.instance_type,
                                                *gpus)}
            if place.cloud in ZONED:
                assert {o.zone for o in place.offers} == {place.zone}
            prices = [o.price for o in place.offers if o.price is not None]
            assert place.price == (min(prices) if prices else None)
            assert place.date == min(o.date for o in place.offers)
            first = place.offers[0]
            assert (place.vcpus, place.memory_gib, place.gpu_memory_mib, place.attached_gpu) == \
                (first.vcpus, first.memory_gib, first.gpu_memory_mib, first.attached_gpu)
    assert seen == len(shipped.offers)


def test_a_plan_groups_only_the_gpu_sets_it_asks_for(shipped):
    inputs = load_inputs(None)
    catalog = fresh(shipped)
    plan(inputs.spec, catalog, inputs.facts, model=inputs.model)
    places = catalog.places(frozenset())
    asked = {(a.accelerator, a.count) for a in inputs.spec.alternatives}
    assert set(places.pools) <= asked
    assert len(places.gpu_sets()) > len(places.pools)  # T4, V100, 1-GPU sets... never grouped
    again = catalog.places(frozenset())
    assert again is places and again.pool(("L4", 8)) is places.pool(("L4", 8))


def test_by_instance_type_covers_every_gpu_set_of_the_type(shipped):
    places = fresh(shipped).places(frozenset())
    n1 = places.of_type("n1-standard-8")
    assert {(p.accelerator, p.accelerator_count) for p in n1} >= {("T4", 1), ("V100", 1)}
    assert places.of_type("no-such-type") == []


def test_threads_asking_for_a_new_pool_at_once_get_the_same_places(shipped, monkeypatch):
    # A plan tells places apart by identity and may read one pool for several alternatives:
    # a second thread must never swap in places of its own.
    slow = base._grouped

    def grouped(offers, zoned):
        time.sleep(0.05)  # widen the window in which both threads find the pool missing
        return slow(offers, zoned)

    monkeypatch.setattr(base, "_grouped", grouped)
    places = fresh(shipped).places(frozenset())
    start = threading.Barrier(2)
    got: list = []

    def ask() -> None:
        start.wait()
        got.append(places.pool(("L4", 8)))

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 2 and got[0] is got[1] and got[0]
