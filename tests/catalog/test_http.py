"""The price-download client against a real HTTP server on 127.0.0.1: retries, Retry-After,
errors as one line, malformed JSON, timeouts, the TTL cache, progress and API-key redaction."""

from __future__ import annotations

import io
import socket
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import pytest
from servestack.catalog.http import Http, Progress, redact, retry_after

from servestack.errors import UserError
from tests.fixtures.catalog import fake_api as fake

Reply = fake.Reply


@pytest.fixture
def api():
    server = fake.FakeApi().start()
    yield server
    server.stop()


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def http(tmp_path, sleeps):
    return Http(timeout=0.5, retries=3, backoff=0.01, cache_dir=tmp_path / "cache",
                sleep=sleeps.append)


def test_429_then_success_honours_retry_after(api, http, sleeps):
    api.sequence("/p", [Reply.json({"busy": True}, 429, **{"Retry-After": "7"}),
                        Reply.json({"ok": 1})])
    assert http.get_json(f"{api.url}/p") == {"ok": 1}
    assert sleeps == [7.0]
    assert len(api.hits("/p")) == 2


def test_5xx_is_retried_with_exponential_backoff(api, http, sleeps):
    api.sequence("/p", [Reply(500, "oops"), Reply(503, "later"), Reply.json([1, 2])])
    assert http.get_json(f"{api.url}/p") == [1, 2]
    assert sleeps == [0.01, 0.02]


def test_retry_after_is_capped(api, tmp_path, sleeps):
    client = Http(timeout=0.5, retries=1, backoff=0.01, max_wait=2.0,
                  cache_dir=tmp_path, sleep=sleeps.append)
    api.sequence("/p", [Reply(429, "", {"Retry-After": "3600"}), Reply.json({})])
    client.get_json(f"{api.url}/p")
    assert sleeps == [2.0]


def test_persistent_500_gives_one_clear_line(api, http):
    api.reply("/p", Reply(500, "<html>Internal Server Error</html>"))
    with pytest.raises(UserError) as info:
        http.get_json(f"{api.url}/p", label="Azure prices page 1")
    message = str(info.value)
    assert message.startswith("Azure prices page 1: HTTP 500 from 127.0.0.1:")
    assert "gave up after 4 attempts" in message and "\n" not in message
    assert len(api.hits("/p")) == 4


def test_client_error_is_not_retried_and_names_the_reason(api, http):
    api.reply("/p", Reply.json({"error": {"code": 404, "message": "Service not found"}}, 404))
    with pytest.raises(UserError, match=r"answered HTTP 404: Service not found"):
        http.get_json(f"{api.url}/p")
    assert len(api.hits("/p")) == 1


def test_malformed_json_is_one_line_and_not_cached(api, http):
    api.sequence("/p", [Reply(200, '{"Items": [1, 2', {"Content-Type": "application/json"}),
                        Reply.json({"Items": []})])
    with pytest.raises(UserError, match=r"^GCP page: the response is not valid JSON \("):
        http.get_json(f"{api.url}/p", label="GCP page")
    assert http.get_json(f"{api.url}/p", label="GCP page") == {"Items": []}


def test_timeout_is_reported_after_the_retries(api, tmp_path, sleeps):
    client = Http(timeout=0.3, retries=1, backoff=0.01, cache_dir=tmp_path, sleep=sleeps.append)
    api.reply("/slow", Reply(200, "{}", delay=2.0))
    started = time.monotonic()
    with pytest.raises(UserError, match=r"no answer within 0.3 s .*gave up after 2 attempts"):
        client.get_json(f"{api.url}/slow", label="slow")
    assert time.monotonic() - started < 1.5
    assert sleeps == [0.01]


