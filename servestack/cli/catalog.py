"""`servestack catalog`: refresh prices from the clouds, import SkyPilot catalogs, show, validate.

    servestack catalog refresh [--cloud aws|gcp|azure] [--regions R1,R2|all] [--force] [--dry-run]
    servestack catalog import-skypilot DIR [--cloud ...] [--force] [--dry-run]
    servestack catalog show [--cloud ...]
    servestack catalog validate [--max-age-days N] [--strict]

refresh and import write the user catalog: --catalog-dir, else SERVESTACK_CATALOG_DIR, else
$XDG_DATA_HOME/servestack/catalog (~/.local/share/servestack/catalog); never the installed
package. show and validate read what `plan` reads: that folder when named, else per cloud the
newer of the user's file and the shipped one. Bad input and unreachable price sources end in one
line and exit code 2.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

from servestack.catalog import (
    CLOUD_TITLES,
    CLOUDS,
    STALE_DAYS,
    Catalog,
    CatalogError,
    CloudFile,
    PriceRow,
    cloud_rows,
    load_catalog,
    load_gpus,
    user_dir,
)
from servestack.cli.options import existing_dir, folder
from servestack.errors import UserError

EXIT_OK, EXIT_WARNINGS = 0, 1
EXAMPLES_PER_KIND = 5


def register(sub) -> None:
    parser = sub.add_parser("catalog", help="refresh, import, show or validate the offer catalog",
                            description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="catalog_command", required=True,
                                     metavar="SUBCOMMAND")
    _register_refresh(commands)
    _register_import(commands)
    _register_show(commands)
    _register_validate(commands)


# --- refresh -------------------------------------------------------------------------------------

def _register_refresh(commands) -> None:
    parser = commands.add_parser(
        "refresh", help="rebuild prices from the clouds' public price lists",
        description="Download current prices (AWS Price List + spot feed, GCP Cloud Billing "
                    "Catalog, Azure Retail Prices), join them with catalog/instances.csv, show "
                    "what changed and write each cloud's CSV atomically.")
    parser.add_argument("--cloud", choices=CLOUDS, help="only this cloud (default: all three)")
    parser.add_argument("--regions", type=_region_list, metavar="R1,R2|all",
                        help="only these regions (needs --cloud; others are kept as they are); "
                             "'all' = every region the source prices. Default: AWS the regions "
                             "already in the catalog, GCP/Azure every region")
    _common_write_options(parser)
    net = parser.add_argument_group("network")
    net.add_argument("--timeout", type=_positive, default=30.0, metavar="SECONDS",
                     help="per request (default 30)")
    net.add_argument("--retries", type=_count, default=4,
                     help="retries on 429/5xx/timeouts, with backoff (default 4)")
    net.add_argument("--cache-dir", help="download cache (default SERVESTACK_CACHE_DIR or "
                                         "~/.cache/servestack)")
    net.add_argument("--cache-ttl", type=_non_negative, default=6.0, metavar="HOURS",
                     help="reuse downloads younger than this (default 6; 0 = always download)")
    net.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    urls = parser.add_argument_group("sources (flag, else environment, else the public API)")
    urls.add_argument("--aws-pricing-url", help="Price List bulk API base "
                                                "(SERVESTACK_AWS_PRICING_URL)")
    urls.add_argument("--aws-spot-url", help="spot price feed (SERVESTACK_AWS_SPOT_URL)")
    urls.add_argument("--aws-spot", choices=("auto", "feed", "history", "none"), default="auto",
                      help="spot source: public feed per region, DescribeSpotPriceHistory per "
                           "zone (needs credentials), auto = history if credentials are set")
    urls.add_argument("--aws-format", choices=("csv", "json"), default="csv",
                      help="offer file form (csv streams; default csv)")
    urls.add_argument("--gcp-billing-url", help="Cloud Billing API base "
                                                "(SERVESTACK_GCP_BILLING_URL); the API key comes "
                                                "from SERVESTACK_GCP_API_KEY")
    urls.add_argument("--azure-prices-url", help="Retail Prices endpoint "
                                                 "(SERVESTACK_AZURE_PRICES_URL)")
    parser.set_defaults(handler=run_refresh)


def run_refresh(args: argparse.Namespace) -> int:
    from servestack.catalog.fetching import RefreshOptions
    from servestack.catalog.http import Http, Progress
    from servestack.catalog.refresh import refresh

    http = Http(timeout=args.timeout, retries=args.retries, cache_dir=args.cache_dir,
                cache_ttl_hours=args.cache_ttl, progress=Progress(enabled=not args.quiet))
    options = RefreshOptions(
        clouds=(args.cloud,) if args.cloud else CLOUDS, regions=args.regions,
        catalog_dir=args.catalog_dir, force=args.force, dry_run=args.dry_run,
        threshold_pct=args.threshold, aws_spot=args.aws_spot, aws_format=args.aws_format,
        urls={"aws": args.aws_pricing_url, "aws_spot": args.aws_spot_url,
              "gcp": args.gcp_billing_url, "azure": args.azure_prices_url})
    refreshed = _catalog_errors(refresh, options, http)
    _print_outcomes(refreshed.outcomes, args.changes)
    for line in refreshed.skipped:
        print(line)
    return EXIT_OK


# --- import-skypilot -----------------------------------------------------------------------------

def _register_import(commands) -> None:
    parser = commands.add_parser(
        "import-skypilot", help="import SkyPilot catalog files (v8 vms.csv)",
        description="Read <DIR>/<cloud>/vms.csv (SkyPilot catalog schema v8, e.g. "
                    "~/.sky/catalogs/v8) and write servestack's catalog files from them.")
    parser.add_argument("dir", metavar="DIR", help="folder holding aws/, gcp/, azure/ vms.csv")
    parser.add_argument("--cloud", choices=CLOUDS, help="only this cloud (DIR may then hold "
                                                        "vms.csv directly)")
    _common_write_options(parser)
    parser.set_defaults(handler=run_import)


def run_import(args: argparse.Namespace) -> int:
    from servestack.catalog import provider
    from servestack.catalog.refresh import load_facts, prepare, write_outcomes
    from servestack.catalog.skypilot_import import find_files, import_file

    directory = user_dir(args.catalog_dir)
    gpus = _catalog_errors(load_gpus, directory)
    outcomes = []
    for cloud, path in find_files(args.dir, args.cloud).items():
        result = import_file(provider(cloud), path, load_facts(cloud), gpus)
        header = _import_header(cloud, result.source, path)
        outcomes.append(prepare(cloud, directory, result.rows, header, force=args.force,
                                threshold_pct=args.threshold, notes=result.notes))
    if not args.dry_run:
        write_outcomes(outcomes, directory)
    _print_outcomes(outcomes, args.changes)
    return EXIT_OK


def _import_header(cloud: str, source: str, path: Path) -> list[str]:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
    return [
        f"{CLOUD_TITLES[cloud]} GPU offers for servestack, imported by `servestack catalog "
        f"import-skypilot` at {stamp} from {path.name} ({path.parent.name}/).",
        f"Source: {source}. date = the day of the last commit of that file (else the day it was "
        "last written), not when its prices were sampled.",
        "AWS zones are availability-zone IDs as SkyPilot records them; GCP bundled machine "
        "types = SkyPilot host row + GPU row of the same zone; empty price = none in the source.",
    ]


# --- show / validate -----------------------------------------------------------------------------

def _register_show(commands) -> None:
    parser = commands.add_parser("show", help="which file each cloud uses, its rows and age")
    parser.add_argument("--cloud", choices=CLOUDS)
    parser.add_argument("--catalog-dir", type=existing_dir,
                        help="read only this catalog folder")
    parser.set_defaults(handler=run_show)


def _register_validate(commands) -> None:
    parser = commands.add_parser("validate", help="load the catalog and list what looks wrong")
    parser.add_argument("--catalog-dir", type=existing_dir,
                        help="read only this catalog folder")
    parser.add_argument("--max-age-days", type=_count, default=STALE_DAYS,
                        help=f"older prices are stale (default {STALE_DAYS})")
    parser.add_argument("--all", action="store_true", help="every warning, not a few per kind")
    parser.add_argument("--strict", action="store_true", help="exit 1 when there are warnings")
    parser.set_defaults(handler=run_validate)


@dataclass
class CloudSummary:
    file: CloudFile
    rows: list[PriceRow]
    offers: int = 0
    gpus: list[str] = field(default_factory=list)

    @property
    def cloud(self) -> str:
        return self.file.cloud

    @property
    def exists(self) -> bool:
        return self.file.path.exists()

    def age_days(self, today: date) -> int | None:
        """Days since the oldest price in use."""
        return (today - date.fromisoformat(self.file.oldest)).days if self.file.oldest else None


def summarize(directory: str | Path | None = None,
              clouds: tuple[str, ...] = CLOUDS) -> tuple[Catalog, list[CloudSummary]]:
    """Load the catalog (raising UserError if it is broken) and describe each cloud's file."""
    catalog = _catalog_errors(load_catalog, directory, clouds)
    summaries = []
    for cloud in clouds:
        file, rows = _catalog_errors(cloud_rows, cloud, catalog.gpus, directory)
        offers = [o for o in catalog.offers if o.cloud == cloud]
        summaries.append(CloudSummary(file, rows, len(offers),
                                      sorted({o.accelerator for o in offers})))
    return catalog, summaries


