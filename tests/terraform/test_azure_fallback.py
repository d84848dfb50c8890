"""Drives the Azure on-demand fallback design: the autoscale settings Terraform renders for a
spot deployment with dynamic_ondemand_fallback, run minute by minute by a small model of Azure
autoscale over a scripted day: first boot, a load rise, spot capacity lost, spot back.

The model follows Azure's documented evaluation (docs "Understand autoscale settings" and
"Flapping in Autoscale"): scale out when any scale-out rule holds, to the largest capacity the
holding rules give; scale in only when every scale-in rule holds, and not when the projected
per-instance value (value x n / (n - 1)) would cross a scale-out threshold (applied to the
setting whose metric is its own scale set's; Azure documents no projection for a rule on
another resource's metric, so the fallback gets none); every action waits for the cooldown
since the setting's last action; with no data in the window the default capacity applies when
the count is below it. Assumed where Azure says nothing: a percent step rounds up; a spot
scale set's target count stays while spot is missing and is filled when spot returns (spot
restore). A VM serves once it has loaded the model (the readiness delay); the balancer
spreads requests evenly, so every serving replica publishes load / serving replicas.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from servestack.terraform import render, tfvars
from tests.components.test_azure_scaling import with_fallback

MINUTES = re.compile(r"PT(\d+)M")


@dataclass(frozen=True)
class Rule:
    direction: str
    operator: str
    threshold: float
    aggregation: str
    window: int
    cooldown: int
    type: str
    value: int

    def holds(self, samples: list[float]) -> bool:
        value = min(samples) if self.aggregation == "Minimum" else sum(samples) / len(samples)
        return value > self.threshold if self.operator == "GreaterThan" \
            else value < self.threshold


@dataclass
class Setting:
    minimum: int
    maximum: int
    default: int
    rules: list[Rule]
    own_metric: bool  # the rules read the scaled set's own metric (Azure's flapping estimate)
    capacity: int = 0
    last_action: int = -10**6

    def step(self, now: int, history: list[float | None]) -> None:
        if not [s for s in history[-5:] if s is not None]:
            self.capacity = max(self.capacity, self.default)  # metrics unavailable
            return
        grow = [self._after(r) for r in self.rules if r.direction == "Increase"
                and self._ready(now, r) and r.holds(self._window(r, history))]
        if grow and max(grow) > self.capacity:
            self._act(now, min(self.maximum, max(grow)))
            return
        shrink = [r for r in self.rules if r.direction == "Decrease"]
        if shrink and all(self._ready(now, r) and r.holds(self._window(r, history))
                          for r in shrink):
            target = max(self.minimum, self.capacity - shrink[0].value)
            if target < self.capacity and not self._flaps(shrink[0], history, target):
                self._act(now, target)

    def _window(self, rule: Rule, history: list[float | None]) -> list[float]:
        return [s for s in history[-rule.window:] if s is not None]

    def _ready(self, now: int, rule: Rule) -> bool:
        return now - self.last_action >= rule.cooldown

    def _after(self, rule: Rule) -> int:
        if rule.type == "PercentChangeCount":
            return self.capacity + math.ceil(self.capacity * rule.value / 100)
        return self.capacity + rule.value

    def _flaps(self, rule: Rule, history: list[float | None], target: int) -> bool:
        if not self.own_metric or target == 0:
            return False
        samples = self._window(rule, history)
        projected = sum(samples) / len(samples) * self.capacity / target
        return any(projected > r.threshold for r in self.rules if r.direction == "Increase")

    def _act(self, now: int, capacity: int) -> None:
        self.capacity, self.last_action = capacity, now


@dataclass
class Group:
    """A scale set's VMs by the minute they started (the first `base` are on-demand)."""

    setting: Setting
    spot: bool
    base: int = 0
    vms: list[int] = field(default_factory=list)

    def reconcile(self, now: int, spot_available: bool) -> None:
        if self.spot and not spot_available:
            del self.vms[self.base:]  # evicted (eviction policy Delete)
        room = self.setting.capacity if spot_available or not self.spot else self.base
        while len(self.vms) < room:
            self.vms.append(now)
        del self.vms[max(self.setting.capacity, 0):]

    def serving(self, now: int, load_minutes: int) -> int:
        return sum(1 for started in self.vms if now - started >= load_minutes)


