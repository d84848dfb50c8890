"""A small evaluator of CloudWatch metric-math alarms and EC2 Auto Scaling step policies, to
drive the generated AWS scaling resources (either engine's) through scripted metrics.

Semantics modelled (one datapoint per 60 s period):
- An alarm's datapoint is its `return_data` query's expression over the other queries' values
  (+ - * /, CEIL, FILL); a metric with no value makes the expression's datapoint missing
  unless FILL gives it one.
- ALARM when at least `datapoints_to_alarm` of the last `evaluation_periods` datapoints breach
  the threshold (missing datapoints neither breach nor count, as `treat_missing_data`
  "missing"/"notBreaching" have it); OK otherwise.
- While in ALARM the alarm invokes its Auto Scaling policy every period (CloudWatch: Auto
  Scaling actions repeat for as long as the state lasts).
- A step applies when the difference metric - threshold falls in its interval: above the
  threshold lower <= diff < upper, at or below it lower < diff <= upper (Auto Scaling API,
  StepAdjustment); a missing bound is infinite. ExactCapacity sets the capacity,
  ChangeInCapacity adds to it; the group's min and max bound the result.

Inputs are the Terraform JSON's argument names; `snake_keys` turns a recorded Pulumi input
(camelCase, plural list names) into them.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

COMPARE = {"GreaterThanOrEqualToThreshold": operator.ge, "GreaterThanThreshold": operator.gt,
           "LessThanThreshold": operator.lt, "LessThanOrEqualToThreshold": operator.le}
PLURALS = {"metric_queries": "metric_query", "step_adjustments": "step_adjustment",
           "metric_dimensions": "metric_dimension"}
# (namespace, metric name, dimensions) -> the metric's value this minute, or None
Metrics = Callable[[str, str, dict[str, str]], float | None]


def snake_keys(node: Any) -> Any:
    """A recorded Pulumi input with Terraform's argument names (dimension maps kept as is;
    an alarm's `name` is Terraform's `alarm_name`)."""
    if isinstance(node, list):
        return [snake_keys(v) for v in node]
    if not isinstance(node, dict):
        return node
    found = {}
    for key, value in node.items():
        if key[:1].isupper():  # a CloudWatch dimension name, not an argument
            found[key] = value
            continue
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()
        name = PLURALS.get(name, name)
        found[name] = snake_keys(value)
    return found


def evaluate(expression: str, values: dict[str, float | None]) -> float | None:
    """A metric-math expression over the queries' values (None: no datapoint)."""

    def visit(node: ast.AST) -> float | None:
        if isinstance(node, ast.Expression):
            return visit(node.body)
        if isinstance(node, ast.Constant):
            return float(node.value)
        if isinstance(node, ast.Name):
            return values[node.id]
        if isinstance(node, ast.BinOp):
            left, right = visit(node.left), visit(node.right)
            if left is None or right is None:
                return None
            ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
                   ast.Div: operator.truediv}
            return ops[type(node.op)](left, right)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            args = [visit(a) for a in node.args]
            if node.func.id == "FILL":
                return args[1] if args[0] is None else args[0]
            if node.func.id == "CEIL":
                return None if args[0] is None else float(math.ceil(args[0]))
        raise ValueError(f"unsupported metric math: {ast.dump(node)}")

    return visit(ast.parse(expression, mode="eval"))


@dataclass
class Alarm:
    body: dict[str, Any]  # aws_cloudwatch_metric_alarm arguments
    history: list[float | None] = field(default_factory=list)

    def datapoint(self, metrics: Metrics) -> float | None:
        values: dict[str, float | None] = {}
        result = None
        for query in self.body["metric_query"]:
            if "metric" in query:
                m = query["metric"]
                values[query["id"]] = metrics(m["namespace"], m["metric_name"], m["dimensions"])
        for query in self.body["metric_query"]:
            if query.get("expression"):
                values[query["id"]] = evaluate(query["expression"], values)
            if query.get("return_data"):
                result = values[query["id"]]
        return result

    def observe(self, metrics: Metrics) -> float | None:
        """Add this minute's datapoint; return it when the alarm is in ALARM, else None."""
        point = self.datapoint(metrics)
        self.history.append(point)
        window = self.history[-int(self.body["evaluation_periods"]):]
        breach = COMPARE[self.body["comparison_operator"]]
        breaching = [p for p in window if p is not None and breach(p, self.body["threshold"])]
        in_alarm = len(breaching) >= int(self.body.get("datapoints_to_alarm") or
                                         self.body["evaluation_periods"])
        return point if in_alarm else None


def step_adjustment(policy: dict[str, Any], value: float, threshold: float) -> int:
    """The step of `policy` the alarm's datapoint falls in, as its scaling adjustment."""
    diff = value - threshold
    above = diff >= 0
    for step in policy["step_adjustment"]:
        low = _bound(step.get("metric_interval_lower_bound"), -math.inf)
        high = _bound(step.get("metric_interval_upper_bound"), math.inf)
        inside = (low <= diff < high) if above else (low < diff <= high)
        if inside:
            return int(step["scaling_adjustment"])
    raise AssertionError(f"no step of {policy['step_adjustment']} holds {diff}")


def _bound(text: str | None, missing: float) -> float:
    return missing if text is None else float(text)


def apply(policy: dict[str, Any], capacity: int, adjustment: int, low: int, high: int) -> int:
    """The group's new desired capacity after one policy run."""
    kind = policy["adjustment_type"]
    wanted = adjustment if kind == "ExactCapacity" else capacity + adjustment
    if kind not in ("ExactCapacity", "ChangeInCapacity"):
        raise AssertionError(f"unmodelled adjustment type {kind}")
    return max(low, min(high, wanted))


@dataclass
class Scaled:
    """One group driven by alarms: (alarm, its policy) pairs over a shared capacity."""

    rules: list[tuple[Alarm, dict[str, Any]]]
    capacity: int
    low: int
    high: int

    def minute(self, metrics: Metrics) -> int:
        for alarm, policy in self.rules:
            point = alarm.observe(metrics)
            if point is not None:
                adjustment = step_adjustment(policy, point, float(alarm.body["threshold"]))
                self.capacity = apply(policy, self.capacity, adjustment, self.low, self.high)
        return self.capacity
