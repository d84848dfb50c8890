"""Options several commands share, each added and checked in one place, and the typed requests
built from them.

A command registers its options with the `add_*` functions below and turns the parsed
Namespace into one request with the matching `*_request` function; the Namespace goes no
further. Values that can be checked alone are checked by argparse (the `type=` functions);
checks that need two options (a region of a cloud) are made when the request is built. Either
way a bad option ends in one line `servestack: error: ...` and exit code 2.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from servestack import clouds
from servestack.deployment.choices import FRONTS, ROUTINGS, SCALE_METRICS
from servestack.deployment.choices import Choices as DeploymentOptions
from servestack.errors import UserError
from servestack.secrets import ENV_NAME

EXIT_OK = 0
DEFAULT_STACKS_DIR = "stacks"
DEFAULT_STATE_DIR = ".servestack"
DEFAULT_ATTEMPT_TIMEOUT_S = 20 * 60.0
ENGINES = ("pulumi", "terraform")
FORMATS = ("pulumi", "terraform")
# Pulumi's stack-name rule (letters, digits, `-`, `_`, `.`; at most 100), plus no leading dot so
# that `.` and `..` are never a name. Stack and service names become file and folder names.
NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")
DURATION_UNITS = {"h": 3600, "m": 60, "s": 1}


# --- the parser and its errors ----------------------------------------------------------------

class Parser(argparse.ArgumentParser):
    """argparse prints its usage and exits on a bad option; here that is one UserError line
    like every other bad input (sub-parsers are built with the same class)."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (see {self.prog} --help)")


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse `argv` and run the chosen command's handler; bad input is one line and exit 2."""
    try:
        args = parser.parse_args(argv)
        return args.handler(args)
    except UserError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK


# --- requests ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlacementRequest:
    """How the replicas are placed over pools (servestack.placement)."""

    max_pools: int = 1
    max_per_pool: int | None = None
    spread: bool = False


@dataclass(frozen=True)
class PlanRequest:
    """What to plan: the spec (None: the embedded example) and the filters."""

    spec: str | None = None
    cloud: str | None = None
    region: str | None = None
    spot: bool | None = None  # None: as the spec says
    model: str | None = None
    model_config: str | None = None
    env: dict[str, str | None] = field(default_factory=dict)  # None: from the environment
    secrets: dict[str, str | None] = field(default_factory=dict)  # --secret, likewise
    catalog_dir: str | None = None
    placement: PlacementRequest = PlacementRequest()
    state_dir: str = DEFAULT_STATE_DIR  # whose deploy journal says which pools were full


@dataclass(frozen=True)
class TableView:
    """How the ranked table is printed."""

    show_all: bool = False
    explain: bool = False


@dataclass(frozen=True)
class PlanView:
    """How `plan` shows its result: the table or JSON on stdout, and the JSON to a file."""

    table: TableView = TableView()
    json: bool = False
    output: str | None = None


@dataclass(frozen=True)
class GenerateRequest:
    plan: PlanRequest
    rank: int | None = None
    pick: str | None = None
    stack: str | None = None  # None: the service's name
    stacks_dir: str = DEFAULT_STACKS_DIR
    deployment: DeploymentOptions = DeploymentOptions()
    format: str = "pulumi"
    table: TableView | None = None  # None: no table before the summary


@dataclass(frozen=True)
class PreviewRequest:
    stack: str
    stacks_dir: str = DEFAULT_STACKS_DIR
    json: bool = False


@dataclass(frozen=True)
class GpusRequest:
    name: str | None = None
    cloud: str | None = None
    region: str | None = None
    catalog_dir: str | None = None


@dataclass(frozen=True)
class StateRequest:
    """Where a service's deploys are recorded, and what runs its stacks."""

    engine: str = "pulumi"
    state_dir: str = DEFAULT_STATE_DIR
    backend: str | None = None


