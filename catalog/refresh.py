"""Rebuild the catalog from the clouds' own price lists, and never leave a broken one behind.

`refresh()` asks one fetcher per cloud (aws_prices, gcp_prices, azure_prices) for priced rows,
joins nothing itself (the fetchers join prices with the instance facts in instances.csv), then for
each cloud: checks that the new file loads, refuses a much smaller or empty file unless forced,
computes a diff against the current file, and writes every cloud atomically once all clouds were
fetched. `write_rows()` is the same guarded writer for `import-skypilot`.

`Http` is the one HTTP client: timeouts, retries with backoff on 429/5xx/timeouts (honouring
Retry-After), an on-disk cache with a TTL, and a progress line on stderr for long downloads.
"""

from __future__ import annotations

import csv
import email.utils
import hashlib
import io
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlencode

import requests

from servestack.errors import UserError
from servestack.fsutil import write_atomic

from . import (
    CLOUD_TITLES,
    CLOUDS,
    COLUMNS,
    DATA_DIR,
    CatalogError,
    Row,
    catalog_dir,
    load_catalog,
    load_gpus,
    read_rows,
    records,
)

INSTANCES_FILE = DATA_DIR / "instances.csv"
FACT_COLUMNS = ("cloud", "instance_type", "accelerator", "accelerator_count", "gpu_memory_mib",
                "vcpus", "memory_gib")
SHARED_FILES = ("gpus.csv", "regions.csv")
ENV_CACHE_DIR = "SERVESTACK_CACHE_DIR"
DEFAULT_CACHE_TTL_HOURS = 6.0
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 4
DEFAULT_THRESHOLD_PCT = 5.0
SHRINK_LIMIT = 0.5  # refuse a file with fewer than this share of the current rows, unless forced
MAX_WAIT_SECONDS = 60.0
CHUNK_BYTES = 1 << 20
USER_AGENT = "servestack-catalog-refresh"
_KEY_PARAM = re.compile(r"(?i)\b(key|api_key|apikey)=[^&\s'\"]+")


# --- rows and facts ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Fact:
    """What one instance type carries (a line of instances.csv)."""

    cloud: str
    instance_type: str
    accelerator: str | None
    accelerator_count: int | None
    gpu_memory_mib: int | None
    vcpus: int | None
    memory_gib: float | None


@dataclass(frozen=True, slots=True)
class PriceRow(Row):
    """One line of a cloud CSV as a refresh or an import builds it (the loader's `Row`)."""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.instance_type, self.region, self.zone or "")

    @classmethod
    def from_fact(cls, fact: Fact, region: str, zone: str | None, price: float | None,
                  spot_price: float | None, source: str, day: str) -> PriceRow:
        return cls(fact.instance_type, fact.accelerator, fact.accelerator_count,
                   fact.gpu_memory_mib, fact.vcpus, fact.memory_gib, region, zone,
                   clean_price(price), clean_price(spot_price), source, day)

    def values(self) -> list[str]:
        return [self.instance_type, self.accelerator or "", _text(self.accelerator_count),
                _text(self.gpu_memory_mib), _text(self.vcpus), _text(self.memory_gib),
                self.region, self.zone or "", _text(self.price), _text(self.spot_price),
                self.source, self.date]


@dataclass
class FetchResult:
    """What a fetcher returns: rows, the source line for the file header, and notes for the user."""

    rows: list[PriceRow]
    source: str
    notes: list[str] = field(default_factory=list)


@dataclass
class FetchContext:
    """What a fetcher needs. `regions` None = no filter; `all_regions` = the user asked for all."""

    http: Http
    facts: dict[str, Fact]
    known: list[PriceRow]
    regions: frozenset[str] | None = None
    all_regions: bool = False
    today: str = ""
    _zones: dict[tuple[str, str], list[str]] | None = field(default=None, repr=False)

    def zones(self, instance_type: str, region: str) -> list[str | None]:
        """Zones the current catalog lists for a type in a region; [None] when it lists none."""
        if self._zones is None:
            self._zones = group_zones(self.known)
        return list(self._zones.get((instance_type, region), [])) or [None]

    def wants(self, region: str) -> bool:
        return self.regions is None or region in self.regions


def clean_price(value: float | None) -> float | None:
    """Round to 6 decimals; a missing, non-finite or zero price is None (the loader rejects 0)."""
    if value is None or not math.isfinite(value) or value <= 0:
        return None
    rounded = round(value, 6)
    return rounded if rounded > 0 else None


