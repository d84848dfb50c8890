"""Command line: `servestack <command>` and `plan-mixtral`.

Each command parses its flags, calls one step of the pipeline, and prints. Bad input ends in one
line on stderr and exit code 2, never a traceback. Heavy modules (Pulumi) are imported only by
the commands that need them, so `plan` starts fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from servestack import clouds
from servestack.errors import UserError

EXIT_OK, EXIT_USAGE = 0, 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="servestack", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in COMMANDS:
        register(sub)
    return _run(parser, argv)


def plan_mixtral(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="plan-mixtral",
        description="Rank every way to serve Mixtral 8x7B on AWS, GCP and Azure "
                    "(the embedded example spec, or --spec FILE).")
    parser.add_argument("--candidates", action="store_true",
                        help="print the ranked candidates (the default action)")
    parser.add_argument("--spec", help="a SkyPilot-style service YAML (default: embedded)")
    parser.add_argument("--generate", action="store_true",
                        help="also write the chosen candidate's Pulumi stack file")
    add_plan_options(parser)
    add_generate_options(parser)
    parser.set_defaults(handler=run_plan_mixtral)
    return _run(parser, argv)


def _run(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except UserError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK


# --- plan ---------------------------------------------------------------------------------------

def add_plan_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--all", action="store_true", help="every candidate, not one per group")
    parser.add_argument("--explain", action="store_true", help="what was dropped and why")
    parser.add_argument("--json", action="store_true", help="the plan as JSON (documented)")
    parser.add_argument("-o", "--output", help="also write the JSON plan to this file")
    add_filter_options(parser)


def add_filter_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cloud", choices=clouds.NAMES, help="only this cloud")
    parser.add_argument("--region", help="only this region")
    spot = parser.add_mutually_exclusive_group()
    spot.add_argument("--spot", dest="spot", action="store_const", const=True,
                      help="plan spot VMs whatever the spec says")
    spot.add_argument("--on-demand", dest="spot", action="store_const", const=False,
                      help="plan on-demand VMs whatever the spec says")
    parser.add_argument("--model", help="the model served (default: from the spec's run)")
    parser.add_argument("--model-config", metavar="CONFIG_JSON",
                        help="a Hugging Face config.json for a model servestack does not know")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="set or override one of the spec's envs")
    parser.add_argument("--catalog-dir", help="read the catalog from this folder")


def register_plan(sub) -> None:
    parser = sub.add_parser("plan", help="rank the candidates for a spec")
    parser.add_argument("spec", nargs="?", help="service YAML (default: embedded Mixtral)")
    add_plan_options(parser)
    parser.set_defaults(handler=run_plan)


def make_plan(args: argparse.Namespace):
    """Spec -> catalog -> planner, from the common flags; returns (inputs, plan)."""
    from servestack.inputs import load_inputs
    from servestack.planner import Options, plan

    env = dict(_parse_env(item) for item in args.env)
    if args.region:
        _check_region_flag(args.region, args.cloud)
    inputs = load_inputs(args.spec, catalog_dir=args.catalog_dir, model=args.model,
                         model_config=args.model_config, env=env)
    options = Options(cloud=args.cloud, region=args.region, spot=args.spot)
    result = plan(inputs.spec, inputs.catalog, inputs.facts, options, model=inputs.model)
    return inputs, result


def run_plan(args: argparse.Namespace) -> int:
    from servestack import report
    from servestack.fsutil import write_atomic
    from servestack.planner import NothingFits

    try:
        inputs, result = make_plan(args)
    except NothingFits as exc:
        if args.json:
            print(report.dump_json({"candidates": [], "dropped":
                                    [d.to_json() for d in exc.plan.dropped]}), end="")
        raise
    data = report.plan_json(result, inputs.spec, inputs.catalog.dates)
    if args.output:
        write_atomic(args.output, report.dump_json(data))
    if args.json:
        sys.stdout.write(report.dump_json(data))
    else:
        sys.stdout.write(report.plan_table(result, inputs.spec, inputs.catalog.dates,
                                           show_all=args.all, explain=args.explain))
    return EXIT_OK


def _check_region_flag(region: str, cloud: str | None) -> None:
    import difflib

    from servestack.catalog import known_regions

    regions = known_regions()
    pool = sorted(regions.get(cloud, set()) if cloud else set().union(*regions.values()))
    if region not in pool:
        close = difflib.get_close_matches(region, pool, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        scope = f" of {cloud}" if cloud else ""
        raise UserError(f"--region: unknown region {region!r}{scope}{hint}")


def _parse_env(item: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep or not name:
        raise UserError(f"--env {item!r}: expected NAME=VALUE")
    return name, value


def run_plan_mixtral(args: argparse.Namespace) -> int:
    if args.generate:
        return run_generate(args)
    return run_plan(args)


# --- generate and preview -------------------------------------------------------------------------

def add_generate_options(parser: argparse.ArgumentParser) -> None:
    pick = parser.add_mutually_exclusive_group()
    pick.add_argument("--candidate", type=int, metavar="N", help="use the N-th ranked candidate")
    pick.add_argument("--pick", metavar="ID", help="use the candidate with this id")
    parser.add_argument("--stack", help="stack name (default: the spec's name)")
    parser.add_argument("--stacks-dir", default="stacks", help="where stack files go (stacks/)")
    parser.add_argument("--allow-cidr", action="append", default=[], metavar="CIDR",
                        help="who may reach the load balancer (default 0.0.0.0/0); repeatable")
    parser.add_argument("--ssh-cidr", action="append", default=[], metavar="CIDR",
                        help="open SSH to the VMs from this range (default: no SSH)")
    parser.add_argument("--gcp-project", help="GCP project id (writes gcp:project)")
    parser.add_argument("--format", choices=("pulumi", "terraform"), default="pulumi",
                        help="pulumi: stacks/Pulumi.<stack>.yaml (default); terraform: "
                             "stacks/<stack>/main.tf.json + terraform.tfvars.json")


def register_generate(sub) -> None:
    parser = sub.add_parser("generate", help="write the Pulumi stack file for a candidate")
    parser.add_argument("spec", nargs="?", help="service YAML (default: embedded Mixtral)")
    parser.add_argument("--all", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--explain", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("-o", "--output", help=argparse.SUPPRESS)
    add_filter_options(parser)
    add_generate_options(parser)
    parser.set_defaults(handler=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    import ipaddress

    if args.format == "terraform":
        from servestack.terraform.generate import generate_terraform as generate
        from servestack.terraform.generate import summary
    else:
        from servestack.pulumi.generate import generate, summary

    for cidr in [*args.allow_cidr, *args.ssh_cidr]:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise UserError(f"{cidr!r} is not a CIDR range such as 203.0.113.0/24") from None
    inputs, result = make_plan(args)
    if getattr(args, "candidates", False) or args.explain or args.all:
        from servestack import report

        sys.stdout.write(report.plan_table(result, inputs.spec, inputs.catalog.dates,
                                           show_all=args.all, explain=args.explain))
    generated = generate(inputs, result, rank=args.candidate, pick=args.pick, stack=args.stack,
                         stacks_dir=args.stacks_dir, allow_cidrs=args.allow_cidr,
                         ssh_cidrs=args.ssh_cidr, gcp_project=args.gcp_project)
    sys.stdout.write(summary(generated))
    return EXIT_OK


def register_preview(sub) -> None:
    parser = sub.add_parser("preview", help="what a stack would create (offline, no CLI)")
    parser.add_argument("stack", help="stack name (stacks/Pulumi.<stack>.yaml)")
    parser.add_argument("--offline", action="store_true", required=True,
                        help="run the program under the Pulumi mock runtime (required: "
                             "a live preview is `pulumi preview`)")
    parser.add_argument("--stacks-dir", default="stacks")
    parser.add_argument("--json", action="store_true", help="the resources as JSON")
    parser.set_defaults(handler=run_preview)


def run_preview(args: argparse.Namespace) -> int:
    try:
        from servestack.pulumi import preview
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise UserError(f"preview needs the Pulumi SDKs: pip install 'servestack[pulumi]' "
                        f"({exc})") from None
    recording = preview.preview_stack(args.stack, args.stacks_dir)
    if args.json:
        sys.stdout.write(preview.dump(preview.preview_json(recording)))
    else:
        sys.stdout.write(preview.preview_table(recording))
    return EXIT_OK


# --- gpus ---------------------------------------------------------------------------------------

def register_gpus(sub) -> None:
    parser = sub.add_parser("gpus", help="which GPUs exist, where, at which prices")
    parser.add_argument("name", nargs="?", help="one GPU, e.g. A100-80GB (case-insensitive)")
    parser.add_argument("--cloud", choices=clouds.NAMES)
    parser.add_argument("--region")
    parser.add_argument("--catalog-dir")
    parser.set_defaults(handler=run_gpus)


def run_gpus(args: argparse.Namespace) -> int:
    from servestack.gpus import gpus_table

    sys.stdout.write(gpus_table(args.name, cloud=args.cloud, region=args.region,
                                catalog_dir=args.catalog_dir))
    return EXIT_OK


def register_catalog(sub) -> None:
    from servestack.cli.catalog import register

    register(sub)


def register_deploy_commands(sub) -> None:
    from servestack.cli.deploy import register_deploy, register_destroy, register_status

    register_deploy(sub)
    register_status(sub)
    register_destroy(sub)


COMMANDS: list[Callable] = [register_plan, register_gpus, register_generate, register_preview,
                            register_catalog, register_deploy_commands]

if __name__ == "__main__":
    sys.exit(main())
