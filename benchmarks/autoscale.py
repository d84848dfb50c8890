"""Replay a day of diurnal LLM traffic through each cloud's autoscaler as servestack generates it.

The spec is the embedded Mixtral example with SkyServe's replica_policy min_replicas 1,
max_replicas 8, target_qps_per_replica 2 (delays left at SkyServe's 300 s / 1200 s). For each
cloud the best candidate of the plan is built with `build_deployment` and rendered to Terraform
JSON; the simulated rule's numbers are read back from that JSON, so they are what a deploy
would create:

  AWS    target tracking on ALBRequestCountPerTarget (`target_value` requests per target per
         minute), scale-in disabled on it; its scale-out alarm is the one target tracking
         creates for a 1-minute metric: 3 breaching datapoints of 3 (AWS docs, "Target tracking
         scaling policies": "3 data points" out, "15 data points" in; the 15-point scale-in
         alarm is disabled by `disable_scale_in` and replaced by servestack's own alarm,
         `datapoints_to_alarm` of `evaluation_periods` minutes with more replicas than the
         load needs, stepping down by the surplus). The new capacity is proportional,
         ceil(requests per minute / target_value); `estimated_instance_warmup` keeps warming
         instances counted so they are not launched twice.
  GCP    the regional autoscaler on load-balancing utilization: `max_rate_per_instance` x the
         utilization target per VM, recommendation ceil(load / that); scale-out at once; scale-in
         only below the highest recommendation of the last 10 minutes (GCP's stabilization
         period) or of `scale_in_control.time_window_sec` when that allows 0 replicas
         (`max_scaled_in_replicas`) to go; new VMs' usage is ignored for `cooldown_period`
         (GCP's initialization period).
  Azure  the autoscale setting's rules, evaluated every minute: a rule's metric is the average
         over its `time_window` of the per-minute average across the VMs that report it (a
         booting VM publishes nothing); any scale-out rule that fires acts (the largest),
         scale-in only when every scale-in rule fires and the estimate after it would not fire
         a scale-out rule (Azure's flapping guard); after an action, nothing for its
         `cooldown`.

The load: a sinusoid over 24 h from 04:00, its trough, to the peak at 16:00 and back, with
seeded +-10 % noise per minute. The daily shape follows the diurnal cycles reported for
production LLM traffic on Azure: BurstGPT (Wang et al., "BurstGPT: A Real-world Workload
Dataset to Optimize LLM Serving Systems", arXiv:2401.17644: the Azure OpenAI GPT service's
conversation logs, periodic daily request rates) and SageServe (arXiv:2502.14617: Microsoft
Office 365's LLM traffic, diurnal per-region load). The 6:1 peak-to-trough ratio (12 qps :
2 qps) is this benchmark's assumption, not a figure from those papers; `--peak` and
`--trough` change it.

A replica serves only after the cold start: `--cold-start` seconds, default 600: a GPU VM's
provisioning plus vLLM's start, which a published breakdown puts at 220-510 s for a 30 GB
model image (node 45-60 s, image/weights 120-300 s, load into HBM 45-120 s, engine init
10-30 s; study.piphipsi.com, "Cold Start Mitigation for Serverless LLMs"); Mixtral 8x7B's
bf16 weights are about 93 GB, three times that download, so 600 s is a low estimate (vLLM's
own startup steps: "Breaking the Ice: Analyzing Cold Start Latency in vLLM",
arXiv:2606.07362). A replica serves target_qps_per_replica requests per second (SkyServe's
meaning of the target); a minute whose load exceeds the serving replicas times that is
"over capacity". Cost counts every VM that exists (booting ones too) at the candidate's
hourly price, against a fixed fleet of max_replicas for the whole day.

    python benchmarks/autoscale.py                   # JSON summary on stdout
    python benchmarks/autoscale.py --series out.csv  # and the per-minute series
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from servestack.deployment.build import build_deployment  # noqa: E402
from servestack.deployment.model import Deployment  # noqa: E402
from servestack.inputs import load_inputs  # noqa: E402
from servestack.planner import plan  # noqa: E402
from servestack.terraform import render  # noqa: E402

DAY_MINUTES = 24 * 60
POLICY = """  replica_policy:
    min_replicas: 1
    max_replicas: 8
    target_qps_per_replica: 2