@dataclass(frozen=True)
class DeployRequest:
    target: str | None  # a spec file or a generated stack; None: the embedded example
    plan: PlanRequest  # its spec is set once the target is known
    deployment: DeploymentOptions = DeploymentOptions()
    stacks_dir: str = DEFAULT_STACKS_DIR
    state: StateRequest = StateRequest()
    max_attempts: int | None = None
    attempt_timeout_s: float = DEFAULT_ATTEMPT_TIMEOUT_S
    ready_replicas: int | None = None
    quota_check: bool = True
    report: str | None = None
    json: bool = False
    # a service over several pools (--max-pools above 1): servestack.deploy.pools
    max_parallel: int | None = None  # None: the placed pools + 1 hedge
    hedge_budget: float | None = None  # USD/h; None: the placement's own hourly price


@dataclass(frozen=True)
class ReconcileRequest:
    service: str | None
    state: StateRequest = StateRequest()
    watch: bool = False
    interval_s: float = 600.0
    passes: int | None = None  # --watch: stop after N passes (None: until interrupted)
    report: str | None = None
    json: bool = False


@dataclass(frozen=True)
class StatusRequest:
    service: str | None = None  # None: the only service recorded
    state_dir: str = DEFAULT_STATE_DIR
    json: bool = False


@dataclass(frozen=True)
class DestroyRequest:
    service: str | None = None
    yes: bool = False
    state: StateRequest = StateRequest()


def plan_request(args: argparse.Namespace, spec: str | None) -> PlanRequest:
    if args.region is not None:
        check_region(args.region, args.cloud)
    return PlanRequest(spec=spec, cloud=args.cloud, region=args.region, spot=args.spot,
                       model=args.model, model_config=args.model_config, env=dict(args.env),
                       secrets=dict(args.secret),
                       catalog_dir=args.catalog_dir, placement=placement_request(args),
                       state_dir=getattr(args, "state_dir", DEFAULT_STATE_DIR))


def placement_request(args: argparse.Namespace) -> PlacementRequest:
    return PlacementRequest(max_pools=args.max_pools, max_per_pool=args.max_per_pool,
                            spread=args.spread)


def table_view(args: argparse.Namespace) -> TableView:
    return TableView(show_all=args.all, explain=args.explain)


def plan_view(args: argparse.Namespace) -> PlanView:
    return PlanView(table=table_view(args), json=args.json, output=args.output)


def generate_request(args: argparse.Namespace, spec: str | None,
                     list_candidates: bool = False) -> GenerateRequest:
    """`list_candidates`: print the table even without --all or --explain (plan-mixtral)."""
    listed = list_candidates or args.all or args.explain
    return GenerateRequest(
        plan=plan_request(args, spec), rank=args.candidate, pick=args.pick, stack=args.stack,
        stacks_dir=args.stacks_dir, deployment=deployment_options(args), format=args.format,
        table=table_view(args) if listed else None)


def preview_request(args: argparse.Namespace) -> PreviewRequest:
    return PreviewRequest(stack=args.stack, stacks_dir=args.stacks_dir, json=args.json)


def gpus_request(args: argparse.Namespace) -> GpusRequest:
    if args.region is not None:
        check_region(args.region, args.cloud)
    return GpusRequest(name=args.name, cloud=args.cloud, region=args.region,
                       catalog_dir=args.catalog_dir)


def deployment_options(args: argparse.Namespace) -> DeploymentOptions:
    if args.dns_zone and not args.domain:
        raise UserError("--dns-zone needs --domain (the name the zone's records are for)")
    if args.scale_target is not None and args.scale_metric is None:
        raise UserError("--scale-target needs --scale-metric (for qps the spec's "
                        "replica_policy.target_qps_per_replica is the target)")
    _check_front(args)
    return DeploymentOptions(allow_cidrs=tuple(args.allow_cidr), ssh_cidrs=tuple(args.ssh_cidr),
                             gcp_project=args.gcp_project, api_key=not args.no_api_key,
                             domain=args.domain, dns_zone=args.dns_zone,
                             scale_metric=args.scale_metric, scale_target=args.scale_target,
                             front=args.front, hosted_zone_id=args.hosted_zone_id,
                             routing=args.routing, weight_cache=args.weight_cache)