def run_show(args: argparse.Namespace) -> int:
    clouds = (args.cloud,) if args.cloud else CLOUDS
    _, summaries = summarize(args.catalog_dir, clouds)
    today = date.today()
    table = [("CLOUD", "FROM", "ROWS", "OFFERS", "REGIONS", "ZONES", "PRICES AS OF", "AGE",
              "GPUS")]
    for s in summaries:
        if not s.exists:
            table.append((CLOUD_TITLES[s.cloud], "-", "-", "-", "-", "-", "-", "-", "(no file)"))
            continue
        table.append((CLOUD_TITLES[s.cloud], s.file.origin, str(len(s.rows)), str(s.offers),
                      str(len({r.region for r in s.rows})),
                      str(len({r.zone for r in s.rows if r.zone})), s.file.span,
                      _age(s.age_days(today)), ", ".join(s.gpus)))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    for row in table:
        cells = [c.rjust(w) if 1 < i < 6 else c.ljust(w) for i, (c, w) in
                 enumerate(zip(row, widths, strict=False))]
        print("  ".join([*cells, row[-1]]).rstrip())
    for s in summaries:
        print(f"{s.cloud}: {s.file.path}" if s.exists else f"{s.cloud}: no file")
        for source, count in Counter(r.source for r in s.rows).most_common(3):
            print(f"  source ({count} rows): {source}")
    if not args.catalog_dir:
        print(f"user catalog (written by `catalog refresh`): {user_dir()}")
    return EXIT_OK


