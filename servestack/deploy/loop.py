"""Deploy with fallback: walk the ranked candidates until one region of one cloud gives the GPUs.

For each candidate, in rank order, minus what earlier failures ruled out (`Block`s):

1. build its Deployment (the instance group also lists the other still-possible types of the
   same region), record the attempt in the journal, then `engine.up` with a per-attempt timeout;
2. up: probe the endpoint until `min_replicas` replicas answer, within initial_delay_seconds;
   ready -> deployed, the stack stays live, done;
3. failed: classify it (servestack.deploy.failures). Throttling and transient errors retry the same
   stack with exponential backoff. Anything else: clean up (refresh, destroy, check what is
   left in state and, by tags, in the cloud, import strays and destroy again, remove the stack),
   then block the scope the error rules out, or stop on an invalid configuration. A cleanup
   that cannot prove the candidate is gone stops the run and reports exactly what is left.

The journal is written before every step, so a run killed anywhere resumes: a stack that was
being created is cleaned and its candidate tried again, a stack that was up goes back to the
readiness probe, a cleanup is finished. No stack is started while another one is dirty, so at
most one candidate is ever live. Time goes through a Clock (tests and the simulator do not
sleep); the engine is anything with the `Engine` interface.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial

from servestack.deploy.failures import (
    Block,
    Failure,
    candidate_block,
    classify,
    group_capacity_failure,
    not_ready_failure,
    timeout_failure,
)
from servestack.deploy.journal import Journal
from servestack.deploy.readiness import (
    Clock,
    ProbeAnswer,
    ReadyResult,
    http_probe,
    probe_url,
    wait_ready,
)
from servestack.deployment.model import Deployment
from servestack.planner import Candidate
from servestack.pulumi.engine import Engine, Leftover, OpResult, StackRef, stack_ref

EXIT_DEPLOYED, EXIT_EXHAUSTED, EXIT_STOPPED, EXIT_CLEANUP_FAILED = 0, 3, 4, 5
EXIT_CODES = {"deployed": EXIT_DEPLOYED, "exhausted": EXIT_EXHAUSTED, "stopped": EXIT_STOPPED,
              "cleanup-failed": EXIT_CLEANUP_FAILED, "destroyed": EXIT_DEPLOYED}
BLOCKING_ON_TIMEOUT = ("capacity", "quota", "credentials", "permission")

Builder = Callable[[Candidate, list[Candidate]], Deployment]
ProbeFactory = Callable[[str, Deployment], Callable[[], ProbeAnswer]]
Classifier = Callable[[str, list[str], Candidate, tuple[str, ...]], Failure]


@dataclass
class Settings:
    max_attempts: int | None = None
    attempt_timeout_s: float = 1200.0
    retries: int = 3  # per candidate, for throttled/transient errors
    backoff_s: float = 30.0  # doubled on each retry
    cleanup_rounds: int = 3
    cleanup_wait_s: float = 30.0  # doubled on each round
    not_ready_limit: int = 2  # stop after this many candidates came up but never answered
    ready_replicas: int | None = None  # default: the deployment's min_replicas
    probe_interval_s: float = 10.0
    capacity_grace_s: float = 180.0  # a group with no VM at all after this: no capacity
    capacity_check_s: float = 60.0  # how often to ask the engine, after the grace
    quota_precheck: bool = True
    group_premium: float = 0.05  # see Fallback._open_pool

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Cleanup:
    ok: bool
    leftovers: list[Leftover] = field(default_factory=list)
    note: str = ""

    @property
    def label(self) -> str:
        if self.ok:
            return "clean" + (f" ({self.note})" if self.note else "")
        return f"FAILED: {len(self.leftovers)} left" + (f" ({self.note})" if self.note else "")


@dataclass
class Outcome:
    status: str  # deployed | exhausted | stopped | cleanup-failed | destroyed
    message: str
    journal: Journal

    @property
    def exit_code(self) -> int | None:
        """None while a run is still in progress (or was killed): see `servestack status`."""
        return EXIT_CODES.get(self.status)

    def to_json(self) -> dict:
        data = self.journal.data
        live = data.get("live") or {}
        left = [item for s in data["stacks"].values() if s["state"] == "left"
                for item in s.get("leftovers", [])]
        started, finished = data.get("started_at"), data.get("finished_at")
        return {
            "schema_version": 1, "service": data["service"], "run": data["run"],
            "outcome": self.status, "exit_code": self.exit_code, "message": self.message,
            "endpoint": live.get("endpoint"), "candidate": live.get("candidate"),
            "started_at": started, "finished_at": finished,
            "duration_s": round(finished - started, 3) if started and finished else None,
            "attempts": [_attempt_json(a) for a in data["attempts"]],
            "blocked": data["blocks"], "leftovers": left,
        }


def _attempt_json(a: dict) -> dict:
    keys = ("n", "candidate", "cloud", "region", "zone", "zones", "instance_types", "use_spot",
            "price_per_hour", "stack", "started_at", "duration_s", "outcome", "error_class",
            "code", "message", "scope", "cleanup", "endpoint", "ready")
    return {k: a.get(k) for k in keys}


def default_probe_factory(session=None) -> ProbeFactory:
    def factory(endpoint: str, deployment: Deployment) -> Callable[[], ProbeAnswer]:
        url = probe_url(endpoint, deployment.readiness.path)
        return lambda: http_probe(url, deployment.readiness, session)

    return factory


class Fallback:
    def __init__(self, engine: Engine, journal: Journal, candidates: list[Candidate],
                 build: Builder, *, clock: Clock, settings: Settings | None = None,
                 probe_factory: ProbeFactory | None = None,
                 progress: Callable[[str], None] | None = None,
                 classifier: Classifier | None = None) -> None:
        self.engine, self.journal, self.candidates = engine, journal, candidates
        self.build, self.clock = build, clock
        self.settings = settings or Settings()
        self.probe_factory = probe_factory or default_probe_factory()
        self.progress = progress or (lambda line: None)
        self.by_id = {c.id: c for c in candidates}
        self.gpus = {c.instance_type: (c.accelerator, c.accelerator_count) for c in candidates}
        self.classifier = classifier or partial(classify, gpus=self.gpus)
        self._cursor = 0

    # --- the run ------------------------------------------------------------------------------

    def run(self) -> Outcome:
        j = self.journal
        if j.status == "deployed" and j.live:
            live = j.live
            return Outcome("deployed", f"already deployed: {live['candidate']} at "
                           f"{live['endpoint']} (servestack destroy first to redeploy)", j)
        if j.status == "running":
            j.resume(self.clock.now())
            self.progress(f"resuming run {j.run} after attempt {len(j.attempts)}")
            outcome = self._recover()
            if outcome:
                return outcome
        else:
            j.begin_run([c.id for c in self.candidates], self.settings.to_json(),
                        self.clock.now())
        live = [s for s in j.dirty_stacks() if s["state"] == "live"]
        if live:
            return self._finish("deployed", f"{live[0]['candidate']} is live at "
                                f"{live[0].get('endpoint')}")
        outcome = self._clean_dirty()
        if outcome:
            return outcome
        if self.settings.quota_precheck and not j.data.get("prechecked"):
            self._precheck()
        return self._walk()

    def _walk(self) -> Outcome:
        while True:
            limit = self.settings.max_attempts
            if limit and len(self.journal.attempts) >= limit:
                return self._finish("exhausted", f"stopped after --max-attempts {limit}")
            candidate = self._next()
            if candidate is None:
                return self._finish("exhausted", "every candidate was tried or ruled out")
            outcome = self._attempt(candidate)
            if outcome:
                return outcome

    def _next(self) -> Candidate | None:
        """The best candidate still open. Blocks only grow within a run, so candidates before
        the cursor stay ruled out and are not looked at again."""
        blocks = self.journal.blocks
        for index in range(self._cursor, len(self.candidates)):
            narrowed = narrow(self.candidates[index], blocks)
            if narrowed is not None:
                self._cursor = index
                return narrowed
        self._cursor = len(self.candidates)
        return None

    def _open_pool(self, c: Candidate) -> list[Candidate]:
        """Still-open candidates that may share `c`'s instance group: same cloud and region,
        and no dearer than the next candidate the loop would try anyway (or `group_premium`
        over `c`). Without that cap a group could fall back from an $8/h L4 host to an $88/h
        H100 host of the same GPU count while cheaper regions were still untried."""
        blocks = self.journal.blocks
        limit = max(self._next_price(c, blocks),
                    c.price_per_hour * (1 + self.settings.group_premium))
        return [n for x in self.candidates if x.cloud == c.cloud and x.region == c.region
                and (x.id == c.id or x.price_per_hour <= limit)
                and (n := narrow(x, blocks)) is not None]

    def _next_price(self, c: Candidate, blocks: list[Block]) -> float:
        for x in self.candidates[self._cursor:]:
            if x.id != c.id and narrow(x, blocks) is not None:
                return x.price_per_hour
        return c.price_per_hour

    # --- one candidate ------------------------------------------------------------------------

    def _attempt(self, c: Candidate) -> Outcome | None:
        deployment = self.build(c, self._open_pool(c))
        ref = stack_ref(deployment.service, c.id)
        tried = tuple(i.instance_type for i in deployment.instances)
        retries = 0
        while True:
            record = self._start(c, deployment, ref, tried)
            result = self.engine.up(ref, deployment, timeout_s=self.settings.attempt_timeout_s,
                                    on_progress=self._resource_progress(record["n"]))
            if result.ok:
                failure = self._after_up(c, deployment, ref, record, result)
                if failure is None:
                    return self._finish("deployed", f"{c.id} is ready at {record['endpoint']}")
            else:
                failure = self._classify(c, result, tried)
            limit = self.settings.max_attempts
            at_limit = bool(limit) and len(self.journal.attempts) >= limit
            if failure.action == "retry" and retries < self.settings.retries and not at_limit:
                retries += 1
                wait = self.settings.backoff_s * 2 ** (retries - 1)
                self._close(record, failure, cleanup=f"kept for retry {retries} in {wait:.0f} s")
                self.progress(f"[{record['n']}] {failure.error_class}: {failure.message} "
                              f"-> retry in {wait:.0f} s")
                self.clock.sleep(wait)
                continue
            if failure.action == "retry":
                failure = replace(failure, action="block", blocks=(
                    candidate_block(c, failure.error_class, "RetriesExhausted"),))
            return self._fail(c, deployment, ref, record, failure)

    def _start(self, c: Candidate, deployment: Deployment, ref: StackRef,
               tried: tuple[str, ...]) -> dict:
        j = self.journal
        for entry in j.dirty_stacks():  # never two candidates live
            if entry["name"] != ref.name:
                raise RuntimeError(f"stack {entry['name']} is dirty while starting {ref.name}")
        record = j.start_attempt({
            "candidate": c.id, "cloud": c.cloud, "region": c.region, "zone": c.zone,
            "zones": list(deployment.zones), "instance_types": list(tried),
            "use_spot": c.use_spot, "price_per_hour": c.price_per_hour, "stack": ref.name,
            "started_at": self.clock.now(), "outcome": None},
            stack={"name": ref.name, "candidate": c.id, "run": j.run,
                   "deployment": deployment.to_config()})
        self.progress(f"[{record['n']}] {c.id} ({c.infra}, {', '.join(tried)}"
                      f"{' spot' if c.use_spot else ''}): up")
        return record

    def _ready_progress(self, n: int) -> Callable[[ReadyResult], None]:
        """A line when the picture changes, else one a minute: not one per probe round."""
        last: dict = {"key": None, "at": -1e18}

        def report(result: ReadyResult) -> None:
            key = (len(result.replicas), result.last_error)
            if key != last["key"] or self.clock.now() - last["at"] >= 60:
                last.update(key=key, at=self.clock.now())
                self.progress(f"[{n}]     {result.summary()}")

        return report

    def _resource_progress(self, n: int) -> Callable[[str], None]:
        return lambda line: self.progress(f"[{n}]     {line}")

    def _classify(self, c: Candidate, result: OpResult, tried: tuple[str, ...]) -> Failure:
        texts = result.error_texts()
        if result.timed_out:
            failure = self.classifier(c.cloud, texts, c, tried)
            if failure.error_class in BLOCKING_ON_TIMEOUT:
                return failure
            return timeout_failure(c, self.settings.attempt_timeout_s, texts)
        return self.classifier(c.cloud, texts, c, tried)

    def _after_up(self, c: Candidate, deployment: Deployment, ref: StackRef, record: dict,
                  result: OpResult) -> Failure | None:
        endpoint = result.outputs.get("endpoint")
        if not endpoint:
            return Failure("invalid-config", "NoEndpoint", "stop",
                           "the stack is up but exports no endpoint")
        self.journal.set_stack(ref.name, "up", endpoint=endpoint)
        self.journal.update_attempt(record, phase="ready", endpoint=endpoint,
                                    up_s=round(self.clock.now() - record["started_at"], 3))
        return self._probe(c, deployment, ref, record)

    def _probe(self, c: Candidate, deployment: Deployment, ref: StackRef,
               record: dict) -> Failure | None:
        endpoint = record["endpoint"]
        needed = self.settings.ready_replicas or deployment.min_replicas
        self.progress(f"[{record['n']}] up at {endpoint}: waiting for {needed} replica(s) "
                      f"(up to {deployment.readiness.initial_delay_seconds} s)")
        watch = _GroupWatch(self, ref, deployment, needed)
        ready = wait_ready(self.probe_factory(endpoint, deployment), needed,
                           deadline_s=deployment.readiness.initial_delay_seconds,
                           clock=self.clock, interval_s=self.settings.probe_interval_s,
                           on_progress=self._ready_progress(record["n"]), abort=watch,
                           instances=watch.size)
        if ready.ready:
            j = self.journal
            j.set_stack(ref.name, "live")
            j.set_live({"candidate": c.id, "stack": ref.name, "endpoint": endpoint,
                        "cloud": c.cloud, "region": c.region,
                        "instance_types": record["instance_types"],
                        "price_per_hour": c.price_per_hour})
            j.update_attempt(record, phase="done", outcome="deployed", ready=ready.summary(),
                             cleanup="not needed (live)", scope="",
                             duration_s=self._elapsed(record))
            self.progress(f"[{record['n']}] ready: {ready.summary()}")
            return None
        tried = tuple(record["instance_types"])
        if ready.aborted:
            return group_capacity_failure(c, tried, ready.aborted, self.gpus)
        running = watch.size()
        if running is not None and running < needed:
            return group_capacity_failure(
                c, tried, f"only {running} of {needed} VM(s) running after "
                f"{deployment.readiness.initial_delay_seconds} s: not enough capacity",
                self.gpus)
        return self._not_ready(c, ready)

    def _not_ready(self, c: Candidate, ready: ReadyResult) -> Failure:
        failure = not_ready_failure(c, f"not ready within initial_delay_seconds: "
                                       f"{ready.summary()}")
        count = sum(1 for a in self.journal.attempts if a.get("outcome") == "not-ready") + 1
        if count >= self.settings.not_ready_limit:
            return replace(failure, action="stop", message=failure.message +
                           f"; {count} candidates came up without answering, so the model "
                           "itself is the likely cause: check the VM logs")
        return failure

    def _fail(self, c: Candidate | None, deployment: Deployment, ref: StackRef, record: dict,
              failure: Failure) -> Outcome | None:
        j = self.journal
        j.update_attempt(record, phase="cleanup", outcome=failure.error_class,
                         error=failure.to_json(), text=failure.text[:2000])
        self.progress(f"[{record['n']}] {failure.error_class} ({failure.code}): "
                      f"{failure.message}")
        cleanup = self._cleanup(ref, deployment)
        self._close(record, failure, cleanup=cleanup.label)
        if not cleanup.ok:
            j.set_stack(ref.name, "left", leftovers=[x.to_json() for x in cleanup.leftovers])
            return self._finish("cleanup-failed", _left_message(ref.name, cleanup))
        j.set_stack(ref.name, "clean")
        if failure.action == "stop":
            return self._finish("stopped", f"{failure.error_class}: {failure.message}")
        j.add_blocks(failure.blocks)
        self.progress(f"[{record['n']}] cleaned up; ruled out: {failure.scope}")
        return None

    def _close(self, record: dict, failure: Failure, cleanup: str) -> None:
        outcome = "retry" if cleanup.startswith("kept for retry") else failure.error_class
        self.journal.update_attempt(
            record, phase="done", outcome=outcome, error_class=failure.error_class,
            code=failure.code, message=failure.message,
            scope=failure.scope if outcome != "retry" else "none (retried)",
            cleanup=cleanup, duration_s=self._elapsed(record))

    def _elapsed(self, record: dict) -> float:
        return round(self.clock.now() - record["started_at"], 3)

    # --- cleanup ------------------------------------------------------------------------------

    def _cleanup(self, ref: StackRef, deployment: Deployment) -> Cleanup:
        self.journal.set_stack(ref.name, "cleaning")
        refreshed = self.engine.refresh(ref, deployment)
        note = "" if refreshed.ok else "refresh failed"
        left: list[Leftover] = []
        destroyed = OpResult(False)
        for round_no in range(self.settings.cleanup_rounds):
            destroyed = self.engine.destroy(ref, deployment)
            left = self.engine.leftovers(ref, deployment)
            if not left:
                removed = self.engine.remove(ref, deployment)
                return Cleanup(True, note="" if removed.ok else "empty stack not removed")
            strays = [x for x in left if x.adoptable]
            if strays:
                self.progress(f"    {len(strays)} untracked resource(s) found by tags: "
                              "importing them to destroy them")
                self.engine.adopt(ref, deployment, strays)
            self.clock.sleep(self.settings.cleanup_wait_s * 2 ** round_no)
        reason = destroyed.error_texts()[0][:300] if destroyed.error_texts() else note
        return Cleanup(False, left, reason)

    def _clean_dirty(self) -> Outcome | None:
        for entry in self.journal.dirty_stacks():
            self.progress(f"cleaning {entry['name']} left by an earlier run")
            deployment = Deployment.from_config(entry["deployment"])
            ref = StackRef(deployment.service, entry["candidate"], entry["name"])
            cleanup = self._cleanup(ref, deployment)
            if not cleanup.ok:
                self.journal.set_stack(entry["name"], "left",
                                       leftovers=[x.to_json() for x in cleanup.leftovers])
                return self._finish("cleanup-failed",
                                    _left_message(f"{entry['name']} (from an earlier run)",
                                                  cleanup))
            self.journal.set_stack(entry["name"], "clean")
        return None

    def destroy(self) -> Outcome:
        """`servestack destroy`: clean every stack of the service that may hold resources."""
        j = self.journal
        dirty = j.dirty_stacks()
        if not dirty:
            j.set_live(None)
            j.finish("destroyed", self.clock.now(), "nothing to destroy")
            return Outcome("destroyed", "nothing to destroy", j)
        j.set_live(None)
        for entry in dirty:
            entry["state"] = "cleaning"  # live or not, it goes now
        outcome = self._clean_dirty()
        if outcome:
            return outcome
        message = "destroyed and verified: " + ", ".join(e["name"] for e in dirty)
        j.finish("destroyed", self.clock.now(), message)
        return Outcome("destroyed", message, j)

    # --- resume -------------------------------------------------------------------------------

    def _recover(self) -> Outcome | None:
        """Finish the step a killed run was in; dirty stacks are cleaned after this."""
        j = self.journal
        record = j.attempts[-1] if j.attempts else None
        if record is None or record.get("phase") == "done":
            return None
        entry = j.stacks.get(record["stack"]) or {}
        if "deployment" not in entry:  # killed before the stack was recorded: nothing to clean
            j.update_attempt(record, phase="done", outcome="interrupted", scope="none",
                             cleanup="not needed", duration_s=self._elapsed(record))
            return None
        deployment = Deployment.from_config(entry["deployment"])
        ref = StackRef(deployment.service, record["candidate"], record["stack"])
        candidate = self._candidate_for(record)
        if entry.get("state") == "live":  # killed between going live and closing the attempt
            j.set_live(j.live or {"candidate": record["candidate"], "stack": ref.name,
                                  "endpoint": record.get("endpoint"), "cloud": record["cloud"],
                                  "region": record["region"],
                                  "instance_types": record["instance_types"],
                                  "price_per_hour": record["price_per_hour"]})
            j.update_attempt(record, phase="done", outcome="deployed", scope="",
                             cleanup="not needed (live)", duration_s=self._elapsed(record))
            return None
        if record["phase"] == "ready" and entry.get("state") == "up" and candidate:
            self.progress(f"[{record['n']}] resuming the readiness probe of {ref.name}")
            failure = self._probe(candidate, deployment, ref, record)
            if failure is None:
                return self._finish("deployed", f"{candidate.id} is ready at "
                                    f"{record['endpoint']}")
            return self._fail(candidate, deployment, ref, record, failure)
        if record["phase"] == "cleanup" and record.get("error"):
            return self._fail(candidate, deployment, ref, record,
                              Failure.from_json(record["error"]))
        j.update_attempt(record, phase="done", outcome="interrupted", scope="none",
                         cleanup="after resume", message="the run was killed during this "
                         "attempt; the candidate is tried again",
                         duration_s=self._elapsed(record))
        return None

    def _candidate_for(self, record: dict) -> Candidate | None:
        candidate = self.by_id.get(record["candidate"])
        if candidate and record.get("zones") is not None and not candidate.zone:
            candidate = replace(candidate, zones=tuple(record["zones"]))
        return candidate

    # --- quota pre-check ----------------------------------------------------------------------

    def _precheck(self) -> None:
        """Rule out, before any attempt, candidates whose quota cannot hold their replicas."""
        limits = self.engine.quota_limits(self.candidates)
        blocks = [b for c in self.candidates if (b := _quota_short(c, limits)) is not None]
        self.journal.data["prechecked"] = True
        self.journal.add_blocks(blocks)
        if blocks:
            self.progress(f"quota pre-check: {len(blocks)} candidate(s) ruled out "
                          "(quota below what their replicas need)")

    def _finish(self, status: str, message: str) -> Outcome:
        self.journal.finish(status, self.clock.now(), message)
        self.progress(f"{status}: {message}")
        return Outcome(status, message, self.journal)


class _GroupWatch:
    """While waiting for readiness: a group still without any running VM after the grace
    period had no capacity (a GCP MIG waits for it silently); stop waiting and say so."""

    def __init__(self, loop: Fallback, ref: StackRef, deployment: Deployment,
                 needed: int) -> None:
        self.loop, self.ref, self.deployment, self.needed = loop, ref, deployment, needed
        self.start = loop.clock.now()
        self.last: float | None = None
        self.full = False  # every VM got capacity: nothing more to watch

    def size(self) -> int | None:
        running = self.loop.engine.group_size(self.ref, self.deployment)
        self.full = self.full or (running is not None and running >= self.needed)
        return running

    def __call__(self) -> str | None:
        settings, now = self.loop.settings, self.loop.clock.now()
        if self.full or now - self.start < settings.capacity_grace_s:
            return None
        if self.last is not None and now - self.last < settings.capacity_check_s:
            return None
        self.last = now
        running = self.size()
        if running == 0:
            return (f"no VM of the group exists {now - self.start:.0f} s after `up`: "
                    "no capacity (or quota) for it")
        return None


def narrow(c: Candidate, blocks: list[Block]) -> Candidate | None:
    """`c` minus blocked zones; None when a block covers it entirely."""
    zones = list(c.zones)
    for block in blocks:
        if not block.applies(c):
            continue
        if block.zone is None or block.zone == c.zone:
            return None
        if c.zone is None and block.zone in zones:
            zones.remove(block.zone)
            if not zones:
                return None
    return c if len(zones) == len(c.zones) else replace(c, zones=tuple(zones))


def _quota_short(c: Candidate, limits: dict[tuple[str, str], float]) -> Block | None:
    """A block when a known limit is below the candidate's need (AWS: vCPUs, GCP: GPUs)."""
    from servestack.deploy.failures import quota_families

    family = quota_families(c)[0]
    if c.cloud == "aws":
        checks = [(limits.get((c.region, family)), c.vcpus * c.replicas)]
    elif c.cloud == "gcp":
        gpus = c.accelerator_count * c.replicas
        checks = [(limits.get((c.region, family), limits.get(("*", family))), gpus),
                  (limits.get(("global", "GPUS_ALL_REGIONS")), gpus)]
    else:
        return None
    if any(limit is not None and limit < need for limit, need in checks):
        return candidate_block(c, "quota", "QuotaPrecheck")
    return None


def _left_message(what: str, cleanup: Cleanup) -> str:
    left = "; ".join(x.label for x in cleanup.leftovers) or "unknown"
    reason = f" ({cleanup.note})" if cleanup.note else ""
    return f"cleanup of {what} failed{reason}; left: {left}. Fix the cause, then run " \
        "`servestack destroy` or deploy again (it cleans up first)"


