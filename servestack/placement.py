"""Where a service's replicas go: pools (cloud x region x spot), cheapest first.

A pool is what one instance group behind one regional load balancer can hold: the plan's
candidates of one cloud, region and spot setting that can share the group of the pool's best
candidate (the same GPU count per VM and attached GPU type, see `planner.group_key`; AWS spot
candidates of several zones of the region join, since the region's group spans its zones).
The pool's price is its best candidate's, per replica; its instance types are the group's, in
rank order, which the deploy walks as fallbacks.

`place` puts `replicas` (the spec's min_replicas) into at most `max_pools` pools, each in its own
region: by default all in the cheapest pool, spilling to the next cheapest when a pool cannot
hold more; with `spread`, round-robin over the `max_pools` cheapest pools, for availability.
What a pool "can hold" is only what is known at plan time (`Capacity`): the user's
`--max-per-pool`, and the candidates the last deploy found without capacity. Pools follow the
plan's rank order, so an `ordered` spec keeps the user's order before cost.

The work is linear in the candidates: one pass groups them, one pass over the pools places.
This module imports no Pulumi and no cloud SDK.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .catalog import CLOUD_TITLES
from .errors import UserError
from .planner import Candidate, Plan


@dataclass(frozen=True, slots=True)
class Pool:
    cloud: str
    region: str
    use_spot: bool
    replicas: int
    instance_types: tuple[str, ...]  # the group's types, rank order: the first is the chosen
    price_per_hour: float  # one replica of the chosen type
    candidate_ids: tuple[str, ...]  # rank order; the first is the chosen candidate
    zones: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{CLOUD_TITLES[self.cloud]} {self.region}" + (" spot" if self.use_spot else "")

    def to_json(self) -> dict:
        """The plan JSON's `placement` entry (README, "Plan JSON")."""
        return {"cloud": self.cloud, "region": self.region, "replicas": self.replicas,
                "instance_types": list(self.instance_types),
                "price_per_hour": self.price_per_hour,
                "candidate_ids": list(self.candidate_ids), "zones": list(self.zones)}


@dataclass(frozen=True)
class Capacity:
    """What can be had, as far as it is known before deploying."""

    max_per_pool: int | None = None  # --max-per-pool: what the user knows of quotas/history
    without: frozenset[str] = field(default_factory=frozenset)  # candidate ids found full


@dataclass
class _Forming:
    """A pool being gathered: its best candidate and the ones that can share its group."""

    best: Candidate
    members: list[Candidate]

    def pool(self, replicas: int) -> Pool:
        zones = dict.fromkeys(z for m in self.members for z in m.zones)
        return Pool(cloud=self.best.cloud, region=self.best.region, use_spot=self.best.use_spot,
                    replicas=replicas,
                    instance_types=tuple(dict.fromkeys(m.instance_type for m in self.members)),
                    price_per_hour=self.best.price_per_hour,
                    candidate_ids=tuple(m.id for m in self.members), zones=tuple(zones))


def place(plan: Plan, replicas: int, max_pools: int = 1, spread: bool = False,
          capacity: Capacity | int | None = None) -> list[Pool]:
    """The pools that hold `replicas`, cheapest first, their replicas summing to `replicas`.
    `capacity` as a number: at most that many replicas per pool. UserError when the flags are
    out of range or the pools cannot hold them all."""
    if not isinstance(capacity, Capacity):
        capacity = Capacity(max_per_pool=capacity)
    if max_pools < 1:
        raise UserError(f"--max-pools must be at least 1, got {max_pools}")
    if capacity.max_per_pool is not None and capacity.max_per_pool < 1:
        raise UserError(f"--max-per-pool must be at least 1, got {capacity.max_per_pool}")
    if replicas < 1:
        raise UserError(f"a service needs at least 1 replica to place, got {replicas}")
    forming = _one_per_region(_pools(plan.candidates, capacity.without))[:max_pools]
    if not forming:
        raise UserError(f"no pool can be had: the last deploy found all "
                        f"{len(plan.candidates)} candidates without capacity")
    counts = _spread(replicas, len(forming), capacity.max_per_pool) if spread else \
        _fill(replicas, len(forming), capacity.max_per_pool)
    if sum(counts) < replicas:
        raise _too_small(replicas, counts, max_pools, capacity.max_per_pool)
    return [f.pool(n) for f, n in zip(forming, counts, strict=True) if n]


def _pools(candidates: Iterable[Candidate], without: frozenset[str]) -> list[_Forming]:
    """Per cloud x region x spot, in rank order of each pool's best candidate."""
    pools: dict[tuple[str, str, bool], _Forming] = {}
    for c in candidates:
        if c.id in without:
            continue
        key = (c.cloud, c.region, c.use_spot)
        found = pools.get(key)
        if found is None:
            pools[key] = _Forming(c, [c])
        elif _shares_group(found.best, c):
            found.members.append(c)
    return list(pools.values())


def _shares_group(best: Candidate, c: Candidate) -> bool:
    """One instance group launches one GPU count per VM and at most one attached GPU type
    (zones of a region do not split it: a regional group spans them)."""
    return (c.accelerator_count, c.attached_gpu) == (best.accelerator_count, best.attached_gpu)


def _one_per_region(pools: list[_Forming]) -> list[_Forming]:
    """The best pool of each region: two pools of one region (spot and on-demand) would be two
    groups behind two balancers in the same place, no gain in availability."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for f in pools:
        where = (f.best.cloud, f.best.region)
        if where not in seen:
            seen.add(where)
            kept.append(f)
    return kept


def _fill(replicas: int, pools: int, cap: int | None) -> list[int]:
    """Cheapest first: each pool takes what it can hold, the rest spills to the next."""
    counts, left = [], replicas
    for _ in range(pools):
        n = left if cap is None else min(left, cap)
        counts.append(n)
        left -= n
    return counts


def _spread(replicas: int, pools: int, cap: int | None) -> list[int]:
    """Round-robin: an even share each, the odd ones to the cheapest. With one cap for all, a
    share above it means the pools cannot hold the replicas at all (the caller says so)."""
    share, extra = divmod(replicas, pools)
    counts = [share + (i < extra) for i in range(pools)]
    return counts if cap is None else [min(n, cap) for n in counts]


def _too_small(replicas: int, counts: list[int], max_pools: int, cap: int | None) -> UserError:
    """Only a cap leaves replicas out (without one the first pool takes them all)."""
    held, pools = sum(counts), len(counts)
    found = f"{pools} pool{'s' if pools > 1 else ''} of at most {cap} (--max-per-pool)"
    more = "raise --max-pools or --max-per-pool" if pools == max_pools else \
        "no other region of the plan remains; raise --max-per-pool or widen the spec"
    return UserError(f"cannot place {replicas} replicas: {found} hold {held}; {more}")