def _check_front(args: argparse.Namespace) -> None:
    """The front's flags, refused when they cannot take effect together."""
    if args.front == "route53" and not (args.domain and args.hosted_zone_id):
        raise UserError("--front route53 needs --domain NAME (the service's name) and "
                        "--hosted-zone-id ID (the Route 53 hosted zone that holds it)")
    if args.hosted_zone_id and args.front != "route53":
        raise UserError("--hosted-zone-id is the zone of a --front route53; for one pool's "
                        "HTTPS records use --dns-zone")
    if args.front and args.dns_zone:
        raise UserError("--dns-zone is for one pool's HTTPS; with --front the front's records "
                        "go in --hosted-zone-id")
    if args.front == "global-accelerator" and args.domain:
        raise UserError("--front global-accelerator takes no --domain: clients use the "
                        "accelerator's own DNS name")
    if args.routing != "weighted" and args.front != "route53":
        raise UserError(f"--routing {args.routing} is a Route 53 routing policy: it needs "
                        "--front route53")


def state_request(args: argparse.Namespace) -> StateRequest:
    return StateRequest(engine=args.engine, state_dir=args.state_dir, backend=args.backend)


def deploy_request(args: argparse.Namespace) -> DeployRequest:
    _check_hedge(args)
    return DeployRequest(
        target=args.target, plan=plan_request(args, None), deployment=deployment_options(args),
        stacks_dir=args.stacks_dir, state=state_request(args), max_attempts=args.max_attempts,
        attempt_timeout_s=args.attempt_timeout, ready_replicas=args.ready_replicas,
        quota_check=args.quota_check, report=args.report, json=args.json,
        max_parallel=args.max_parallel, hedge_budget=args.hedge_budget)


def _check_hedge(args: argparse.Namespace) -> None:
    """The hedge's flags take effect only over several pools."""
    for flag, value in (("--max-parallel", args.max_parallel),
                        ("--hedge-budget", args.hedge_budget)):
        if value is not None and args.max_pools == 1:
            raise UserError(f"{flag} is for a service over several pools: it needs "
                            "--max-pools above 1")


def reconcile_request(args: argparse.Namespace) -> ReconcileRequest:
    if args.interval is not None and not args.watch:
        raise UserError("--interval is the time between --watch passes: it needs --watch")
    if args.passes is not None and not args.watch:
        raise UserError("--passes bounds --watch: it needs --watch")
    return ReconcileRequest(service=args.service, state=state_request(args), watch=args.watch,
                            interval_s=args.interval or 600.0, passes=args.passes,
                            report=args.report, json=args.json)


def status_request(args: argparse.Namespace) -> StatusRequest:
    return StatusRequest(service=args.service, state_dir=args.state_dir, json=args.json)


def destroy_request(args: argparse.Namespace) -> DestroyRequest:
    return DestroyRequest(service=args.service, yes=args.yes, state=state_request(args))


# --- option groups ----------------------------------------------------------------------------