"""
AWS_SCALE_OUT_DATAPOINTS = 3  # target tracking's high alarm on a 1-minute metric
GCP_STABILIZATION_MINUTES = 10  # the autoscaler's scale-in stabilization period


# --- the load --------------------------------------------------------------------------------

def diurnal_trace(minutes: int = DAY_MINUTES, *, peak: float = 12.0, trough: float = 2.0,
                  seed: int = 7) -> list[float]:
    """Requests per second for each minute from 04:00 (the trough; the group starts at min
    replicas, which the trough fits) to the peak at 16:00 and back, +-10 % noise."""
    rng = random.Random(seed)
    trace = []
    for t in range(minutes):
        phase = 2 * math.pi * (t % DAY_MINUTES) / DAY_MINUTES
        base = trough + (peak - trough) * (1 - math.cos(phase)) / 2
        trace.append(round(base * rng.uniform(0.9, 1.1), 3))
    return trace


# --- the group -------------------------------------------------------------------------------

@dataclass
class Group:
    """The VMs of the group: when each was launched; a VM serves `cold_start` minutes later."""

    cold_start: int
    launched: list[int] = field(default_factory=list)

    def resize(self, size: int, now: int) -> None:
        while len(self.launched) < size:
            self.launched.append(now)
        while len(self.launched) > size:  # the newest (least ready) go first
            self.launched.pop()

    def serving(self, now: int) -> int:
        return sum(1 for t in self.launched if now - t >= self.cold_start)

    @property
    def size(self) -> int:
        return len(self.launched)


@dataclass(frozen=True)
class Minute:
    """What the autoscaler sees at one minute."""

    t: int
    qps: float
    size: int  # VMs in the group (desired capacity)
    serving: int  # VMs past their cold start (healthy behind the load balancer)


Controller = Callable[[Minute], int]  # -> the group's new size (before min/max)


# --- the clouds' rules, as generated -----------------------------------------------------------

def _match(pattern: str, text: str) -> re.Match:
    """A generated value's shape that the replay relies on; another shape is a bug here."""
    found = re.search(pattern, text)
    if found is None:
        raise ValueError(f"{text!r} does not match {pattern!r}")
    return found


def _resource(doc: dict, kind: str, name: str) -> dict:
    return doc["resource"][kind][name]


def aws_rule(d: Deployment, doc: dict) -> Controller:
    policy = _resource(doc, "aws_autoscaling_policy", "scale_out")
    target = float(policy["target_tracking_configuration"]["target_value"])
    alarm = _resource(doc, "aws_cloudwatch_metric_alarm", "scale_in")
    needs = next(q["expression"] for q in alarm["metric_query"] if q.get("expression"))
    per_replica = float(_match(r"/ 60 / ([0-9.]+)\)", needs).group(1))
    periods, to_alarm = int(alarm["evaluation_periods"]), int(alarm["datapoints_to_alarm"])
    breaches: list[bool] = []
    surplus: list[int] = []

    def decide(m: Minute) -> int:
        per_target = m.qps * 60 / max(m.serving, 1)  # ALBRequestCountPerTarget: healthy only
        breaches.append(per_target > target)
        if len(breaches) >= AWS_SCALE_OUT_DATAPOINTS and all(breaches[-AWS_SCALE_OUT_DATAPOINTS:]):
            return max(m.size, math.ceil(m.qps * 60 / target))
        surplus.append(m.size - math.ceil(m.qps / per_replica))
        window = surplus[-periods:]
        if len(window) == periods and sum(1 for s in window if s >= 1) >= to_alarm:
            return m.size - surplus[-1]
        return m.size

    return decide


