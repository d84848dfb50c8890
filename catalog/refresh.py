"""Rebuild cloud files from outside sources, and never leave a broken one behind.

`refresh()` asks each cloud's module (through the registry) for priced rows; it joins nothing
itself (the fetchers join prices with the instance facts in instances.csv). Then for each cloud
it checks that the new file loads, refuses a much smaller or empty file unless forced, computes a
diff against the file in use, and writes every cloud atomically once all were fetched. A cloud
whose source needs a credential that is missing is skipped with a note when several clouds are
refreshed. `prepare()` + `write_outcomes()` are the same guarded writer for `import-skypilot`.

Files are written into the user catalog (loader.user_dir), never into the installed package.
Not here: HTTP (http.py), what a price list means (per-cloud modules).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from servestack.errors import UserError
from servestack.fsutil import write_atomic

from .base import CLOUD_TITLES, CatalogError, Gpu, Instance, PriceRow
from .fetching import DEFAULT_THRESHOLD_PCT, FetchContext, RefreshOptions
from .files import DATA_DIR, read_instances, read_rows, render
from .loader import cloud_rows, load_gpus, user_dir
from .registry import provider

if TYPE_CHECKING:
    from .http import Http

INSTANCES_FILE = DATA_DIR / "instances.csv"
SHRINK_LIMIT = 0.5  # refuse a file with fewer than this share of the current rows, unless forced


def load_facts(cloud: str, path: Path = INSTANCES_FILE) -> dict[str, Instance]:
    """instances.csv for one cloud; a broken line is a UserError naming file, line, column."""
    try:
        return read_instances(path, cloud)
    except CatalogError as exc:
        raise UserError(str(exc)) from None


# --- diff ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PriceChange:
    instance_type: str
    where: str
    kind: str  # "on-demand" | "spot"
    old: float
    new: float

    @property
    def percent(self) -> float:
        return (self.new - self.old) / self.old * 100.0

    def line(self) -> str:
        return (f"{self.instance_type} {self.where} {self.kind}: ${self.old:.4f} -> "
                f"${self.new:.4f} ({self.percent:+.1f}%)")


@dataclass
class Diff:
    before: int
    after: int
    added_types: list[str]
    removed_types: list[str]
    added_offers: int
    removed_offers: int
    changes: list[PriceChange]
    threshold_pct: float

    def lines(self, cloud: str, limit: int = 10) -> list[str]:
        out = [f"{cloud}: {self.before} rows -> {self.after} rows "
               f"(+{self.added_offers} / -{self.removed_offers} offers)"]
        if self.added_types:
            out.append(f"  instance types added: {', '.join(self.added_types)}")
        if self.removed_types:
            out.append(f"  instance types removed: {', '.join(self.removed_types)}")
        label = f"  price changes beyond {self.threshold_pct:g}%: {len(self.changes)}"
        out.append(label)
        ranked = sorted(self.changes, key=lambda c: (-abs(c.percent), c.instance_type, c.where))
        out.extend(f"    {c.line()}" for c in ranked[:limit])
        if len(ranked) > limit:
            out.append(f"    ... and {len(ranked) - limit} more")
        return out


def compute_diff(before: list[PriceRow], after: list[PriceRow],
                 threshold_pct: float = DEFAULT_THRESHOLD_PCT) -> Diff:
    old = {r.key: r for r in before}
    new = {r.key: r for r in after}
    old_types = {r.instance_type for r in before}
    new_types = {r.instance_type for r in after}
    changes = []
    for key in sorted(old.keys() & new.keys()):
        was, now = old[key], new[key]
        where = " ".join(p for p in (was.region, was.zone) if p)
        for kind, a, b in (("on-demand", was.price, now.price),
                           ("spot", was.spot_price, now.spot_price)):
            if a and b and abs(b - a) / a * 100.0 > threshold_pct:
                changes.append(PriceChange(was.instance_type, where, kind, a, b))
    return Diff(before=len(before), after=len(after),
                added_types=sorted(new_types - old_types),
                removed_types=sorted(old_types - new_types),
                added_offers=len(new.keys() - old.keys()),
                removed_offers=len(old.keys() - new.keys()),
                changes=changes, threshold_pct=threshold_pct)


# --- guarded write -------------------------------------------------------------------------------

@dataclass
class Outcome:
    """What happened (or would happen, in a dry run) to one cloud's file."""

    cloud: str
    path: Path
    text: str
    diff: Diff
    notes: list[str]
    written: bool = False

    def lines(self, limit: int = 10) -> list[str]:
        verb = "wrote" if self.written else "would write"
        out = self.diff.lines(self.cloud, limit)
        out.extend(f"  note: {n}" for n in self.notes)
        out.append(f"  {verb} {self.path}")
        return out


def prepare(cloud: str, directory: Path, rows: list[PriceRow], header: list[str], *,
            scope: frozenset[str] | None = None, force: bool = False,
            threshold_pct: float = DEFAULT_THRESHOLD_PCT, notes: list[str] | None = None,
            previous: list[PriceRow] | None = None) -> Outcome:
    """Merge, guard, validate and diff one cloud's new rows; nothing is written yet.

    `previous` (default: the rows in use) is what the diff compares with; `scope` None replaces
    the whole file, otherwise only rows in those regions are replaced and the others kept.
    """
    gpus = load_gpus(directory)
    if previous is None:
        previous = read_previous(directory, cloud, gpus, force)
    in_scope = [r for r in previous if scope is None or r.region in scope]
    kept = [] if scope is None else [r for r in previous if r.region not in scope]
    _guard(cloud, len(in_scope), len(rows), force)
    merged = kept + rows
    text = render(merged, header)
    check_loadable(cloud, text, gpus)
    return Outcome(cloud, directory / f"{cloud}.csv", text,
                   compute_diff(previous, merged, threshold_pct), list(notes or []))


