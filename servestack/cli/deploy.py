"""`servestack deploy`, `servestack status` and `servestack destroy`.

`servestack deploy SPEC|STACK` plans (or reads a generated stack file and starts with its
chosen candidate), then walks the ranked candidates with servestack.deploy.loop until one is up
and ready. Progress goes to stderr, one line per step of each attempt; the final table goes
to stdout (or the JSON report with --json), and --report FILE writes the JSON report too. State
lives in --state-dir (default .servestack/<service>/): the journal, and the local Pulumi backend
unless PULUMI_BACKEND_URL or --backend says otherwise. The lock is per user, not per folder
(servestack.deploy.lock). Each cloud's credentials are checked first (`servestack check`).
Secrets (the spec's `secrets:`, credential-named envs such as HF_TOKEN, --secret; a name
without a value is read from your environment) go to the cloud's secret store
(servestack.secrets), never to a file, a log or a command line.

Exit codes:
  0    deployed: a candidate is up and min_replicas replicas answer the readiness probe
       through its endpoint (also when the service was already deployed); for
       `destroy`: everything of the service is gone and verified
  2    bad input or setup: spec, stack file or flags; no Pulumi CLI (with how to install it);
       no passphrase for the local Pulumi backend; no deploy recorded (`status`)
  3    exhausted: every candidate was tried or ruled out (no cloud has credentials, too),
       or --max-attempts was reached; nothing is left behind
  4    stopped: an error that trying elsewhere would not fix (invalid configuration, or the
       model came up on two candidates without ever answering); nothing is left behind
  5    cleanup failed: something of a failed candidate (or, for `destroy`, of the service)
       could not be removed; the report lists it and nothing else was started
  6    locked: another deploy or destroy of the same service is running on this machine
       (from any folder; see servestack.deploy.lock for what "the same service" is)
  130  interrupted: run `servestack deploy` again to resume where it stopped
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from servestack.cli import options
from servestack.cli.options import (
    DeploymentOptions,
    DeployRequest,
    DestroyRequest,
    PlanRequest,
    StateRequest,
    StatusRequest,
)
from servestack.errors import UserError

# --- argument parsing -----------------------------------------------------------------------------

def register(sub) -> None:
    register_deploy(sub)
    register_status(sub)
    register_destroy(sub)


def register_deploy(sub) -> None:
    parser = sub.add_parser("deploy", help="deploy with fallback over the ranked candidates",
                            description=__doc__.split("\n\n")[1],
                            epilog=_exit_codes(), formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("target", nargs="?", metavar="SPEC|STACK",
                        help="service YAML, or a stack written by `servestack generate` "
                             "(default: the embedded Mixtral spec)")
    parser.add_argument("--max-attempts", type=options.positive_int, metavar="N",
                        help="stop after N attempts (default: walk every candidate)")
    parser.add_argument("--attempt-timeout", type=options.duration,
                        default=options.DEFAULT_ATTEMPT_TIMEOUT_S, metavar="DURATION",
                        help="per-attempt limit for `up`, e.g. 20m, 90s, 1h (default 20m)")
    parser.add_argument("--report", metavar="FILE", type=options.file_to_write,
                        help="also write the JSON report here")
    parser.add_argument("--json", action="store_true", help="print the JSON report, no table")
    parser.add_argument("--ready-replicas", type=options.positive_int, metavar="N",
                        help="replicas that must answer (default: the spec's min_replicas)")
    parser.add_argument("--no-quota-check", dest="quota_check", action="store_false",
                        help="skip the AWS Service Quotas pre-check")
    options.add_deployment_options(parser)
    options.add_stacks_dir(parser, "where STACK files are (stacks/)")
    options.add_state_options(parser)
    options.add_filter_options(parser)
    parser.set_defaults(handler=lambda args: run_deploy(options.deploy_request(args)))


def register_status(sub) -> None:
    parser = sub.add_parser("status", help="what the last deploy of a service did; what is live")
    parser.add_argument("service", nargs="?", type=options.safe_name,
                        help="service name (default: the only one)")
    options.add_state_dir(parser)
    parser.add_argument("--json", action="store_true", help="the journal's report as JSON")
    parser.set_defaults(handler=lambda args: run_status(options.status_request(args)))


def register_destroy(sub) -> None:
    parser = sub.add_parser("destroy", help="destroy every stack of a service and verify it",
                            epilog=_exit_codes(), formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("service", nargs="?", type=options.safe_name,
                        help="service name (default: the only one)")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    options.add_state_options(parser)
    parser.set_defaults(handler=lambda args: run_destroy(options.destroy_request(args)))


def _exit_codes() -> str:
    return "Exit codes:\n" + __doc__.split("Exit codes:\n", 1)[1]


# --- seams (tests replace these) ------------------------------------------------------------------

def make_engine(state: StateRequest, service: str, project: str | None = None,
                secrets: str | None = None):
    """`secrets`: the env file of the deployment's secrets (servestack.secrets), in memory."""
    from servestack.deploy.journal import service_dir

    work_dir = service_dir(state.state_dir, service) / state.engine
    if state.engine == "terraform":
        from servestack.terraform.engine import TerraformEngine

        return TerraformEngine(work_dir, secrets=secrets, gcp_project=project)
    from servestack.pulumi.engine import PulumiEngine

    return PulumiEngine(work_dir, state.backend, secrets=secrets, gcp_project=project)