def settings_of(doc: dict, values: dict) -> dict[str, Setting]:
    """The rendered autoscale settings, with the tfvars put into their capacity."""
    def number(value: object) -> int:
        if isinstance(value, int):
            return value
        match = re.fullmatch(r"\$\{var\.(\w+)(?: - (\d+))?\}", str(value))
        assert match, value
        return values[match[1]] - int(match[2] or 0)

    found = {}
    for key, body in doc["resource"]["azurerm_monitor_autoscale_setting"].items():
        [profile] = body["profile"]
        capacity = {k: number(v) for k, v in profile["capacity"].items()}
        rules = [Rule(r["scale_action"]["direction"], r["metric_trigger"]["operator"],
                      r["metric_trigger"]["threshold"], r["metric_trigger"]["time_aggregation"],
                      int(MINUTES.fullmatch(r["metric_trigger"]["time_window"])[1]),
                      int(MINUTES.fullmatch(r["scale_action"]["cooldown"])[1]),
                      r["scale_action"]["type"], r["scale_action"]["value"])
                 for r in profile["rule"]]
        own = all(r["metric_trigger"]["metric_resource_id"] == body["target_resource_id"]
                  for r in profile["rule"])
        found[key] = Setting(capacity["minimum"], capacity["maximum"], capacity["default"],
                             rules, own)
    return found


def load(minute: int) -> float:
    """Requests per second the service gets: 4 (two replicas' worth at 2.5 per replica),
    12 (five replicas' worth) from minute 90, 4 again from minute 450."""
    return 12.0 if 90 <= minute < 450 else 4.0


def spot_available(minute: int) -> bool:
    return not 200 <= minute < 360


def simulate(minutes: int = 600) -> list[dict]:
    d = with_fallback()
    settings = settings_of(render(d), tfvars(d))
    main = Group(settings["group"], spot=True, base=d.on_demand_base)
    fallback = Group(settings["fallback"], spot=False)
    main.setting.capacity = d.desired_replicas
    load_minutes = math.ceil(d.health.grace_period_seconds / 60)
    history: list[float | None] = []
    trace = []
    for now in range(minutes):
        for group in (main, fallback):
            group.reconcile(now, spot_available(now))
        spot_serving = main.serving(now, load_minutes)
        serving = spot_serving + fallback.serving(now, load_minutes)
        history.append(load(now) / serving if spot_serving else None)
        main.setting.step(now, history)
        fallback.setting.step(now, history)
        trace.append({"minute": now, "main": main.setting.capacity,
                      "fallback": fallback.setting.capacity, "serving": serving,
                      "needed": math.ceil(load(now) / d.autoscaling.target)})
    return trace


def test_the_fallback_deployment_has_a_spot_set_and_an_on_demand_set():
    d = with_fallback()
    settings = settings_of(render(d), tfvars(d))
    assert set(settings) == {"group", "fallback"}
    assert (settings["group"].minimum, settings["group"].maximum) == (2, 6)
    assert (settings["fallback"].minimum, settings["fallback"].maximum,
            settings["fallback"].default) == (0, 5, 1)
    assert settings["group"].own_metric and not settings["fallback"].own_metric


def test_on_demand_replicas_stand_in_while_spot_is_missing_and_leave_when_it_returns():
    trace = simulate()
    at = {t["minute"]: t for t in trace}

    def span(first: int, last: int) -> list[dict]:
        return [at[m] for m in range(first, last)]

    # first boot: no spot replica publishes yet, so the spot floor (1) stands in on demand,
    # and leaves once the spot replicas serve and the load needs no more
    assert at[0]["fallback"] == 1
    assert (at[89]["main"], at[89]["fallback"], at[89]["serving"]) == (2, 0, 2)
    # the load rises to five replicas' worth (minute 90): the spot set grows to cover it (a
    # stand-in can come while its new VMs load the model)
    assert at[199]["serving"] >= at[199]["needed"] == 5 and at[199]["main"] >= 4
    # spot lost (minutes 200-359): only on-demand VMs serve, and stand-ins grow step by step
    # (1, 2, 4 at a time by how far the load is above the target) until the need is covered,
    # then stay (no stand-in leaves while it is needed)
    assert at[201]["serving"] <= 2
    stand_ins = [t["fallback"] for t in span(200, 360)]
    assert stand_ins == sorted(stand_ins) and stand_ins[-1] >= 3
    covered = next(t["minute"] for t in span(200, 360) if t["serving"] >= 5)
    assert covered <= 310 and all(t["serving"] >= 5 for t in span(covered, 360))
    # spot back (minute 360): the spot set refills, the stand-ins leave (one may stay while
    # each replica runs at 80-100% of the target), and the need stays covered throughout
    assert at[449]["fallback"] <= 1 < stand_ins[-1]
    assert all(t["serving"] >= 5 for t in span(360, 450))
    # the load falls (minute 450): the last stand-in leaves and the spot set shrinks to min
    assert (at[599]["fallback"], at[599]["main"], at[599]["serving"]) == (0, 2, 2)
    assert max(t["fallback"] for t in trace) <= 5  # never beyond the spot replicas' count