def add_filter_options(parser: argparse.ArgumentParser) -> None:
    """What to plan: shared by plan, plan-mixtral, generate and deploy."""
    parser.add_argument("--cloud", choices=clouds.NAMES, help="only this cloud")
    parser.add_argument("--region", help="only this region")
    spot = parser.add_mutually_exclusive_group()
    spot.add_argument("--spot", dest="spot", action="store_const", const=True,
                      help="plan spot VMs whatever the spec says")
    spot.add_argument("--on-demand", dest="spot", action="store_const", const=False,
                      help="plan on-demand VMs whatever the spec says")
    parser.add_argument("--model", type=nonempty,
                        help="the model served (default: from the spec's run)")
    parser.add_argument("--model-config", metavar="CONFIG_JSON", type=existing_file,
                        help="a Hugging Face config.json for a model servestack does not know")
    parser.add_argument("--env", action="append", default=[], metavar="NAME[=VALUE]",
                        type=env_pair, help="set or override one of the spec's envs (no "
                        "VALUE: from your environment); credential names (HF_TOKEN, "
                        "*_API_KEY, ...) are kept as secrets")
    parser.add_argument("--secret", action="append", default=[], metavar="NAME[=VALUE]",
                        type=env_pair, help="a secret for the VMs, kept in the cloud's "
                        "secret store, never in a file; prefer NAME alone (the value is read "
                        "from your environment): a VALUE here is visible to `ps`")
    add_placement_options(parser)
    add_catalog_dir(parser)


def add_placement_options(parser: argparse.ArgumentParser) -> None:
    """Pools (cloud x region x spot): the plan JSON's `placement`. Flags, not spec keys: the
    spec stays SkyPilot's."""
    parser.add_argument("--max-pools", type=positive_int, default=1, metavar="N",
                        help="place the replicas over at most N pools, each in its own region "
                        "behind its own load balancer (default 1: one region)")
    parser.add_argument("--max-per-pool", type=positive_int, metavar="N",
                        help="a pool holds at most N replicas (what quotas allow): the rest "
                        "spills to the next cheapest pool")
    parser.add_argument("--spread", action="store_true",
                        help="spread the replicas round-robin over the --max-pools cheapest "
                        "pools, for availability (default: cheapest pool first)")


def add_catalog_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--catalog-dir", type=existing_dir,
                        help="read the catalog from this folder")


def add_view_options(parser: argparse.ArgumentParser, hidden: bool = False) -> None:
    """How the plan is shown. `generate` accepts them too, hidden: --all and --explain print
    the table before the summary."""

    def say(text: str) -> str:
        return argparse.SUPPRESS if hidden else text

    parser.add_argument("--all", action="store_true", help=say("every candidate, not one "
                                                               "per group"))
    parser.add_argument("--explain", action="store_true", help=say("what was dropped and why"))
    parser.add_argument("--json", action="store_true", help=say("the plan as JSON (documented)"))
    parser.add_argument("-o", "--output", type=file_to_write,
                        help=say("also write the JSON plan to this file"))


def add_generate_options(parser: argparse.ArgumentParser) -> None:
    pick = parser.add_mutually_exclusive_group()
    pick.add_argument("--candidate", type=candidate_rank, metavar="N",
                      help="use the N-th ranked candidate")
    pick.add_argument("--pick", metavar="ID", help="use the candidate with this id")
    parser.add_argument("--stack", type=safe_name, help="stack name (default: the spec's name)")
    add_stacks_dir(parser, "where stack files go (stacks/)")
    add_deployment_options(parser)
    parser.add_argument("--format", choices=FORMATS, default="pulumi",
                        help="pulumi: stacks/Pulumi.<stack>.yaml (default); terraform: "
                             "stacks/<stack>/main.tf.json + terraform.tfvars.json")