def write_outcomes(outcomes: list[Outcome], directory: Path) -> None:
    """Write each prepared file atomically."""
    try:
        for outcome in outcomes:
            write_atomic(outcome.path, outcome.text)
            outcome.written = True
    except OSError as exc:
        raise UserError(f"cannot write the catalog in {directory}: "
                        f"{exc.strerror or exc}") from None


def read_previous(directory: Path, cloud: str, gpus: dict[str, Gpu],
                  force: bool = False) -> list[PriceRow]:
    """The rows in use for `cloud` (see loader.cloud_rows); [] with --force if they are broken."""
    try:
        return cloud_rows(cloud, gpus, _named(directory))[1]
    except CatalogError as exc:
        if force:
            return []
        raise UserError(f"the current {cloud} catalog is broken ({exc}); "
                        "re-run with --force to replace it") from None


def check_loadable(cloud: str, text: str, gpus: dict[str, Gpu]) -> None:
    """Load the new file the way the planner will, from a scratch file; fail before writing."""
    with tempfile.TemporaryDirectory(prefix="servestack-catalog-") as scratch:
        path = Path(scratch) / f"{cloud}.csv"
        path.write_text(text, encoding="utf-8")
        try:
            provider(cloud).offers(read_rows(path, gpus), gpus)
        except CatalogError as exc:
            message = str(exc).replace(str(path), f"new {cloud}.csv")
            raise UserError(f"{cloud}: the new catalog does not load, nothing written: "
                            f"{message}") from None


def _named(directory: Path) -> Path | None:
    """The folder as the loader should read it: None for the default user folder (layered)."""
    return None if directory == user_dir() else directory


def _guard(cloud: str, before: int, after: int, force: bool) -> None:
    if force:
        return
    if after == 0:
        raise UserError(f"{cloud}: the source gave no priced offers; refusing to write an empty "
                        "catalog (re-run with --force to write it anyway)")
    if before and after < SHRINK_LIMIT * before:
        raise UserError(f"{cloud}: the new catalog has {after} rows where the current one has "
                        f"{before} (less than {SHRINK_LIMIT:.0%}); the source may be incomplete "
                        "(re-run with --force to write it anyway)")


# --- refresh -------------------------------------------------------------------------------------

@dataclass
class Refreshed:
    outcomes: list[Outcome]
    skipped: list[str] = field(default_factory=list)  # "cloud: why", for clouds not fetched


def refresh(options: RefreshOptions, http: Http, today: str | None = None) -> Refreshed:
    """Fetch every requested cloud, then write them all (unless a dry run)."""
    directory = user_dir(options.catalog_dir)
    if options.regions and len(options.clouds) != 1:
        raise UserError("--regions needs --cloud (region names differ per cloud)")
    clouds, skipped = _fetchable(options)
    all_regions = options.regions == ("all",)
    explicit = None if options.regions is None or all_regions else frozenset(options.regions)
    gpus = load_gpus(directory)
    outcomes = []
    for cloud in clouds:
        previous = read_previous(directory, cloud, gpus, options.force)
        ctx = FetchContext(http=http, facts=load_facts(cloud),
                           known=previous or _shipped_rows(cloud, gpus), regions=explicit,
                           all_regions=all_regions, today=today or date.today().isoformat())
        http.fetched_at.clear()
        result = provider(cloud).fetch(ctx, options)
        day = http.data_date() or ctx.today
        rows = [replace(r, date=day) for r in result.rows]
        header = _header(cloud, result.source, day)
        outcomes.append(prepare(cloud, directory, rows, header, scope=explicit,
                                force=options.force, threshold_pct=options.threshold_pct,
                                notes=result.notes, previous=previous))
    if not options.dry_run:
        write_outcomes(outcomes, directory)
    return Refreshed(outcomes, skipped)


def _fetchable(options: RefreshOptions) -> tuple[list[str], list[str]]:
    """The clouds to fetch, and why the others were skipped. A cloud asked for alone fails."""
    clouds, skipped = [], []
    for cloud in options.clouds:
        missing = provider(cloud).missing_credentials(options)
        if missing and len(options.clouds) == 1:
            raise UserError(missing)
        if missing:
            skipped.append(f"{cloud}: skipped: {missing}")
        else:
            clouds.append(cloud)
    return clouds, skipped


def _shipped_rows(cloud: str, gpus: dict[str, Gpu]) -> list[PriceRow]:
    """The catalog shipped with servestack: where zones come from for a fresh folder."""
    path = DATA_DIR / f"{cloud}.csv"
    try:
        return read_rows(path, gpus) if path.exists() else []
    except CatalogError:
        return []


def _header(cloud: str, source: str, day: str) -> list[str]:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
    return [
        f"{CLOUD_TITLES[cloud]} GPU offers for servestack, written by `servestack catalog refresh` "
        f"at {stamp}.",
        f"Source: {source}.",
        f"date = {day}, the day the prices were downloaded. Hardware columns come from "
        "catalog/instances.csv; zones from the previous catalog (empty zone = priced for the "
        "region, zone unknown).",
        "Empty price/spot_price = the source has no price for it.",
    ]