def load_facts(cloud: str, path: Path = INSTANCES_FILE) -> dict[str, Fact]:
    facts: dict[str, Fact] = {}
    try:
        lines = list(records(path, FACT_COLUMNS))
    except CatalogError as exc:
        raise UserError(str(exc)) from None
    for line, record in lines:
        record = {k: v.strip() for k, v in record.items()}
        if record["cloud"] != cloud:
            continue
        try:
            fact = Fact(cloud, record["instance_type"], record["accelerator"] or None,
                        _opt_int(record["accelerator_count"]), _opt_int(record["gpu_memory_mib"]),
                        _opt_int(record["vcpus"]), _opt_float(record["memory_gib"]))
        except ValueError as exc:
            raise UserError(f"{path}:{line}: {exc}") from None
        facts[fact.instance_type] = fact
    if not facts:
        raise UserError(f"{path}: no instance facts for {cloud}")
    return facts


def rows_from_file(path: Path, gpus_path: Path) -> list[PriceRow]:
    """Read a cloud CSV with the catalog's own validation."""
    rows = read_rows(path, load_gpus(gpus_path))
    return [PriceRow(r.instance_type, r.accelerator, r.accelerator_count, r.gpu_memory_mib,
                     r.vcpus, r.memory_gib, r.region, r.zone, r.price, r.spot_price, r.source,
                     r.date, r.where) for r in rows]