def add_stacks_dir(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--stacks-dir", type=folder, default=DEFAULT_STACKS_DIR, help=help)


def add_deployment_options(parser: argparse.ArgumentParser) -> None:
    """Shared by generate and deploy, so both refuse the same bad range."""
    parser.add_argument("--allow-cidr", action="append", default=[], metavar="CIDR", type=cidr,
                        help="who may reach the load balancer (default 0.0.0.0/0); repeatable")
    parser.add_argument("--ssh-cidr", action="append", default=[], metavar="CIDR", type=cidr,
                        help="open SSH to the VMs from this range (default: no SSH)")
    parser.add_argument("--gcp-project", help="GCP project id (written as gcp:project)")
    parser.add_argument("--no-api-key", action="store_true",
                        help="serve without an API key: anyone in --allow-cidr may call the "
                        "endpoint (default: vLLM requires a key generated per service)")
    parser.add_argument("--domain", type=domain_name, metavar="NAME",
                        help="serve HTTPS on NAME with a managed certificate, HTTP redirected")
    parser.add_argument("--dns-zone", metavar="ZONE",
                        help="where the stack writes NAME's records: the Route 53 hosted zone "
                        "id (required on AWS), a Cloud DNS managed zone (GCP), a DNS zone "
                        "resource id (Azure); without it the stack outputs the records")
    parser.add_argument("--front", choices=FRONTS,
                        help="with --max-pools above 1: what gives the pools one endpoint; "
                        "route53 (health-checked records under --domain in --hosted-zone-id) or "
                        "global-accelerator (AWS pools; the default when all pools are AWS)")
    parser.add_argument("--hosted-zone-id", type=hosted_zone_id, metavar="ID",
                        help="--front route53: the Route 53 hosted zone that holds --domain")
    parser.add_argument("--routing", choices=ROUTINGS, default="weighted",
                        help="--front route53: weighted by the pools' replicas (default) or "
                        "latency (the nearest healthy pool)")
    parser.add_argument("--scale-metric", choices=SCALE_METRICS,
                        help="what the autoscaler tracks (default qps: the load balancer's "
                        "requests per replica, SkyServe's rule); vllm-waiting / vllm-kv-cache: "
                        "vLLM's queue or KV-cache use, shipped to the cloud's monitoring")
    parser.add_argument("--scale-target", type=positive_number, metavar="X",
                        help="the per-replica target of --scale-metric (default 5 requests "
                        "waiting, 70 percent KV cache)")
    parser.add_argument("--weight-cache", action="store_true",
                        help="a private bucket per pool, in its region, filled with the model's "
                        "weights by the first healthy replica; later replicas stream them from "
                        "it with vLLM's Run:ai streamer instead of the Hugging Face hub")


def add_hedge_options(parser: argparse.ArgumentParser) -> None:
    """deploy over several pools (servestack.deploy.pools)."""
    parser.add_argument("--max-parallel", type=positive_int, metavar="K",
                        help="with --max-pools above 1: bring up to K pools up at once, the "
                        "placed ones first, then hedges in the next cheapest regions "
                        "(default: the placed pools + 1)")
    parser.add_argument("--hedge-budget", type=non_negative_number, metavar="USD_PER_HOUR",
                        help="with --max-pools above 1: the most the hedge pools beyond the "
                        "placement may cost per hour together, replicas x $/h (default: 1.5x the "
                        "placement's own $/h; 0: no hedge)")


def add_reconcile_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--watch", action="store_true",
                        help="run passes until interrupted (Ctrl-C ends after journaling the "
                        "step; exit 130)")
    parser.add_argument("--interval", type=duration, metavar="DURATION",
                        help="--watch: time between passes, e.g. 10m (default 10m)")
    parser.add_argument("--passes", type=positive_int, metavar="N",
                        help="--watch: stop after N passes (default: until interrupted)")
    parser.add_argument("--report", metavar="FILE", type=file_to_write,
                        help="also write the last pass's JSON report here")
    parser.add_argument("--json", action="store_true", help="print the JSON report, no table")


def add_state_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", type=folder, default=DEFAULT_STATE_DIR,
                        help="journal, lock and local Pulumi state (default .servestack)")


def add_state_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=ENGINES, default="pulumi",
                        help="what runs the stacks: pulumi (Automation API + Pulumi CLI, the "
                             "default) or terraform (servestack.terraform.engine)")
    add_state_dir(parser)
    parser.add_argument("--backend", metavar="URL",
                        help="Pulumi backend (default: $PULUMI_BACKEND_URL, else a local file "
                             "backend in the state dir)")


# --- checks -----------------------------------------------------------------------------------
# argparse `type=` functions: ArgumentTypeError becomes "argument --flag: <message>".