def make_clock():
    from servestack.deploy.clock import SystemClock

    return SystemClock()


def make_probe_factory():
    from servestack.deploy.loop import default_probe_factory

    return default_probe_factory()


# --- deploy ---------------------------------------------------------------------------------------

def run_deploy(request: DeployRequest) -> int:
    from servestack.deploy.journal import Journal
    from servestack.deploy.loop import Fallback, Settings, already_deployed

    target = _resolve_target(request.target, request.stacks_dir)
    choices = _deployment_options(request.deployment, target)
    inputs, candidates, builder, service = _prepare(request.plan, target, choices)
    settings = Settings(max_attempts=request.max_attempts,
                        attempt_timeout_s=request.attempt_timeout_s,
                        ready_replicas=request.ready_replicas, quota_precheck=request.quota_check)
    clock = make_clock()
    progress = _progress_printer(clock)
    state_dir = request.state.state_dir
    with _stop_on_sigterm(), service_lock(request.state, service):
        journal = Journal.open(state_dir, service)
        outcome = already_deployed(journal)
        if outcome is None:  # only now: the engine checks for the Pulumi CLI and passphrase
            engine = make_engine(request.state, service, choices.gcp_project,
                                 _secrets_file(inputs))
            _warn_about_secrets(inputs)
            _say_what_stays_open(candidates, builder)
            loop = Fallback(engine, journal, candidates, builder, clock=clock,
                            settings=settings, probe_factory=make_probe_factory(),
                            progress=progress)
            outcome = loop.run()
    report = outcome.to_json()
    if request.report:
        from servestack.fsutil import write_atomic

        write_atomic(request.report, json.dumps(report, indent=2) + "\n")
    sys.stdout.write(json.dumps(report, indent=2) + "\n" if request.json
                     else report_table(report))
    return outcome.final_exit_code


def service_lock(state: StateRequest, service: str):
    from servestack.deploy.lock import ServiceLock, backend_key

    backend = state.backend or os.environ.get("PULUMI_BACKEND_URL")
    return ServiceLock(service, backend_key(state.engine, backend))


@contextmanager
def _stop_on_sigterm():
    """A CI job being cancelled sends SIGTERM: stop like Ctrl-C (exit 130, the running Pulumi
    command is interrupted, the journal lets the next deploy resume)."""
    import signal
    import threading

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass(frozen=True)
class _Target:
    spec: str | None  # None: the embedded example
    stack: dict | None = None  # a generated stack file's config


def _resolve_target(target: str | None, stacks_dir: str) -> _Target:
    from servestack.pulumi.stackfile import read_stack_file, stack_path

    if target is None:
        return _Target(None)
    path = Path(target)
    if path.is_file():
        data = _yaml_mapping(path)
        if isinstance(data.get("config"), dict) and "servestack:deployment" in data["config"]:
            return _stack_target(data)
        return _Target(target)
    stack_file = stack_path(stacks_dir, target)
    if options.NAME.fullmatch(target) and stack_file.exists():
        return _stack_target(read_stack_file(stack_file))
    raise UserError(f"{target!r} is neither a spec file nor a stack in {stacks_dir}/ "
                    f"(looked for {stack_file})")


