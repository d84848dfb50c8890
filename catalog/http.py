"""The one HTTP client for price downloads: timeouts, retries with backoff on 429/5xx/timeouts
(honouring Retry-After), an on-disk cache with a TTL, and a progress line on stderr.

What a price list means is the per-cloud modules' business, not this one's. Only refresh imports
this module, so planning never loads `requests`.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlencode, urlsplit

import requests

from servestack.errors import UserError
from servestack.fsutil import write_atomic

ENV_CACHE_DIR = "SERVESTACK_CACHE_DIR"
DEFAULT_CACHE_TTL_HOURS = 6.0
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 4
MAX_WAIT_SECONDS = 60.0
CHUNK_BYTES = 1 << 20
USER_AGENT = "servestack-catalog-refresh"
_KEY_PARAM = re.compile(r"(?i)\b(key|api_key|apikey)=[^&\s'\"]+")



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
    return urlsplit(url).netloc or url


def _size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB"
