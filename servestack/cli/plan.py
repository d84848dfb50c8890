"""`servestack plan`: rank the candidates for a spec (and the plan step of generate and deploy)."""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import TYPE_CHECKING

from servestack.cli import options
from servestack.cli.options import EXIT_OK, PlanRequest, PlanView, TableView
from servestack.errors import UserError

# Where vLLM (huggingface_hub) looks for a token; the second is the legacy name.
HF_TOKEN_NAMES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")

if TYPE_CHECKING:
    from servestack.inputs import Inputs
    from servestack.placement import Pool
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
                         model_config=request.model_config, env=request.env,
                         secrets=request.secrets)
    variable = model_variable(inputs.spec.run, request.model) if request.model else None
    if variable is not None and request.env.get(variable) != request.model:
        # --model sets the env through which run names its model: run, the readiness probe's
        # body and everything else that reads it then serve the new model alike
        return make_plan(replace(request, env={**request.env, variable: request.model}))
    filters = Options(cloud=request.cloud, region=request.region, spot=request.spot)
    result = plan(inputs.spec, inputs.catalog, inputs.facts, filters, model=inputs.model)
    result.warnings.extend(secret_warnings(inputs))
    result.placement = place_replicas(request, inputs, result)
    return inputs, result


def place_replicas(request: PlanRequest, inputs: Inputs, result: Plan) -> list[Pool]:
    """The plan's pools, from the flags and what the last deploy found full."""
    from servestack.deployment.choices import service_slug
    from servestack.placement import Capacity, place

    wanted = request.placement
    service = service_slug(inputs.spec.service_name)
    full = full_candidates(request.state_dir, service, result)
    capacity = Capacity(max_per_pool=wanted.max_per_pool, without=full)
    try:
        pools = place(result, result.replicas, wanted.max_pools, wanted.spread, capacity)
    except UserError:
        if not full:
            raise
        # capacity comes back: when what is left cannot hold the service, place as if the
        # last deploy had found nothing full (its blocks end with the next run anyway)
        result.warnings.append(f"the last deploy of {service} found {len(full)} candidate(s) "
                               "without capacity, and the rest cannot hold the service: "
                               "placed as if they had room")
        full = frozenset()
        pools = place(result, result.replicas, wanted.max_pools, wanted.spread,
                      replace(capacity, without=full))
    if full:
        result.warnings.append(f"placement leaves out {len(full)} candidate(s) the last deploy "
                               f"of {service} found without capacity ({request.state_dir}/)")
    if wanted.spread and len(pools) < min(wanted.max_pools, result.replicas):
        result.warnings.append(f"--spread over {wanted.max_pools} pools: the plan has "
                               f"{len(pools)} region(s) to spread over")
    return pools


def full_candidates(state_dir: str, service: str, result: Plan) -> frozenset[str]:
    """The ids of the candidates a capacity block of the service's deploy journals covers:
    the single-pool journal, or each pool's journal of a service over several pools (blocks
    are the last run's; a zone's block covers only that zone's candidate). No journal, or
    one that cannot be read: none (deploy itself reports a damaged journal). The files are
    looked for first, so a plan without a deploy loads none of the deploy machinery."""
    from servestack.deploy.layout import POOLS_DIR, journal_path, service_dir

    paths = [journal_path(state_dir, service)]
    pools = service_dir(state_dir, service) / POOLS_DIR
    if pools.is_dir():
        paths += sorted(pools.glob("*.json"))
    paths = [path for path in paths if path.is_file()]
    if not paths:
        return frozenset()
    from servestack.deploy.journal import Journal

    blocks = []
    for path in paths:
        try:
            blocks += [b for b in Journal.at(path, service).blocks
                       if b.error_class == "capacity"]
        except UserError:
            continue
    return frozenset(c.id for c in result.candidates for b in blocks
                     if b.applies(c) and b.zone in (None, c.zone))


def secret_warnings(inputs: Inputs) -> list[str]:
    """Envs and secrets without a value (generate and deploy refuse them: `require_values`),
    and a gated model without a Hugging Face token."""
    from servestack.models import is_gated

    spec = inputs.spec
    warnings = [f"{name} has no value: {_how_to_give(name)}" for name in spec.missing]
    if inputs.model and is_gated(inputs.model) and \
            not any(name in spec.secret_values for name in HF_TOKEN_NAMES):
        warnings.append(f"{inputs.model} is gated on Hugging Face: without a token the VMs "
                        f"cannot download it ({_how_to_give('HF_TOKEN')})")
    return warnings


def require_values(inputs: Inputs, *, secrets: bool = True) -> None:
    """deploy: every env and secret the spec names must have a value. generate (`secrets`
    False): only the plain envs, whose values go into the stack; a secret is never written
    there, and is read from the environment (or the secret config) when the stack runs."""
    spec = inputs.spec
    missing = [n for n in spec.missing if secrets or n not in spec.secrets]
    if missing:
        raise UserError(f"no value for {', '.join(missing)}: "
                        f"{_how_to_give(missing[0] if len(missing) == 1 else 'NAME')}")


def _how_to_give(name: str) -> str:
    return f"export {name}=... or pass --secret {name}=... (--env for a value that is not secret)"


def run_plan(request: PlanRequest, view: PlanView) -> int:
    from servestack import report
    from servestack.fsutil import write_atomic
    from servestack.planner import NothingFits

    try:
        inputs, result = make_plan(request)
    except NothingFits as exc:
        if view.json:
            print(report.dump_json({"candidates": [], "placement": [], "dropped":
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

    sys.stdout.write(report.plan_table(result, inputs.spec, _date_ranges(inputs),
                                       show_all=view.show_all, explain=view.explain))


def _date_ranges(inputs: Inputs) -> dict[str, str]:
    """Each cloud's price dates for the table's heading: the oldest to the newest row."""
    return {**inputs.catalog.dates,
            **{cloud: file.span for cloud, file in inputs.catalog.files.items() if file.newest}}
