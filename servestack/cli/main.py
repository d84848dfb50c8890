"""Command line: `servestack <command>` and `plan-mixtral`.

Each command parses its flags into a typed request (servestack.cli.options), calls one step of
the pipeline, and prints. Bad input ends in one line on stderr and exit code 2, never a
traceback. Heavy modules (Pulumi) are imported only by the commands that need them, so `plan`
starts fast.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from servestack.cli import generate, options, plan


def main(argv: Sequence[str] | None = None) -> int:
    # Imported here, not above: plan-mixtral needs none of them and starts faster without.
    from servestack.cli import catalog, check, deploy, endpoint, gpus, init, reconcile

    parser = options.Parser(prog="servestack", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in (plan.register, gpus.register, init.register, generate.register,
                     catalog.register, deploy.register, reconcile.register, endpoint.register,
                     check.register):
        register(sub)
    return options.run(parser, argv)


def plan_mixtral(argv: Sequence[str] | None = None) -> int:
    parser = options.Parser(
        prog="plan-mixtral",
        description="Rank every way to serve Mixtral 8x7B on AWS, GCP and Azure "
                    "(the embedded example spec, or --spec FILE).")
    parser.add_argument("--candidates", action="store_true",
                        help="print the ranked candidates (the default action)")
    parser.add_argument("--spec", help="a SkyPilot-style service YAML (default: embedded)")
    parser.add_argument("--generate", action="store_true",
                        help="also write the chosen candidate's Pulumi stack file")
    options.add_view_options(parser)
    options.add_filter_options(parser)
    options.add_generate_options(parser)
    parser.set_defaults(handler=run_plan_mixtral)
    return options.run(parser, argv)


def run_plan_mixtral(args) -> int:
    if args.generate:
        return generate.run_generate(
            options.generate_request(args, args.spec, list_candidates=args.candidates))
    return plan.run_plan(options.plan_request(args, args.spec), options.plan_view(args))


if __name__ == "__main__":
    sys.exit(main())
