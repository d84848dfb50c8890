"""Is the service ready? The spec's readiness probe, sent through the load balancer's endpoint.

A deploy succeeds only when at least `min_replicas` distinct replicas have answered the probe
(HTTP 200) through the endpoint within `initial_delay_seconds` of the stack being up. Each
replica names itself in the `X-Servestack-Replica` response header (a vLLM middleware the
bootstrap's default command loads); the load balancer spreads a burst of probes over the healthy
replicas, so distinct header values count distinct replicas. A spec's own `run` command may not
load it: when no answer carries the header, a burst in which every probe succeeded, with at
least `needed` VMs running in the group (the load balancer only routes to VMs passing its
health check), counts as `needed` replicas.

An autoscaled group is measured against min_replicas, never its desired size: the autoscaler
may have scaled it out (more VMs than desired is healthy) or not yet up to desired (healthy
once min answer); fewer than min running is a capacity failure (the deploy loop's group watch).

Every request has a timeout (the spec's timeout_seconds); no redirect is followed. Time goes
through a `Clock` (servestack.deploy.clock), so tests and the simulator run without sleeping.

With an API key (the stack's `api_key` output, read in memory from the engine), every probe
carries `Authorization: Bearer <key>`, as vLLM asks of every /v1 request: `with_api_key` puts
it in the probe's own copy of the readiness settings, which nothing writes, logs or puts on a
command line (errors name the exception, never the request's headers). With TLS the endpoint
output is already https://<domain>.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from servestack.deploy.clock import Clock
from servestack.deployment.model import Readiness

REPLICA_HEADER = "X-Servestack-Replica"
ANONYMOUS = "(unnamed replica)"
CONNECT_TIMEOUT_SECONDS = 5
PROBE_INTERVAL_SECONDS = 10


@dataclass(frozen=True, slots=True)
class ProbeAnswer:
    ok: bool
    status: int | None = None
    replica: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ReadyResult:
    ready: bool
    replicas: tuple[str, ...]
    needed: int
    probes: int
    successes: int
    elapsed_s: float
    last_error: str | None = None
    aborted: str | None = None

    def summary(self) -> str:
        text = (f"{len(self.replicas)} of {self.needed} replica(s) answered "
                f"({self.successes}/{self.probes} probes OK in {self.elapsed_s:.0f} s)")
        if not self.ready and self.last_error:
            text += f"; last error: {self.last_error}"
        return text


def with_api_key(readiness: Readiness, api_key: str | None) -> Readiness:
    """The probe as sent with the service's API key (unchanged without one). The copy lives
    only in the probe: the deployment the journal keeps has no key."""
    if not api_key:
        return readiness
    headers = {k: v for k, v in readiness.headers.items() if k.lower() != "authorization"}
    return replace(readiness, headers={**headers, "Authorization": f"Bearer {api_key}"})


def probe_url(endpoint: str, path: str) -> str:
    base = endpoint if "://" in endpoint else f"http://{endpoint}"
    return base.rstrip("/") + "/" + path.lstrip("/")


def http_probe(url: str, readiness: Readiness, session=None,
               header: str = REPLICA_HEADER) -> ProbeAnswer:
    """Send the spec's probe once (GET, or POST with its JSON body), with timeouts."""
    import requests

    http = session or requests
    headers = {**readiness.headers}
    body = None
    if readiness.method.upper() == "POST" and readiness.post_data is not None:
        headers.setdefault("Content-Type", "application/json")
        body = readiness.post_data
    try:
        response = http.request(readiness.method.upper(), url, data=body, headers=headers,
                                timeout=(CONNECT_TIMEOUT_SECONDS, readiness.timeout_seconds),
                                allow_redirects=False)
    except requests.RequestException as exc:
        return ProbeAnswer(False, error=f"{type(exc).__name__}: {exc}"[:200])
    replica = response.headers.get(header) or None
    if response.status_code != 200:
        return ProbeAnswer(False, response.status_code, replica, f"HTTP {response.status_code}")
    return ProbeAnswer(True, 200, replica)


def wait_ready(probe: Callable[[], ProbeAnswer], needed: int, *, deadline_s: float,
               clock: Clock, interval_s: float = PROBE_INTERVAL_SECONDS,
               on_progress: Callable[[ReadyResult], None] | None = None,
               abort: Callable[[], str | None] | None = None,
               instances: Callable[[], int | None] | None = None) -> ReadyResult:
    """Probe in bursts until `needed` distinct replicas answered or `deadline_s` has passed.

    `abort`, asked between rounds, may end the wait early with a reason (e.g. the group has
    no VM at all: no capacity)."""
    start = clock.now()
    seen: list[str] = []
    probes = successes = 0
    last_error = None
    burst = max(2 * needed, 2)
    while True:
        burst_ok = 0
        for _ in range(burst):
            answer = probe()
            probes += 1
            if answer.ok:
                successes += 1
                burst_ok += 1
                name = answer.replica or ANONYMOUS
                if name not in seen:
                    seen.append(name)
            else:
                last_error = answer.error
            if len(seen) >= needed:
                return _result(True, seen, needed, probes, successes, clock.now() - start, None)
        if _counted_by_group(seen, burst_ok == burst, needed, instances):
            return _result(True, [ANONYMOUS] * needed, needed, probes, successes,
                           clock.now() - start, None)
        result = _result(False, seen, needed, probes, successes, clock.now() - start, last_error)
        if on_progress:
            on_progress(result)
        reason = abort() if abort else None
        if reason:
            return replace(result, aborted=reason)
        if clock.now() - start + interval_s > deadline_s:
            return result
        clock.sleep(interval_s)


def _counted_by_group(seen: list[str], burst_ok: bool, needed: int,
                      instances: Callable[[], int | None] | None) -> bool:
    """Header-less answers: every probe of the burst OK and the group runs enough VMs."""
    if seen != [ANONYMOUS] or not burst_ok or instances is None:
        return False
    running = instances()
    return running is not None and running >= needed


def _result(ready: bool, seen: list[str], needed: int, probes: int, successes: int,
            elapsed: float, error: str | None) -> ReadyResult:
    return ReadyResult(ready, tuple(seen), needed, probes, successes, round(elapsed, 3), error)