def gcp_rule(d: Deployment, doc: dict) -> Controller:
    policy = _resource(doc, "google_compute_region_autoscaler", "group")["autoscaling_policy"]
    backend = _resource(doc, "google_compute_region_backend_service", "backend")["backend"][0]
    per_vm = float(backend["max_rate_per_instance"]) * \
        float(policy["load_balancing_utilization"]["target"])
    control = policy.get("scale_in_control") or {}
    window = GCP_STABILIZATION_MINUTES
    if (control.get("max_scaled_in_replicas") or {}).get("percent") == 0:
        window = max(window, int(control["time_window_sec"]) // 60)
    history: list[int] = []

    def decide(m: Minute) -> int:
        history.append(math.ceil(m.qps / per_vm))
        return max(history[-window:])

    return decide


@dataclass(frozen=True)
class AzureRule:
    scale_out: bool
    window: int  # minutes
    above: bool
    threshold: float
    kind: str
    value: int
    cooldown: int  # minutes


def _minutes(iso: str) -> int:
    match = _match(r"PT(?:(\d+)H)?(?:(\d+)M)?$", iso)
    return int(match.group(1) or 0) * 60 + int(match.group(2) or 0)


def azure_rules(doc: dict) -> list[AzureRule]:
    setting = _resource(doc, "azurerm_monitor_autoscale_setting", "group")
    rules = []
    for rule in setting["profile"][0]["rule"]:
        trigger, action = rule["metric_trigger"], rule["scale_action"]
        rules.append(AzureRule(action["direction"] == "Increase", _minutes(trigger["time_window"]),
                               trigger["operator"].startswith("Greater"),
                               float(trigger["threshold"]), action["type"], int(action["value"]),
                               _minutes(action["cooldown"])))
    return rules


def _azure_target(rule: AzureRule, size: int) -> int:
    if rule.kind == "ChangeCount":
        change = rule.value
    else:  # PercentChangeCount: at least one VM
        change = max(1, math.ceil(size * rule.value / 100))
    return size + change if rule.scale_out else size - change


def azure_rule(d: Deployment, doc: dict) -> Controller:
    rules = azure_rules(doc)
    per_vm: list[float] = []  # the per-minute average of the VMs' published requests_per_second
    quiet_until = [0]

    def average(rule: AzureRule) -> float:
        return sum(per_vm[-rule.window:]) / len(per_vm[-rule.window:])

    def fires(rule: AzureRule) -> bool:
        value = average(rule)
        return value > rule.threshold if rule.above else value < rule.threshold

    def decide(m: Minute) -> int:
        per_vm.append(m.qps / m.serving if m.serving else 0.0)
        if m.t < quiet_until[0]:
            return m.size
        out = [r for r in rules if r.scale_out and fires(r)]
        inward = [r for r in rules if not r.scale_out]
        if out:
            best = max(out, key=lambda r: _azure_target(r, m.size))
            quiet_until[0] = m.t + best.cooldown
            return _azure_target(best, m.size)
        if inward and all(fires(r) for r in inward) and m.size > 1:
            # the estimate: the scale-in rule's value spread over one VM fewer
            after = average(inward[0]) * m.serving / max(m.serving - 1, 1)
            if any(r.scale_out and after > r.threshold for r in rules):
                return m.size  # the flapping guard: the estimate would scale out again
            quiet_until[0] = m.t + inward[0].cooldown
            return _azure_target(inward[0], m.size)
        return m.size

    return decide


RULES = {"aws": aws_rule, "gcp": gcp_rule, "azure": azure_rule}


# --- the replay ------------------------------------------------------------------------------

def replay(d: Deployment, trace: list[float], cold_start_s: int) -> dict:
    """Minute by minute: the autoscaler decides, the group resizes within min..max."""
    decide = RULES[d.cloud](d, render(d))
    group = Group(cold_start=math.ceil(cold_start_s / 60))
    group.launched = [-group.cold_start] * d.min_replicas  # the day starts with min serving
    series = []
    for t, qps in enumerate(trace):
        serving = group.serving(t)
        series.append({"minute": t, "qps": qps, "replicas": group.size, "serving": serving,
                       "over_capacity": qps > serving * _target(d)})
        wanted = decide(Minute(t, qps, group.size, serving))
        group.resize(min(max(wanted, d.min_replicas), d.max_replicas), t)
    return _summary(d, series, cold_start_s)


def _target(d: Deployment) -> float:
    if d.autoscaling is None:
        raise SystemExit("the spec does not autoscale")
    return d.autoscaling.target


def _summary(d: Deployment, series: list[dict], cold_start_s: int) -> dict:
    price = d.primary.price_per_hour
    replica_minutes = sum(row["replicas"] for row in series)
    fixed = d.max_replicas * price * len(series) / 60
    launches = [b["minute"] for a, b in zip(series, series[1:], strict=False)
                if b["replicas"] > a["replicas"]]
    return {
        "cloud": d.cloud, "candidate": d.candidate_id, "price_per_hour": price,
        "min_replicas": d.min_replicas, "max_replicas": d.max_replicas,
        "target_qps_per_replica": _target(d), "cold_start_seconds": cold_start_s,
        "replica_hours": round(replica_minutes / 60, 2),
        "cost": round(replica_minutes * price / 60, 2), "fixed_fleet_cost": round(fixed, 2),
        "saving_percent": round(100 * (1 - replica_minutes * price / 60 / fixed), 1),
        "minutes_over_capacity": sum(1 for row in series if row["over_capacity"]),
        "peak_replicas": max(row["replicas"] for row in series),
        "first_scale_out_minute": launches[0] if launches else None,
        "series": series,
    }


# --- the deployments -------------------------------------------------------------------------

def deployments(catalog_dir: str | None = None) -> dict[str, Deployment]:
    """Per cloud: the best candidate of the Mixtral spec with the replica_policy, built."""
    text = resources.files("servestack.examples").joinpath("mixtral.yaml").read_text()
    text = text.replace("  replica_policy:\n    min_replicas: 2\n", POLICY)
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "mixtral-autoscaled.yaml"
        spec.write_text(text)
        inputs = load_inputs(str(spec), catalog_dir=catalog_dir)
    candidates = plan(inputs.spec, inputs.catalog, inputs.facts, model=inputs.model).candidates
    found: dict[str, Deployment] = {}
    for c in candidates:
        if c.cloud not in found and not c.use_spot:
            found[c.cloud] = build_deployment(inputs.spec, c, candidates, model=inputs.model)
    return found


def run(trace: list[float], cold_start_s: int, catalog_dir: str | None = None) -> list[dict]:
    return [replay(d, trace, cold_start_s) for d in deployments(catalog_dir).values()]


def write_series(path: str, results: list[dict]) -> None:
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["cloud", "minute", "qps", "replicas", "serving", "over_capacity"])
        for result in results:
            for row in result["series"]:
                writer.writerow([result["cloud"], row["minute"], row["qps"], row["replicas"],
                                 row["serving"], int(row["over_capacity"])])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=int, default=DAY_MINUTES)
    parser.add_argument("--peak", type=float, default=12.0, help="peak requests per second")
    parser.add_argument("--trough", type=float, default=2.0, help="trough requests per second")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cold-start", type=int, default=600, help="seconds before serving")
    parser.add_argument("--catalog-dir", default=None)
    parser.add_argument("--series", help="write the per-minute series here (CSV)")
    args = parser.parse_args(argv)
    trace = diurnal_trace(args.minutes, peak=args.peak, trough=args.trough, seed=args.seed)
    results = run(trace, args.cold_start, args.catalog_dir)
    if args.series:
        write_series(args.series, results)
    summary = {"trace": {"minutes": args.minutes, "peak_qps": args.peak,
                         "trough_qps": args.trough, "seed": args.seed},
               "clouds": [{k: v for k, v in r.items() if k != "series"} for r in results]}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