def test_unreachable_server_is_one_line(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = Http(timeout=0.5, retries=0, cache_dir=tmp_path)
    with pytest.raises(UserError) as info:
        client.get_json(f"http://127.0.0.1:{port}/x", label="AWS spot price feed")
    assert str(info.value).startswith("AWS spot price feed: connection failed (")
    assert "gave up after 1 attempt)" in str(info.value)


def test_api_key_never_appears_in_errors_or_cache_names(api, http, tmp_path):
    api.reply("/skus", Reply.json({"error": {"message": "API key not valid. Please pass a "
                                              "valid API key."}}, 400))
    with pytest.raises(UserError) as info:
        http.get_json(f"{api.url}/skus", params={"key": "SECRET123", "pageSize": 5000})
    assert "SECRET123" not in str(info.value)
    assert "key=REDACTED" in str(info.value) and "API key not valid" in str(info.value)
    api.reply("/skus", Reply.json({"skus": []}))
    http.get_json(f"{api.url}/skus", params={"key": "SECRET123"})
    stored = list((tmp_path / "cache").rglob("*"))
    assert stored and not any("SECRET123" in p.name or "SECRET123" in _read(p) for p in stored)


def test_cache_serves_fresh_copies_and_refetches_stale_ones(api, tmp_path):
    api.reply("/p", Reply.json({"n": 1}))
    fresh = Http(timeout=0.5, cache_dir=tmp_path, cache_ttl_hours=1)
    assert fresh.get_json(f"{api.url}/p", params={"a": "1"}) == {"n": 1}
    assert fresh.get_json(f"{api.url}/p", params={"a": "1"}) == {"n": 1}
    assert len(api.hits("/p")) == 1
    fresh.get_json(f"{api.url}/p", params={"a": "2"})  # other parameters, other entry
    assert len(api.hits("/p")) == 2
    stale = Http(timeout=0.5, cache_dir=tmp_path, cache_ttl_hours=0)
    stale.get_json(f"{api.url}/p", params={"a": "1"})
    assert len(api.hits("/p")) == 3


def test_damaged_cache_entry_is_fetched_again(api, tmp_path):
    api.reply("/p", Reply.json({"n": 2}))
    client = Http(timeout=0.5, cache_dir=tmp_path)
    client.get_json(f"{api.url}/p")
    for entry in (tmp_path / "prices").glob("*.json"):
        entry.write_text("{broken")
    assert client.get_json(f"{api.url}/p") == {"n": 2}
    assert len(api.hits("/p")) == 2


def test_download_streams_to_the_cache_with_progress(api, tmp_path):
    body = b"x" * 2_500_000
    api.reply("/big.csv", Reply(200, body, {"Content-Type": "text/csv"}))
    stderr = io.StringIO()
    client = Http(timeout=0.5, cache_dir=tmp_path, progress=Progress(stderr))
    path = client.download(f"{api.url}/big.csv", label="AWS us-east-1 price list")
    assert path.read_bytes() == body
    assert "AWS us-east-1 price list: 2.5 MB downloaded" in stderr.getvalue()
    assert client.download(f"{api.url}/big.csv", label="again") == path
    assert len(api.hits("/big.csv")) == 1
    assert not list(tmp_path.rglob("*.part"))


def test_progress_rewrites_one_line_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    progress = Progress(out, interval=0)
    progress.update("page 1")
    progress.update("page 2")
    progress.done("2 pages")
    assert out.getvalue().startswith("\rpage 1") and out.getvalue().endswith("\r2 pages\n")
    quiet = io.StringIO()
    Progress(quiet, enabled=False).done("x")
    assert quiet.getvalue() == ""


def test_retry_after_accepts_seconds_and_http_dates():
    assert retry_after("12") == 12.0
    assert retry_after(None) is None and retry_after("soon") is None
    when = datetime.now(timezone.utc) + timedelta(seconds=30)
    assert 25 <= retry_after(format_datetime(when, usegmt=True)) <= 30


def test_redact_hides_keys():
    assert redact("https://x/skus?key=abc&pageToken=t") == "https://x/skus?key=REDACTED&pageToken=t"


def test_data_date_is_the_oldest_response(api, tmp_path):
    api.reply("/p", Reply.json({}))
    client = Http(timeout=0.5, cache_dir=tmp_path)
    assert client.data_date() is None
    client.get_json(f"{api.url}/p")
    assert client.data_date() == datetime.now(timezone.utc).date().isoformat()


def _read(path: Path) -> str:
    try:
        return path.read_text() if path.is_file() else ""
    except UnicodeDecodeError:
        return ""
