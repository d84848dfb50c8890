"""`servestack deploy`, `servestack status` and `servestack destroy`.

`servestack deploy SPEC|STACK` plans (or reads a generated stack file and starts with its
chosen candidate), then walks the ranked candidates with servestack.deploy.loop until one is up
and ready. Progress goes to stderr, one line per step of each attempt; the final table goes
to stdout (or the JSON report with --json), and --report FILE writes the JSON report too. State
lives in --state-dir (default .servestack/<service>/): the journal, the lock, and the local
Pulumi backend unless PULUMI_BACKEND_URL or --backend says otherwise. The Hugging Face token is
read from the HF_TOKEN environment variable and stored as a Pulumi secret, never in a file.

Exit codes:
  0    deployed: a candidate is up and min_replicas replicas answer the readiness probe
       through its endpoint (also when the service was already deployed); for
       `destroy`: everything of the service is gone and verified
  2    bad input or setup: spec, stack file or flags; no Pulumi CLI (with how to install it);
       no passphrase for the local Pulumi backend; no deploy recorded (`status`)
  3    exhausted: every candidate was tried or ruled out, or --max-attempts was reached;
       nothing is left behind
  4    stopped: an error that trying elsewhere would not fix (invalid configuration, or the
       model came up on two candidates without ever answering); nothing is left behind
  5    cleanup failed: something of a failed candidate (or, for `destroy`, of the service)
       could not be removed; the report lists it and nothing else was started
  6    locked: another deploy or destroy of the same service is running on this machine
  130  interrupted: run `servestack deploy` again to resume where it stopped
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path

from servestack.errors import UserError

DEFAULT_STATE_DIR = ".servestack"
DEFAULT_TIMEOUT = "20m"
ENGINES = ("pulumi", "terraform")


# --- argument parsing -----------------------------------------------------------------------------

def register_deploy(sub) -> None:
    from servestack.cli.main import add_filter_options

    parser = sub.add_parser("deploy", help="deploy with fallback over the ranked candidates",
                            description=__doc__.split("\n\n")[1],
                            epilog=_exit_codes(), formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("target", nargs="?", metavar="SPEC|STACK",
                        help="service YAML, or a stack written by `servestack generate` "
                             "(default: the embedded Mixtral spec)")
    parser.add_argument("--max-attempts", type=_positive_int, metavar="N",
                        help="stop after N attempts (default: walk every candidate)")
    parser.add_argument("--attempt-timeout", type=parse_duration, default=DEFAULT_TIMEOUT,
                        metavar="DURATION", help="per-attempt limit for `up`, e.g. 20m, 90s, "
                        "1h (default 20m)")
    parser.add_argument("--report", metavar="FILE", help="also write the JSON report here")
    parser.add_argument("--json", action="store_true", help="print the JSON report, no table")
    parser.add_argument("--ready-replicas", type=_positive_int, metavar="N",
                        help="replicas that must answer (default: the spec's min_replicas)")
    parser.add_argument("--no-quota-check", dest="quota_check", action="store_false",
                        help="skip the AWS Service Quotas pre-check")
    parser.add_argument("--allow-cidr", action="append", default=[], metavar="CIDR",
                        help="who may reach the load balancer (default 0.0.0.0/0); repeatable")
    parser.add_argument("--ssh-cidr", action="append", default=[], metavar="CIDR",
                        help="open SSH to the VMs from this range (default: no SSH)")
    parser.add_argument("--gcp-project", help="GCP project id")
    parser.add_argument("--stacks-dir", default="stacks", help="where STACK files are (stacks/)")
    _add_state_options(parser)
    add_filter_options(parser)
    parser.set_defaults(handler=run_deploy)


def register_status(sub) -> None:
    parser = sub.add_parser("status", help="what the last deploy of a service did; what is live")
    parser.add_argument("service", nargs="?", help="service name (default: the only one)")
    parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    parser.add_argument("--json", action="store_true", help="the journal's report as JSON")
    parser.set_defaults(handler=run_status)


def register_destroy(sub) -> None:
    parser = sub.add_parser("destroy", help="destroy every stack of a service and verify it",
                            epilog=_exit_codes(), formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("service", nargs="?", help="service name (default: the only one)")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    _add_state_options(parser)
    parser.set_defaults(handler=run_destroy)


def _add_state_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=ENGINES, default="pulumi",
                        help="what runs the stacks: pulumi (Automation API + Pulumi CLI, the "
                             "default) or terraform (servestack.terraform.engine)")
    parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR,
                        help="journal, lock and local Pulumi state (default .servestack)")
    parser.add_argument("--backend", metavar="URL",
                        help="Pulumi backend (default: $PULUMI_BACKEND_URL, else a local file "
                             "backend in the state dir)")


def _exit_codes() -> str:
    return "Exit codes:\n" + __doc__.split("Exit codes:\n", 1)[1]


def parse_duration(text: str) -> float:
    """'20m', '90s', '1h30m', '1200' (seconds) -> seconds."""
    text = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        seconds = float(text)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 20m, 90s, 1h")
        seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
    if seconds <= 0:
        raise argparse.ArgumentTypeError("the duration must be positive")
    return seconds


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


# --- seams (tests replace these) ------------------------------------------------------------------

def make_engine(args: argparse.Namespace, service: str):
    from servestack.deploy.journal import service_dir

    token = os.environ.get("HF_TOKEN") or None
    project = getattr(args, "gcp_project", None)
    work_dir = service_dir(args.state_dir, service) / args.engine
    if args.engine == "terraform":
        from servestack.terraform.engine import TerraformEngine

        return TerraformEngine(work_dir, hf_token=token, gcp_project=project)
    from servestack.pulumi.engine import PulumiEngine

    return PulumiEngine(work_dir, args.backend, hf_token=token, gcp_project=project)


def make_clock():
    from servestack.deploy.readiness import SystemClock

    return SystemClock()


def make_probe_factory():
    from servestack.deploy.loop import default_probe_factory

    return default_probe_factory()


# --- deploy ---------------------------------------------------------------------------------------

def run_deploy(args: argparse.Namespace) -> int:
    from servestack.deploy.journal import Journal, ServiceLock
    from servestack.deploy.loop import Fallback, Settings

    target = _resolve_target(args)
    inputs, candidates, builder, service = _prepare(args, target)
    settings = Settings(max_attempts=args.max_attempts, attempt_timeout_s=args.attempt_timeout,
                        ready_replicas=args.ready_replicas, quota_precheck=args.quota_check)
    clock = make_clock()
    progress = _progress_printer(clock)
    with _stop_on_sigterm(), ServiceLock(args.state_dir, service):
        journal = Journal.open(args.state_dir, service)
        engine = None
        if journal.status != "deployed":
            engine = make_engine(args, service)
            _warn_missing_token(inputs)
        loop = Fallback(engine, journal, candidates, builder, clock=clock, settings=settings,
                        probe_factory=make_probe_factory(), progress=progress)
        outcome = loop.run()
    report = outcome.to_json()
    if args.report:
        from servestack.fsutil import write_atomic

        write_atomic(args.report, json.dumps(report, indent=2) + "\n")
    sys.stdout.write(json.dumps(report, indent=2) + "\n" if args.json else report_table(report))
    return outcome.exit_code


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


class _Target:
    def __init__(self, spec: str | None, stack: dict | None = None, name: str | None = None):
        self.spec, self.stack, self.name = spec, stack, name


def _resolve_target(args: argparse.Namespace) -> _Target:
    from servestack.pulumi.stackfile import read_stack_file, stack_path

    target = args.target
    if target is None:
        return _Target(None)
    path = Path(target)
    if path.is_file():
        data = _yaml_mapping(path)
        if isinstance(data.get("config"), dict) and "servestack:deployment" in data["config"]:
            return _stack_target(data, path.name.removeprefix("Pulumi.").rsplit(".", 1)[0])
        return _Target(target)
    stack_file = stack_path(args.stacks_dir, target)
    if "/" not in target and stack_file.exists():
        return _stack_target(read_stack_file(stack_file), target)
    raise UserError(f"{target!r} is neither a spec file nor a stack in {args.stacks_dir}/ "
                    f"(looked for {stack_file})")


def _yaml_mapping(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _stack_target(data: dict, name: str) -> _Target:
    config = data.get("config") or {}
    spec = config.get("servestack:spec")
    if not isinstance(spec, str) or spec.startswith("<embedded"):
        spec = None
    return _Target(spec, config, name)


def _prepare(args: argparse.Namespace, target: _Target):
    """Plan, order the candidates, and make the per-candidate Deployment builder."""
    from servestack.cli.main import make_plan
    from servestack.deployment.build import build_deployment, service_slug
    from servestack.deployment.model import WORLD

    args.spec = target.spec
    defaults = (target.stack or {}).get("servestack:deployment") or {}
    allow = tuple(args.allow_cidr or defaults.get("allow_cidrs") or (WORLD,))
    ssh = tuple(args.ssh_cidr or defaults.get("ssh_cidrs") or ())
    project = args.gcp_project or defaults.get("gcp_project") or \
        (target.stack or {}).get("gcp:project")
    args.gcp_project = project
    inputs, plan = make_plan(args)
    service = defaults.get("service") or service_slug(inputs.spec.name or "servestack")
    candidates = list(plan.candidates)
    chosen = ((target.stack or {}).get("servestack:candidate") or {}).get("id")
    if chosen:
        first = [c for c in candidates if c.id == chosen]
        candidates = first + [c for c in candidates if c.id != chosen]

    def builder(candidate, pool):
        return build_deployment(inputs.spec, candidate, pool, model=inputs.model,
                                allow_cidrs=allow, ssh_cidrs=ssh, gcp_project=project,
                                service_name=service)

    return inputs, candidates, builder, service


def _warn_missing_token(inputs) -> None:
    from servestack.deployment.build import SECRET_ENV

    if SECRET_ENV in inputs.spec.secrets and not os.environ.get("HF_TOKEN"):
        print("servestack: warning: the spec needs HF_TOKEN but it is not set in the "
              "environment; gated models will not download", file=sys.stderr)


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

def _service(args: argparse.Namespace) -> str:
    from servestack.deploy.journal import known_services

    if args.service:
        return args.service
    services = known_services(args.state_dir)
    if len(services) == 1:
        return services[0]
    if not services:
        raise UserError(f"no deploy recorded in {args.state_dir}/ (run `servestack deploy`)")
    raise UserError(f"several services in {args.state_dir}/: {', '.join(services)}; name one")


def run_status(args: argparse.Namespace) -> int:
    from servestack.deploy.journal import Journal
    from servestack.deploy.loop import Outcome

    service = _service(args)
    journal = Journal.open(args.state_dir, service)
    if not journal.exists:
        raise UserError(f"no deploy of {service!r} recorded in {args.state_dir}/")
    data = journal.data
    report = Outcome(data["status"], data.get("message") or "", journal).to_json()
    report["dirty_stacks"] = [{"name": s["name"], "state": s["state"]}
                              for s in journal.dirty_stacks()]
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return 0
    lines = [f"Service {service}: {data['status']} (run {data['run']}, "
             f"{len(data['attempts'])} attempt(s)). {data.get('message') or ''}".rstrip()]
    live = data.get("live")
    if live:
        lines.append(f"Live: {live['candidate']} at {live['endpoint']} (stack {live['stack']})")
    for stack in report["dirty_stacks"]:
        if not live or stack["name"] != live["stack"]:
            lines.append(f"Needs cleanup: {stack['name']} ({stack['state']})")
    sys.stdout.write("\n".join(lines) + "\n\n" + report_table(report).split("\n\n")[0] + "\n")
    return 0


def run_destroy(args: argparse.Namespace) -> int:
    from servestack.deploy.journal import Journal, ServiceLock
    from servestack.deploy.loop import Fallback

    service = _service(args)
    if not Journal.open(args.state_dir, service).exists:  # before the lock creates a folder
        raise UserError(f"no deploy of {service!r} recorded in {args.state_dir}/")
    with ServiceLock(args.state_dir, service):
        journal = Journal.open(args.state_dir, service)
        names = [s["name"] for s in journal.dirty_stacks()]
        if names and not args.yes:
            _confirm(f"Destroy {len(names)} stack(s) of {service}: {', '.join(names)}?")
        clock = make_clock()
        engine = make_engine(args, service) if names else None
        loop = Fallback(engine, journal, [], lambda c, pool: None, clock=clock,
                        progress=_progress_printer(clock))
        outcome = loop.destroy()
    sys.stdout.write(f"{outcome.status}: {outcome.message}\n")
    return outcome.exit_code


def _confirm(question: str) -> None:
    if not sys.stdin.isatty():
        raise UserError(f"{question} Pass --yes to confirm when not at a terminal")
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise UserError("nothing destroyed")
