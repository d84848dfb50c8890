"""`servestack reconcile SERVICE`: keep a service over several pools at its replicas.

One pass (servestack.deploy.reconcile): each kept pool is observed (its group's VMs against
its replicas, else the replicas answering through its endpoint); replicas a short pool lacks
(spot interruptions, VMs that never came) are placed in the next pool, brought up as the deploy
does, and the front re-applied; they move back when the short pool is full again, and a
cheaper pool that had no capacity is tried again in place of the dearest. It plans again from
what the deploy recorded (the spec's path and flags; envs and secrets by name, their values
read from the environment as for `deploy`). `--watch` runs a pass every --interval until
interrupted: Ctrl-C (or SIGTERM) ends it with the step journaled, exit 130, and the next
`reconcile` finishes what the pass began.

Exit codes: 0 the pass ended with the service deployed; 2 bad input (an unknown service, one
deployed in one pool, one whose deploy did not finish, flags); 4 stopped (the front failed);
5 a pool's cleanup failed; 6 locked; 130 interrupted.
"""

from __future__ import annotations

import argparse

from servestack.cli import options
from servestack.cli.options import ReconcileRequest
from servestack.errors import UserError


def register(sub) -> None:
    parser = sub.add_parser("reconcile", help="keep a service over several pools at its size",
                            description=__doc__.split("\n\n")[1],
                            epilog=__doc__.split("\n\n")[2],
                            formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("service", nargs="?", type=options.safe_name,
                        help="service name (default: the only one)")
    options.add_reconcile_options(parser)
    options.add_state_options(parser)
    parser.set_defaults(handler=lambda args: run_reconcile(options.reconcile_request(args)))


def run_reconcile(request: ReconcileRequest) -> int:
    from servestack.cli import deploy as deploy_cli

    state_dir = request.state.state_dir
    service = _known_service(request.service, state_dir)
    clock = deploy_cli.make_clock()
    passes = 0
    while True:
        code = _one_pass(request, service, clock)
        passes += 1
        if not request.watch or code != 0 or passes == request.passes:
            return code
        clock.sleep(request.interval_s)


def _known_service(service: str | None, state_dir: str) -> str:
    """The service named (or the only one), deployed over several pools."""
    from servestack.cli import deploy as deploy_cli
    from servestack.deploy.journal import known_services

    known = known_services(state_dir)
    if service is not None and service not in known:
        listed = ", ".join(known) or "none"
        raise UserError(f"no deploy of {service!r} recorded in {state_dir}/ (services known: "
                        f"{listed})")
    service = deploy_cli._service(service, state_dir)
    if not deploy_cli.service_journal_path(state_dir, service).exists():
        raise UserError(f"{service} is deployed in one pool: reconcile keeps services over "
                        "several pools (deploy --max-pools N)")
    return service


def _one_pass(request: ReconcileRequest, service: str, clock) -> int:
    from servestack.cli import deploy as deploy_cli
    from servestack.cli.plan import make_plan, require_values
    from servestack.deploy.pools import HedgeSettings
    from servestack.deploy.reconcile import Reconcile
    from servestack.report import service_deploy_table

    state_dir = request.state.state_dir
    with deploy_cli._stop_on_sigterm(), deploy_cli.service_lock(request.state, service):
        journal, _ = deploy_cli.open_service(state_dir, service)
        plan_request, choices = deploy_cli.request_from_journal(journal.request, state_dir)
        inputs, plan = make_plan(plan_request)
        require_values(inputs)
        setup = deploy_cli.service_setup(inputs, plan, choices)
        engine = deploy_cli.make_engine(request.state, service, choices.gcp_project,
                                        deploy_cli._secrets_file(inputs))
        settings = HedgeSettings(lane=_lane_settings(journal.request))
        outcome = Reconcile(engine, journal, setup.options, setup.parts, clock=clock,
                            settings=settings, probe_factory=deploy_cli.make_probe_factory(),
                            progress=deploy_cli._progress_printer(clock),
                            runner=deploy_cli.make_runner()).run(plan)
    return deploy_cli._reported(outcome, request.report, request.json, service_deploy_table)


def _lane_settings(recorded: dict):
    """The deploy's per-pool settings (attempts, timeouts), as it recorded them."""
    from servestack.deploy.loop import Settings

    known = Settings().to_json()
    return Settings(**{k: v for k, v in (recorded.get("settings") or {}).items() if k in known})