def _yaml_mapping(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _stack_target(data: dict) -> _Target:
    config = data.get("config") or {}
    spec = config.get("servestack:spec")
    if not isinstance(spec, str) or spec.startswith("<embedded"):
        spec = None
    return _Target(spec, config)


def _deployment_options(given: DeploymentOptions, target: _Target) -> DeploymentOptions:
    """The flags, else a generated stack file's choices, else the defaults."""
    from servestack.deployment.model import WORLD

    stack = target.stack or {}
    defaults = stack.get("servestack:deployment") or {}
    return DeploymentOptions(
        allow_cidrs=tuple(given.allow_cidrs or defaults.get("allow_cidrs") or (WORLD,)),
        ssh_cidrs=tuple(given.ssh_cidrs or defaults.get("ssh_cidrs") or ()),
        gcp_project=given.gcp_project or defaults.get("gcp_project") or stack.get("gcp:project"),
        **_security_choices(given, defaults))


def _security_choices(given: DeploymentOptions, defaults: dict) -> dict:
    """API key, TLS and scaling signal: the flags, else what the generated stack file chose."""
    auth = bool(defaults.get("api_key", True)) if given.api_key else False
    tls = defaults.get("tls") or {}
    scaling = defaults.get("autoscaling") or {}
    return {"api_key": auth,
            "domain": given.domain or tls.get("domain"),
            "dns_zone": given.dns_zone or tls.get("dns_zone"),
            "scale_metric": given.scale_metric or scaling.get("metric"),
            "scale_target": given.scale_target or (scaling.get("target")
                                                   if given.scale_metric is None else None)}


def _prepare(request: PlanRequest, target: _Target, choices: DeploymentOptions):
    """Plan, order the candidates, and make the per-candidate Deployment builder."""
    from servestack.cli.plan import make_plan, require_values
    from servestack.deployment.build import build_deployment, service_slug

    defaults = (target.stack or {}).get("servestack:deployment") or {}
    inputs, plan = make_plan(replace(request, spec=target.spec))
    require_values(inputs)
    service = defaults.get("service") or service_slug(inputs.spec.name or "servestack")
    candidates = list(plan.candidates)
    chosen = ((target.stack or {}).get("servestack:candidate") or {}).get("id")
    if chosen:
        first = [c for c in candidates if c.id == chosen]
        candidates = first + [c for c in candidates if c.id != chosen]

    def builder(candidate, pool):
        return build_deployment(inputs.spec, candidate, pool, model=inputs.model,
                                choices=choices, service_name=service)

    return inputs, candidates, builder, service


def _secrets_file(inputs) -> str | None:
    from servestack.secrets import env_file

    return env_file(inputs.spec.secret_values) if inputs.spec.secret_values else None


def _say_what_stays_open(candidates, builder) -> None:
    """The user's choices that leave the service open (no key, no TLS, SSH, the whole
    internet allowed in), said once before anything is deployed. They are the same for every
    candidate: the first one's deployment tells."""
    from servestack.report import security_notes

    if candidates:
        for note in security_notes(builder(candidates[0], candidates[:1])):
            print(f"servestack: open by your choice: {note}", file=sys.stderr)


def _warn_about_secrets(inputs) -> None:
    from servestack.cli.plan import secret_warnings

    for warning in secret_warnings(inputs):
        print(f"servestack: warning: {warning}", file=sys.stderr)


def _progress_printer(clock):
    start = clock.now()

    def progress(line: str) -> None:
        elapsed = int(clock.now() - start)
        print(f"[{elapsed // 60:02d}:{elapsed % 60:02d}] {line}", file=sys.stderr, flush=True)

    return progress


# --- output ---------------------------------------------------------------------------------------

TABLE = ("#", "CANDIDATE", "WHERE", "DURATION", "OUTCOME", "ERROR", "SCOPE BLOCKED", "CLEANUP",
         "ENDPOINT")
WIDTHS = (3, 44, 22, 8, 12, 30, 36, 22, 40)


def report_table(report: dict) -> str:
    rows = [TABLE]
    for a in report["attempts"]:
        where = "/".join(p for p in (a["cloud"], a.get("zone") or a["region"]) if p)
        rows.append((str(a["n"]), a["candidate"], where, _duration(a.get("duration_s")),
                     a.get("outcome") or "?", a.get("code") or "", a.get("scope") or "",
                     a.get("cleanup") or "", a.get("endpoint") or ""))
    lines = ["  ".join(_cell(v, w) for v, w in zip(row, WIDTHS, strict=True)).rstrip()
             for row in rows]
    lines.append("")
    code = "" if report["exit_code"] is None else f" (exit {report['exit_code']})"
    lines.append(f"{report['outcome'].upper()}{code}: {report['message']}")
    if report.get("endpoint"):
        lines.append(f"Endpoint: {report['endpoint']} ({report['candidate']})")
    for item in report.get("leftovers") or []:
        lines.append(f"Left behind: {item['type']} {item['name']} {item.get('id') or ''} "
                     f"[{item['where']}]")
    return "\n".join(lines) + "\n"


def _cell(value: str, width: int) -> str:
    value = str(value)
    return (value if len(value) <= width else value[:width - 1] + "~").ljust(width)


def _duration(seconds) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


# --- status and destroy ---------------------------------------------------------------------------

def _service(service: str | None, state_dir: str) -> str:
    from servestack.deploy.journal import known_services

    if service:
        return service
    services = known_services(state_dir)
    if len(services) == 1:
        return services[0]
    if not services:
        raise UserError(f"no deploy recorded in {state_dir}/ (run `servestack deploy`)")
    raise UserError(f"several services in {state_dir}/: {', '.join(services)}; name one")


def status_report(journal, running: bool) -> dict:
    """The journal's report, plus what each stack really is: live (up and answering), dirty
    (may hold resources: being created or cleaned, or left), gone (verified empty). A run or
    destroy that says it is in progress while no command holds the service's lock was
    interrupted, and says so."""
    from servestack.deploy.journal import RunStatus, StackState
    from servestack.deploy.outcome import Outcome

    report = Outcome(journal.status, journal.message, journal).to_json()
    in_progress = journal.status in (RunStatus.RUNNING, RunStatus.DESTROYING)
    report["interrupted"] = in_progress and not running
    report["stacks"] = [{"name": s.name, "candidate": s.candidate, "state": s.state.value,
                         "is": "live" if s.state is StackState.LIVE else
                         "dirty" if s.state.dirty else "gone"} for s in journal.stacks.values()]
    report["dirty_stacks"] = [{"name": s["name"], "state": s["state"]}
                              for s in report["stacks"] if s["is"] != "gone"]
    return report


def run_status(request: StatusRequest) -> int:
    from servestack.deploy.journal import Journal
    from servestack.deploy.lock import running

    service = _service(request.service, request.state_dir)
    journal = Journal.open(request.state_dir, service)
    if not journal.exists:
        raise UserError(f"no deploy of {service!r} recorded in {request.state_dir}/")
    report = status_report(journal, running(service))
    if request.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return 0
    state = journal.status.value + (", interrupted (no servestack command is running it)"
                                    if report["interrupted"] else "")
    lines = [f"Service {service}: {state} (run {journal.run}, "
             f"{len(journal.attempts)} attempt(s)). {journal.message}".rstrip()]
    for stack in report["stacks"]:
        if stack["is"] == "live" and journal.live:
            lines.append(f"Live: {stack['candidate']} at {journal.live.endpoint} "
                         f"(stack {stack['name']})")
        elif stack["is"] == "dirty":
            lines.append(f"Needs cleanup: {stack['name']} ({stack['state']})")
    sys.stdout.write("\n".join(lines) + "\n\n" + report_table(report).split("\n\n")[0] + "\n")
    return 0


def run_destroy(request: DestroyRequest) -> int:
    from servestack.deploy.destroy import destroy
    from servestack.deploy.journal import Journal

    state_dir = request.state.state_dir
    service = _service(request.service, state_dir)
    if not Journal.open(state_dir, service).exists:
        raise UserError(f"no deploy of {service!r} recorded in {state_dir}/")
    with _stop_on_sigterm(), service_lock(request.state, service):
        journal = Journal.open(state_dir, service)
        names = [s.name for s in journal.dirty_stacks()]
        if names and not request.yes:
            _confirm(f"Destroy {len(names)} stack(s) of {service}: {', '.join(names)}?")
        clock = make_clock()
        engine = make_engine(request.state, service) if names else None
        outcome = destroy(journal, engine, clock=clock, progress=_progress_printer(clock))
    sys.stdout.write(f"{outcome.status.value}: {outcome.message}\n")
    return outcome.final_exit_code


def _confirm(question: str) -> None:
    if not sys.stdin.isatty():
        raise UserError(f"{question} Pass --yes to confirm when not at a terminal")
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise UserError("nothing destroyed")