def candidate_rank(text: str) -> int:
    rank = _whole_number(text)
    if rank < 1:
        raise argparse.ArgumentTypeError(
            f"{rank} is not a rank: candidates are numbered from 1 (the first row of the plan)")
    return rank


def positive_int(text: str) -> int:
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def duration(text: str) -> float:
    """'20m', '90s', '1h30m', '1200' (seconds) -> seconds."""
    text = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        seconds = float(text)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 20m, 90s, 1h")
        seconds = sum(float(n) * DURATION_UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise argparse.ArgumentTypeError("the duration must be positive")
    return seconds


def cidr(text: str) -> str:
    import ipaddress

    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a CIDR range such as 203.0.113.0/24") from None
    return text


def non_negative_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number") from None
    if not 0 <= value < 1e6:
        raise argparse.ArgumentTypeError(f"{text[:40]} must be 0 or more and below 1000000")
    return value


def positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number") from None
    if not 0 < value < 1e6:
        raise argparse.ArgumentTypeError(f"{text[:40]} must be above 0 and below 1000000")
    return value


# A DNS name as certificates take it: labels of letters, digits and inner dashes, at least
# two labels, at most 253 characters (RFC 1035 with RFC 1123's leading digits). No wildcard:
# a service answers on one name.
DOMAIN = re.compile(r"(?=.{4,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")


def hosted_zone_id(text: str) -> str:
    if not re.fullmatch(r"[A-Z0-9]{1,32}", text):
        raise argparse.ArgumentTypeError(f"{text[:80]!r} is not a Route 53 hosted zone id such "
                                         "as Z0123456789ABCDEFGHIJ")
    return text


def domain_name(text: str) -> str:
    name = text.strip().lower().rstrip(".")
    if not DOMAIN.fullmatch(name):
        raise argparse.ArgumentTypeError(f"{text[:80]!r} is not a domain name such as "
                                         "llm.example.com")
    return name


def env_pair(text: str) -> tuple[str, str | None]:
    """NAME=VALUE, or NAME alone (the value is read from the environment later). The error
    names only what precedes `=`: the value may be a secret."""
    key, sep, value = text.partition("=")
    if not ENV_NAME.fullmatch(key):
        raise argparse.ArgumentTypeError(f"{key[:64]!r} is not an environment variable name "
                                         "(expected NAME or NAME=VALUE)")
    return key, value if sep else None


def safe_name(text: str) -> str:
    """A stack or service name, safe as a file or folder name under its parent."""
    if not NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a name: use up to 100 letters, digits, '-', '_' or '.', "
            "not starting with '.'")
    return text


def nonempty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a value, got ''")
    return text


def existing_file(text: str) -> str:
    return _path_check(text, lambda p: p.is_file(), "is not a file")


def existing_dir(text: str) -> str:
    return _path_check(text, lambda p: p.is_dir(), "is not a folder")


def file_to_write(text: str) -> str:
    return _path_check(text, lambda p: not p.is_dir(), "is a folder, not a file")


def folder(text: str) -> str:
    """A folder that exists or will be created."""
    return _path_check(text, lambda p: p.is_dir() or not p.exists(), "is not a folder")


def _path_check(text: str, ok: Callable[[Path], bool], problem: str) -> str:
    if not text:  # Path("") is the current folder: never what an empty argument meant
        raise argparse.ArgumentTypeError("expected a path, got ''")
    path = Path(text)
    if ok(path):
        return text
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file or folder")
    raise argparse.ArgumentTypeError(f"{text} {problem}")


def check_region(region: str, cloud: str | None) -> None:
    """Refuse a region no catalog knows, with the closest known name."""
    import difflib

    from servestack.catalog import known_regions

    regions = known_regions()
    pool = sorted(regions.get(cloud, set()) if cloud else set().union(*regions.values()))
    if region not in pool:
        close = difflib.get_close_matches(region, pool, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        scope = f" of {cloud}" if cloud else ""
        raise UserError(f"--region: unknown region {region!r}{scope}{hint}")