def run_validate(args: argparse.Namespace) -> int:
    catalog, summaries = summarize(args.catalog_dir)
    warnings = validation_warnings(summaries, catalog, args.max_age_days)
    limit = None if args.all else EXAMPLES_PER_KIND
    for kind, items in warnings.items():
        print(f"{kind}: {len(items)}")
        for item in items[:limit]:
            print(f"  {item}")
        if limit is not None and len(items) > limit:
            print(f"  ... and {len(items) - limit} more (--all lists them)")
    count = sum(len(v) for v in warnings.values())
    rows = sum(len(s.rows) for s in summaries)
    files = sum(1 for s in summaries if s.exists)
    verdict = "catalog OK" if not count else f"catalog loads with {count} warning(s)"
    print(f"{verdict}: {files} cloud file(s), {rows} rows, {len(catalog.offers)} offers")
    return EXIT_WARNINGS if count and args.strict else EXIT_OK


def validation_warnings(summaries: list[CloudSummary], catalog: Catalog,
                        max_age_days: int = STALE_DAYS,
                        today: date | None = None) -> dict[str, list[str]]:
    """Warnings grouped by kind, over every cloud: missing files, then checks.findings."""
    from servestack.catalog.checks import findings

    kinds: dict[str, list[str]] = {}
    missing = [f"{s.file.path}: missing; no {CLOUD_TITLES[s.cloud]} offers planned"
               for s in summaries if not s.exists]
    if missing:
        kinds["missing files"] = missing
    for s in summaries:
        found = findings(s.file, s.rows, catalog.gpus, today, max_age_days)
        for kind, lines in found.items():
            kinds.setdefault(kind, []).extend(lines)
    return kinds


# --- helpers -------------------------------------------------------------------------------------

def _common_write_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--catalog-dir", type=folder,
                        help="the catalog folder to write (default: "
                                              "SERVESTACK_CATALOG_DIR, else "
                                              "$XDG_DATA_HOME/servestack/catalog)")
    parser.add_argument("--force", action="store_true",
                        help="write even an empty or much smaller catalog")
    parser.add_argument("--dry-run", action="store_true", help="show the changes, write nothing")
    parser.add_argument("--threshold", type=_non_negative, default=5.0, metavar="PCT",
                        help="report price changes beyond this percentage (default 5)")
    parser.add_argument("--changes", type=_count, default=10, metavar="N",
                        help="list at most N price changes per cloud (default 10)")


def _print_outcomes(outcomes, limit: int) -> None:
    for outcome in outcomes:
        print("\n".join(outcome.lines(limit)))


def _catalog_errors(function, *args):
    """Run `function`; a broken catalog file becomes one UserError line."""
    try:
        return function(*args)
    except CatalogError as exc:
        raise UserError(str(exc)) from None


def _age(days: int | None) -> str:
    return "-" if days is None else f"{days} d"


def _region_list(text: str) -> tuple[str, ...]:
    regions = tuple(r.strip() for r in text.split(",") if r.strip())
    if not regions:
        raise argparse.ArgumentTypeError("expected region names separated by commas, or 'all'")
    if "all" in regions and len(regions) > 1:
        raise argparse.ArgumentTypeError("'all' cannot be combined with region names")
    return regions


def _positive(text: str) -> float:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 0")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return value
