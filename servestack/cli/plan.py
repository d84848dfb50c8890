"""`servestack plan`: rank the candidates for a spec (and the plan step of generate and deploy)."""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import TYPE_CHECKING

from servestack.cli import options
from servestack.cli.options import EXIT_OK, PlanRequest, PlanView, TableView

if TYPE_CHECKING:
    from servestack.inputs import Inputs
    from servestack.planner import Plan


def register(sub) -> None:
    parser = sub.add_parser("plan", help="rank the candidates for a spec")
    parser.add_argument("spec", nargs="?", help="service YAML (default: embedded Mixtral)")
    options.add_view_options(parser)
    options.add_filter_options(parser)
    parser.set_defaults(handler=lambda args: run_plan(options.plan_request(args, args.spec),
                                                      options.plan_view(args)))


def make_plan(request: PlanRequest) -> tuple[Inputs, Plan]:
    """Spec -> catalog -> planner."""
    from servestack.inputs import load_inputs
    from servestack.models import model_variable
    from servestack.planner import Options, plan

    inputs = load_inputs(request.spec, catalog_dir=request.catalog_dir, model=request.model,
                         model_config=request.model_config, env=request.env)
    variable = model_variable(inputs.spec.run, request.model) if request.model else None
    if variable is not None and request.env.get(variable) != request.model:
        # --model sets the env through which run names its model: run, the readiness probe's
        # body and everything else that reads it then serve the new model alike
        return make_plan(replace(request, env={**request.env, variable: request.model}))
    filters = Options(cloud=request.cloud, region=request.region, spot=request.spot)
    return inputs, plan(inputs.spec, inputs.catalog, inputs.facts, filters, model=inputs.model)


def run_plan(request: PlanRequest, view: PlanView) -> int:
    from servestack import report
    from servestack.fsutil import write_atomic
    from servestack.planner import NothingFits

    try:
        inputs, result = make_plan(request)
    except NothingFits as exc:
        if view.json:
            print(report.dump_json({"candidates": [], "dropped":
                                    [d.to_json() for d in exc.plan.dropped]}), end="")
        raise
    data = report.plan_json(result, inputs.spec, inputs.catalog.dates)
    if view.output:
        write_atomic(view.output, report.dump_json(data))
    if view.json:
        sys.stdout.write(report.dump_json(data))
    else:
        print_table(inputs, result, view.table)
    return EXIT_OK


def print_table(inputs: Inputs, result: Plan, view: TableView) -> None:
    from servestack import report

    sys.stdout.write(report.plan_table(result, inputs.spec, inputs.catalog.dates,
                                       show_all=view.show_all, explain=view.explain))
