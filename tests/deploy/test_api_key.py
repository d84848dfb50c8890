"""The deploy loop's readiness probe and the service's API key: the key comes from the stack's
outputs (in memory), rides every probe as `Authorization: Bearer`, and is written nowhere:
not in the journal, the report or a progress line."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from servestack.deploy.journal import Journal
from servestack.deploy.loop import Fallback, Settings, default_probe_factory
from servestack.deploy.readiness import ProbeAnswer, with_api_key
from servestack.deployment.model import OUTPUT_API_KEY
from tests.fakes import PLAN, Cloud, ReplayEngine, SimClock, build

KEY = "sk-FAKEloopKeyMustNeverLeak0123456789"


class KeyedEngine(ReplayEngine):
    """A stack whose outputs carry the API key, as both real engines' do."""

    def __init__(self, *args, in_up: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.in_up = in_up
        self.asked: list[str] = []

    def up(self, stack, deployment, **kwargs):
        result = super().up(stack, deployment, **kwargs)
        if result.ok and self.in_up:
            result.outputs[OUTPUT_API_KEY] = KEY
        return result

    def outputs(self, stack, deployment) -> dict:
        self.asked.append(stack.name)
        return {OUTPUT_API_KEY: KEY, "endpoint": f"http://{stack.name}.lb.example"}


def keyed_probes(seen: list[dict]):
    """Answers 200 (one replica per probe) only when the probe carries the key."""

    def factory(endpoint, deployment):
        turn = iter(range(10**9))

        def probe() -> ProbeAnswer:
            seen.append(dict(deployment.readiness.headers))
            if deployment.readiness.headers.get("Authorization") != f"Bearer {KEY}":
                return ProbeAnswer(False, 401, None, "HTTP 401")
            return ProbeAnswer(True, 200, f"replica-{next(turn) % 2}")

        return probe

    return factory


def run(tmp_path, engine, build_with=build):
    seen: list[dict] = []
    lines: list[str] = []
    journal = Journal.open(tmp_path, "mixtral")
    outcome = Fallback(engine, journal, PLAN.candidates, build_with, clock=engine.clock,
                       settings=Settings(), progress=lines.append,
                       probe_factory=keyed_probes(seen)).run()
    return outcome, seen, lines


def test_the_probe_sends_the_key_from_up_and_nothing_keeps_it(tmp_path):
    clock = SimClock()
    engine = KeyedEngine(Cloud(), clock, ready_in=0)
    outcome, seen, lines = run(tmp_path, engine)
    assert outcome.status == "deployed", outcome.message
    assert seen and all(h["Authorization"] == f"Bearer {KEY}" for h in seen)
    assert engine.asked == []  # up's outputs had it
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "journal.json" for p in files)
    assert not any(KEY in p.read_text() for p in files)
    assert KEY not in json.dumps(outcome.to_json()) + "\n".join(lines)


def test_a_resumed_probe_reads_the_key_from_the_stack(tmp_path):
    """After a restart the key is not in memory any more: the loop asks the engine."""
    engine = KeyedEngine(Cloud(), SimClock(), ready_in=0, in_up=False)
    outcome, seen, _ = run(tmp_path, engine)
    assert outcome.status == "deployed", outcome.message
    assert engine.asked == [outcome.to_json()["attempts"][0]["stack"]]
    assert seen[0]["Authorization"] == f"Bearer {KEY}"


def test_without_a_key_no_header_and_no_question(tmp_path):
    engine = KeyedEngine(Cloud(), SimClock(), ready_in=0, in_up=False)

    def keyless(candidate, pool):
        return replace(build(candidate, pool), api_key=None)

    outcome, seen, _ = run(tmp_path, engine, keyless)
    assert outcome.status == "stopped"  # 401s: two candidates never ready, the loop stops
    assert seen and not any("Authorization" in h for h in seen)
    assert engine.asked == []


def test_with_api_key_replaces_a_spec_authorization_header():
    readiness = build(PLAN.candidates[0], PLAN.candidates).readiness
    readiness = replace(readiness, headers={"authorization": "Bearer old", "X-A": "1"})
    keyed = with_api_key(readiness, KEY)
    assert keyed.headers == {"X-A": "1", "Authorization": f"Bearer {KEY}"}
    assert readiness.headers["authorization"] == "Bearer old"  # the original is untouched
    assert with_api_key(readiness, None) is readiness


class _Service(BaseHTTPRequestHandler):
    """vLLM's rule: /v1 paths need the Bearer key."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        ok = self.headers.get("Authorization") == f"Bearer {KEY}"
        self.send_response(200 if ok else 401)
        self.send_header("X-Servestack-Replica", "vm-1")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def service():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Service)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_the_default_probe_sends_the_header_over_http(service):
    d = build(PLAN.candidates[0], PLAN.candidates)
    assert d.readiness.method == "POST"
    factory = default_probe_factory()
    keyed = replace(d, readiness=with_api_key(d.readiness, KEY))
    assert factory(service, keyed)() == ProbeAnswer(True, 200, "vm-1")
    assert factory(service, d)() == ProbeAnswer(False, 401, "vm-1", "HTTP 401")