def render(rows: list[PriceRow], header: list[str]) -> str:
    out = io.StringIO()
    for line in header:
        out.write(f"# {line}\n")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in sorted(rows, key=lambda r: r.key):
        writer.writerow(row.values())
    return out.getvalue()


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

    `scope` None replaces the whole file; otherwise only rows in those regions are replaced.
    """
    path = directory / f"{cloud}.csv"
    if previous is None:
        previous = read_previous(directory, cloud, force)
    in_scope = [r for r in previous if scope is None or r.region in scope]
    kept = [] if scope is None else [r for r in previous if r.region not in scope]
    _guard(cloud, len(in_scope), len(rows), force)
    merged = kept + rows
    text = render(merged, header)
    check_loadable(cloud, text, directory)
    return Outcome(cloud, path, text, compute_diff(previous, merged, threshold_pct),
                   list(notes or []))


def write_outcomes(outcomes: list[Outcome], directory: Path) -> None:
    """Write each prepared file atomically; copy gpus.csv/regions.csv into a fresh folder."""
    try:
        for name in SHARED_FILES:
            if not (directory / name).exists():
                directory.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(DATA_DIR / name, directory / name)
        for outcome in outcomes:
            write_atomic(outcome.path, outcome.text)
            outcome.written = True
    except OSError as exc:
        raise UserError(f"cannot write the catalog in {directory}: "
                        f"{exc.strerror or exc}") from None


def read_previous(directory: Path, cloud: str, force: bool = False) -> list[PriceRow]:
    path = directory / f"{cloud}.csv"
    if not path.exists():
        return []
    try:
        return rows_from_file(path, gpus_path(directory))
    except CatalogError as exc:
        if force:
            return []
        raise UserError(f"the current {cloud} catalog is broken ({exc}); "
                        "re-run with --force to replace it") from None


def gpus_path(directory: Path) -> Path:
    local = directory / "gpus.csv"
    return local if local.exists() else DATA_DIR / "gpus.csv"


def check_loadable(cloud: str, text: str, directory: Path) -> None:
    """Load the new file the way the planner will, from a scratch folder; fail before writing."""
    with tempfile.TemporaryDirectory(prefix="servestack-catalog-") as scratch:
        shutil.copyfile(gpus_path(directory), Path(scratch) / "gpus.csv")
        (Path(scratch) / f"{cloud}.csv").write_text(text, encoding="utf-8")
        try:
            load_catalog(scratch, clouds=(cloud,))
        except CatalogError as exc:
            message = str(exc).replace(str(Path(scratch) / f"{cloud}.csv"), f"new {cloud}.csv")
            raise UserError(f"{cloud}: the new catalog does not load, nothing written: "
                            f"{message}") from None


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
class RefreshOptions:
    clouds: tuple[str, ...] = CLOUDS
    regions: tuple[str, ...] | None = None  # ("all",) = every region the source prices
    catalog_dir: str | os.PathLike | None = None
    force: bool = False
    dry_run: bool = False
    threshold_pct: float = DEFAULT_THRESHOLD_PCT
    urls: dict[str, str | None] = field(default_factory=dict)  # aws, aws_spot, gcp, azure
    aws_spot: str = "auto"
    aws_format: str = "csv"
    gcp_api_key: str | None = None


def refresh(options: RefreshOptions, http: Http, today: str | None = None) -> list[Outcome]:
    """Fetch every requested cloud, then write them all (unless a dry run)."""
    directory = catalog_dir(options.catalog_dir)
    if options.regions and len(options.clouds) != 1:
        raise UserError("--regions needs --cloud (region names differ per cloud)")
    if "gcp" in options.clouds:
        from . import gcp_prices

        gcp_prices.require_key(options.urls.get("gcp"), options.gcp_api_key)
    all_regions = options.regions == ("all",)
    explicit = None if options.regions is None or all_regions else frozenset(options.regions)
    outcomes = []
    for cloud in options.clouds:
        previous = read_previous(directory, cloud, options.force)
        ctx = FetchContext(http=http, facts=load_facts(cloud),
                           known=previous or _packaged_rows(cloud), regions=explicit,
                           all_regions=all_regions, today=today or date.today().isoformat())
        http.fetched_at.clear()
        result = _fetch(cloud, ctx, options)
        day = http.data_date() or ctx.today
        rows = [replace(r, date=day) for r in result.rows]
        header = _header(cloud, result.source, day)
        outcomes.append(prepare(cloud, directory, rows, header, scope=explicit,
                                force=options.force, threshold_pct=options.threshold_pct,
                                notes=result.notes, previous=previous))
    if not options.dry_run:
        write_outcomes(outcomes, directory)
    return outcomes


def _fetch(cloud: str, ctx: FetchContext, options: RefreshOptions) -> FetchResult:
    urls = options.urls
    if cloud == "aws":
        from . import aws_prices

        return aws_prices.fetch(ctx, base_url=urls.get("aws"), spot_url=urls.get("aws_spot"),
                                spot_mode=options.aws_spot, offer_format=options.aws_format)
    if cloud == "gcp":
        from . import gcp_prices

        return gcp_prices.fetch(ctx, base_url=urls.get("gcp"), api_key=options.gcp_api_key)
    if cloud == "azure":
        from . import azure_prices

        return azure_prices.fetch(ctx, base_url=urls.get("azure"))
    raise UserError(f"unknown cloud {cloud!r} (known: {', '.join(CLOUDS)})")


def _packaged_rows(cloud: str) -> list[PriceRow]:
    """The catalog shipped with servestack: where zones come from for a fresh folder."""
    path = DATA_DIR / f"{cloud}.csv"
    try:
        return rows_from_file(path, DATA_DIR / "gpus.csv") if path.exists() else []
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


# --- HTTP ----------------------------------------------------------------------------------------

class Progress:
    """One status line on stderr: rewritten in place on a terminal, printed once when done else."""

    def __init__(self, stream: TextIO | None = None, enabled: bool = True,
                 interval: float = 0.2) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.interval = interval
        self._last = 0.0
        self._width = 0
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, text: str) -> None:
        now = time.monotonic()
        if not (self.enabled and self.tty) or now - self._last < self.interval:
            return
        self._last = now
        self._write("\r" + text.ljust(self._width))
        self._width = max(self._width, len(text))

    def done(self, text: str) -> None:
        if not self.enabled:
            return
        prefix = "\r" if self.tty else ""
        self._write(prefix + text.ljust(self._width if self.tty else 0) + "\n")
        self._width = 0

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


class Http:
    """GET with timeouts, retries (429, 5xx, timeouts, dropped connections) and a TTL cache."""

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT, retries: int = DEFAULT_RETRIES,
                 backoff: float = 1.0, max_wait: float = MAX_WAIT_SECONDS,
                 cache_dir: str | os.PathLike | None = None,
                 cache_ttl_hours: float = DEFAULT_CACHE_TTL_HOURS,
                 progress: Progress | None = None, session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.max_wait = max_wait
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.cache_ttl = cache_ttl_hours * 3600.0
        self.progress = progress or Progress(enabled=False)
        self.session = session or requests.Session()
        self.session.headers.setdefault("User-Agent", USER_AGENT)
        self.sleep = sleep
        self.fetched_at: list[float] = []  # when each response used was downloaded

    def data_date(self) -> str | None:
        """The (UTC) day of the oldest response used, or None if nothing was fetched."""
        if not self.fetched_at:
            return None
        return datetime.fromtimestamp(min(self.fetched_at), timezone.utc).date().isoformat()

    def get_json(self, url: str, params: dict[str, Any] | None = None, label: str = "") -> Any:
        label = label or redact(url)
        path = self._cache_path(url, params, ".json")
        cached = self._fresh(path)
        if cached is not None:
            try:
                return json.loads(cached.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                pass  # a damaged cache entry is fetched again
        text = self._with_retries(url, params, label, stream=False, consume=lambda r: r.text)
        data = parse_json(text, label)
        self._store(path, text)
        return data

    def download(self, url: str, label: str = "") -> Path:
        """Stream a (large) file into the cache and return its path."""
        label = label or redact(url)
        path = self._cache_path(url, None, ".body")
        if self._fresh(path) is not None:
            self.progress.done(f"{label}: cached")
            return path
        part = path.with_suffix(".part")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            size = self._with_retries(url, None, label, stream=True,
                                      consume=lambda r: self._stream_to(r, part, label))
            os.replace(part, path)
        except OSError as exc:
            part.unlink(missing_ok=True)
            raise UserError(f"{label}: cannot write the download cache {path.parent}: "
                            f"{exc.strerror or exc}") from None
        self.fetched_at.append(time.time())
        self.progress.done(f"{label}: {_size(size)} downloaded")
        return path

    # internals

    def _with_retries(self, url: str, params: dict[str, Any] | None, label: str, *,
                      stream: bool, consume: Callable[[requests.Response], Any]) -> Any:
        problem = ""
        for attempt in range(self.retries + 1):
            wait = None
            try:
                response = self.session.get(url, params=params, timeout=self.timeout,
                                            stream=stream)
                with response:
                    if response.status_code == 429 or response.status_code >= 500:
                        problem = f"HTTP {response.status_code}"
                        wait = retry_after(response.headers.get("Retry-After"))
                    elif response.status_code >= 400:
                        raise UserError(f"{label}: {redact(response.url or url)} answered HTTP "
                                        f"{response.status_code}{api_message(response)}")
                    else:
                        return consume(response)
            except requests.Timeout:
                problem = f"no answer within {self.timeout:g} s"
            except requests.RequestException as exc:
                problem = f"connection failed ({_reason(exc)})"
            if attempt < self.retries:
                delay = wait if wait is not None else self.backoff * (2 ** attempt)
                self.progress.update(f"{label}: {problem}, retrying")
                self.sleep(min(delay, self.max_wait))
        tries = self.retries + 1
        raise UserError(f"{label}: {problem} from {_host(url)} "
                        f"(gave up after {tries} attempt{'s' if tries > 1 else ''})")

    def _stream_to(self, response: requests.Response, part: Path, label: str) -> int:
        total = int(response.headers.get("Content-Length") or 0)
        done = 0
        with open(part, "wb") as handle:
            for chunk in response.iter_content(CHUNK_BYTES):
                handle.write(chunk)
                done += len(chunk)
                share = f" of {_size(total)} ({done * 100 // total}%)" if total else ""
                self.progress.update(f"{label}: {_size(done)}{share}")
        return done

    def _cache_path(self, url: str, params: dict[str, Any] | None, suffix: str) -> Path:
        public = {k: v for k, v in sorted((params or {}).items()) if k.lower() != "key"}
        key = redact(url) + ("?" + urlencode(public) if public else "")
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]
        return self.cache_dir / "prices" / f"{digest}{suffix}"

    def _fresh(self, path: Path) -> Path | None:
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return None
        if time.time() - mtime > self.cache_ttl:
            return None
        self.fetched_at.append(mtime)
        return path

    def _store(self, path: Path, text: str) -> None:
        self.fetched_at.append(time.time())
        try:
            write_atomic(path, text, mode=0o600)
        except OSError as exc:
            self.progress.done(f"warning: cannot write the price cache {path}: {exc}")


def default_cache_dir() -> Path:
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "servestack"


def parse_json(text: str, label: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UserError(f"{label}: the response is not valid JSON ({exc})") from None


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def api_message(response: requests.Response) -> str:
    """A short reason from an error body (GCP/Azure JSON errors, else the first line of text)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    message = ""
    if isinstance(body, dict):
        error = body.get("error") or body.get("Error") or {}
        if isinstance(error, dict):
            message = str(error.get("message") or error.get("Message") or "")
    if not message:
        message = (response.text or "").strip().splitlines()[0] if response.text else ""
    message = redact(message)[:200]
    return f": {message}" if message else ""


def redact(text: str) -> str:
    """Hide API keys in URLs and messages."""
    return _KEY_PARAM.sub(lambda m: f"{m.group(1)}=REDACTED", text)


def _reason(exc: Exception) -> str:
    text = redact(str(exc))
    return text if len(text) <= 160 else text[:157] + "..."


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).netloc or url


def _size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB"


def _text(value: float | int | None) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    return f"{value:.6f}".rstrip("0").rstrip(".")


def _opt_int(value: str) -> int | None:
    return int(float(value)) if value.strip() else None


def _opt_float(value: str) -> float | None:
    return float(value) if value.strip() else None


def group_zones(rows: list[PriceRow]) -> dict[tuple[str, str], list[str]]:
    """(instance_type, region) -> zones listed, for callers that need them all at once."""
    zones: dict[tuple[str, str], set[str]] = defaultdict(set)
    for row in rows:
        if row.zone:
            zones[(row.instance_type, row.region)].add(row.zone)
    return {key: sorted(value) for key, value in zones.items()}
