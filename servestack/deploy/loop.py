"""Deploy with fallback: walk the ranked candidates until one region of one cloud gives the GPUs.

First, each cloud of the candidates is asked who its credentials are (where the engine can:
`credentials_check`); a cloud without valid credentials is ruled out at once (a block of class
"credentials"), and with none left the run ends in seconds: "no cloud has credentials". Then the
quota pre-check. Then for each candidate, in rank order, minus what earlier failures ruled out
(`Block`s):

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
sleep); the engine is anything with the `Engine` interface (servestack.engine), and the
loop asks its `Capabilities` before a step only some engines and clouds have.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from servestack.deploy.clock import Clock
from servestack.deploy.destroy import Cleaner, left_message
from servestack.deploy.failures import (
    Block,
    Failure,
    candidate_block,
    classify,
    group_capacity_failure,
    not_ready_failure,
    quota_families,
    timeout_failure,
)
from servestack.deploy.journal import (
    Attempt,
    Journal,
    Live,
    Phase,
    RunStatus,
    StackEntry,
    StackState,
)
from servestack.deploy.outcome import Outcome, finish
from servestack.deploy.readiness import (
    ProbeAnswer,
    ReadyResult,
    http_probe,
    probe_url,
    wait_ready,
    with_api_key,
)
from servestack.deployment.model import OUTPUT_API_KEY, OUTPUT_ENDPOINT, Deployment
from servestack.engine import ANY, Engine, OpResult, QuotaLimit, StackRef, stack_ref
from servestack.planner import Candidate

BLOCKING_ON_TIMEOUT = ("capacity", "quota", "credentials", "permission")
RELEASED = "released: the service has the replicas it needs from other pools"
# A pool of a service over several pools whose next candidate is dearer than what another
# region still offers (`price_limit`): its run pauses (the journal stays "running", blocks and
# attempts kept) and the service moves its lane to the cheaper region.
DEARER = "let go: its next candidate is dearer than a region nobody holds"

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
    credentials_timeout_s: float = 120.0  # per cloud: the identity probe (init included)
    group_premium: float = 0.05  # see Fallback._open_pool

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


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
                 classifier: Classifier | None = None, api_key: str | None = None,
                 stop: Callable[[], bool] | None = None,
                 known_blocks: tuple[Block, ...] = (),
                 price_limit: Callable[[], float] | None = None) -> None:
        self.engine, self.journal, self.candidates = engine, journal, candidates
        self.build, self.clock = build, clock
        self.settings = settings or Settings()
        self.probe_factory = probe_factory or default_probe_factory()
        self.progress = progress or (lambda line: None)
        self.by_id = {c.id: c for c in candidates}
        self.gpus = {c.instance_type: (c.accelerator, c.accelerator_count) for c in candidates}
        self.classifier = classifier or partial(classify, gpus=self.gpus)
        self.cleaner = Cleaner(engine, journal, clock, self.progress,
                               rounds=self.settings.cleanup_rounds,
                               wait_s=self.settings.cleanup_wait_s)
        self._cursor = 0
        # stack name -> the API key its outputs gave: in memory only (never journaled)
        self._api_keys: dict[str, str] = {}
        # A pool of a service over several pools (servestack.deploy.pools): the key the
        # service's key stack drew (the pools share it), what other pools' runs ruled out,
        # and whether the service has released this pool (stop, clean up, end "stopped").
        self.shared_key = api_key
        self.stop = stop or (lambda: False)
        self.known_blocks = known_blocks
        # the dearest $/h per replica a candidate may have to be tried now (the service's
        # other regions); above it the run pauses with DEARER. None: no limit (one pool).
        self.price_limit = price_limit or (lambda: math.inf)

    # --- the run ------------------------------------------------------------------------------

    def run(self) -> Outcome:
        j = self.journal
        done = already_deployed(j)
        if done:
            return done
        if j.status is RunStatus.RUNNING:
            j.resume(self.clock.now())
            self.progress(f"resuming run {j.run} after attempt {len(j.attempts)}")
            if self.known_blocks:  # a paused pool claimed again: what others found since
                j.add_blocks(self.known_blocks)
            outcome = self._recover()
            if outcome:
                return outcome
        else:
            j.begin_run([c.id for c in self.candidates], self.settings.to_json(),
                        self.clock.now())
            if self.known_blocks:
                j.add_blocks(self.known_blocks)
        live = [s for s in j.dirty_stacks() if s.state is StackState.LIVE]
        if live:
            return self._finish(RunStatus.DEPLOYED, f"{live[0].candidate} is live at "
                                f"{live[0].endpoint}")
        outcome = self.cleaner.clean_dirty()
        if outcome:
            return self._reported(outcome)
        if not j.prechecked:
            outcome = self._prechecks()
            if outcome:
                return outcome
        return self._walk()

    def _walk(self) -> Outcome:
        while True:
            if self.stop():
                return self._finish(RunStatus.STOPPED, RELEASED)
            limit = self.settings.max_attempts
            if limit and len(self.journal.attempts) >= limit:
                return self._finish(RunStatus.EXHAUSTED, f"stopped after --max-attempts {limit}")
            candidate = self._next()
            if candidate is None:
                return self._finish(RunStatus.EXHAUSTED,
                                    "every candidate was tried or ruled out")
            dearest = self.price_limit()
            if candidate.price_per_hour > dearest:
                return self._pause(candidate, dearest)
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

    def _pause(self, c: Candidate, limit: float) -> Outcome:
        """The next candidate costs more than another region still offers: stop here without
        finishing the run (no stack is dirty: the last attempt was cleaned), so that the run
        resumes with its blocks and attempts if the service claims this pool again."""
        message = f"{DEARER} (next: {c.id} at ${c.price_per_hour:.2f}/h, over the " \
                  f"${limit:.2f}/h it may cost now)"
        self.journal.message = message
        self.journal.save()
        self.progress(message)
        return Outcome(RunStatus.RUNNING, message, self.journal)

    def _open_pool(self, c: Candidate) -> list[Candidate]:
        """Still-open candidates that may share `c`'s instance group: same cloud and region,
        and no dearer than the next candidate the loop would try anyway (or `group_premium`
        over `c`). Without that cap a group could fall back from an $8/h L4 host to an $88/h
        H100 host of the same GPU count while cheaper regions were still untried. A pool of
        a service over several pools: the next candidate is also that of another region, so
        `price_limit` caps it too."""
        blocks = self.journal.blocks
        limit = max(min(self._next_price(c, blocks), self.price_limit()),
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
            before = self.journal.stacks.get(ref.name)
            was_empty = before is None or not before.state.dirty or before.untouched
            record = self._start(c, deployment, ref, tried)
            result = self.engine.up(ref, deployment, timeout_s=self.settings.attempt_timeout_s,
                                    on_progress=self._resource_progress(record.n))
            # saved with the attempt's next write: its cleanup then skips the search by tags
            self.journal.stacks[ref.name].untouched = was_empty and not result.created_any
            if result.ok:
                failure = self._after_up(c, deployment, ref, record, result)
                if failure is None:
                    return self._finish(RunStatus.DEPLOYED,
                                        f"{c.id} is ready at {record.endpoint}")
            else:
                failure = self._classify(c, result, tried)
            limit = self.settings.max_attempts
            at_limit = bool(limit) and len(self.journal.attempts) >= (limit or 0)
            if failure.action == "retry" and retries < self.settings.retries and not at_limit:
                retries += 1
                wait = self.settings.backoff_s * 2 ** (retries - 1)
                self._close(record, failure, cleanup=f"kept for retry {retries} in {wait:.0f} s")
                self.progress(f"[{record.n}] {failure.error_class}: {failure.message} "
                              f"-> retry in {wait:.0f} s")
                self.clock.sleep(wait)
                continue
            if failure.action == "retry":
                failure = replace(failure, action="block", blocks=(
                    candidate_block(c, failure.error_class, "RetriesExhausted"),))
            return self._fail(c, deployment, ref, record, failure)

    def _start(self, c: Candidate, deployment: Deployment, ref: StackRef,
               tried: tuple[str, ...]) -> Attempt:
        j = self.journal
        for entry in j.dirty_stacks():  # never two candidates live
            if entry.name != ref.name:
                raise RuntimeError(f"stack {entry.name} is dirty while starting {ref.name}")
        record = j.start_attempt(
            Attempt(n=0, candidate=c.id, cloud=c.cloud, region=c.region, zone=c.zone,
                    zones=list(deployment.zones), instance_types=list(tried),
                    use_spot=c.use_spot, price_per_hour=c.price_per_hour, stack=ref.name,
                    started_at=self.clock.now()),
            StackEntry(ref.name, c.id, j.run, deployment))
        self.progress(f"[{record.n}] {c.id} ({c.infra}, {', '.join(tried)}"
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

    def _after_up(self, c: Candidate, deployment: Deployment, ref: StackRef, record: Attempt,
                  result: OpResult) -> Failure | None:
        endpoint = result.outputs.get(OUTPUT_ENDPOINT)
        if not endpoint:
            return Failure("invalid-config", "NoEndpoint", "stop",
                           "the stack is up but exports no endpoint")
        if result.outputs.get(OUTPUT_API_KEY):
            self._api_keys[ref.name] = str(result.outputs[OUTPUT_API_KEY])
        self.journal.set_stack(ref.name, StackState.UP, endpoint=endpoint)
        record.phase, record.endpoint = Phase.READY, endpoint
        record.up_s = round(self.clock.now() - record.started_at, 3)
        self.journal.save()
        return self._probe(c, deployment, ref, record)

    def _probe(self, c: Candidate, deployment: Deployment, ref: StackRef,
               record: Attempt) -> Failure | None:
        endpoint = record.endpoint or ""
        if self.stop():  # released while its `up` ran: destroyed now that it returned
            return released_failure()
        needed = self.settings.ready_replicas or deployment.min_replicas
        self.progress(f"[{record.n}] up at {endpoint}: waiting for {needed} replica(s) "
                      f"(up to {deployment.readiness.initial_delay_seconds} s)")
        watch = _GroupWatch(self, ref, deployment, needed)
        keyed = replace(deployment, readiness=with_api_key(deployment.readiness,
                                                           self._api_key(ref, deployment)))
        ready = wait_ready(self.probe_factory(endpoint, keyed), needed,
                           deadline_s=deployment.readiness.initial_delay_seconds,
                           clock=self.clock, interval_s=self.settings.probe_interval_s,
                           on_progress=self._ready_progress(record.n),
                           abort=lambda: RELEASED if self.stop() else watch(),
                           instances=watch.size)
        if ready.aborted == RELEASED:
            return released_failure()
        if ready.ready:
            self._went_live(c, record, ready)
            return None
        tried = tuple(record.instance_types)
        if ready.aborted:
            return group_capacity_failure(c, tried, ready.aborted, self.gpus)
        running = watch.size()
        if running is not None and running < needed:
            return group_capacity_failure(
                c, tried, f"only {running} of {needed} VM(s) running after "
                f"{deployment.readiness.initial_delay_seconds} s: not enough capacity",
                self.gpus)
        return self._not_ready(c, ready)

    def _api_key(self, ref: StackRef, deployment: Deployment) -> str | None:
        """The key the probe sends: from `up`'s outputs, else (a resumed run) read again from
        the stack through the engine. None when the deployment has none (--no-api-key)."""
        if deployment.api_key is None:
            return None
        key = self._api_keys.get(ref.name) or self.shared_key
        read = getattr(self.engine, "outputs", None)
        if key is None and read is not None:
            key = read(ref, deployment).get(OUTPUT_API_KEY) or None
        if key is None:
            self.progress(f"warning: {ref.name} exports no {OUTPUT_API_KEY} output: probing "
                          "without the key (vLLM answers 401 to /v1 without it)")
            return None
        self._api_keys[ref.name] = str(key)
        return str(key)

    def _went_live(self, c: Candidate, record: Attempt, ready: ReadyResult) -> None:
        j = self.journal
        j.set_stack(record.stack, StackState.LIVE)
        j.set_live(Live(c.id, record.stack, record.endpoint, c.cloud, c.region,
                        record.instance_types, c.price_per_hour))
        record.phase, record.outcome, record.ready = Phase.DONE, "deployed", ready.summary()
        record.cleanup, record.scope = "not needed (live)", ""
        record.duration_s = self._elapsed(record)
        j.save()
        self.progress(f"[{record.n}] ready: {ready.summary()}")

    def _not_ready(self, c: Candidate, ready: ReadyResult) -> Failure:
        failure = not_ready_failure(c, f"not ready within initial_delay_seconds: "
                                       f"{ready.summary()}")
        count = sum(1 for a in self.journal.attempts if a.outcome == "not-ready") + 1
        if count >= self.settings.not_ready_limit:
            return replace(failure, action="stop", message=failure.message +
                           f"; {count} candidates came up without answering, so the model "
                           "itself is the likely cause: check the VM logs")
        return failure

    def _fail(self, c: Candidate | None, deployment: Deployment, ref: StackRef,
              record: Attempt, failure: Failure) -> Outcome | None:
        j = self.journal
        record.phase, record.outcome = Phase.CLEANUP, failure.error_class
        record.error, record.text = failure, failure.text[:2000]
        j.save()
        self.progress(f"[{record.n}] {failure.error_class} ({failure.code}): "
                      f"{failure.message}")
        cleanup = self.cleaner.clean(ref, deployment)
        self._close(record, failure, cleanup=cleanup.label)
        if not cleanup.ok:
            j.set_stack(ref.name, StackState.LEFT, leftovers=cleanup.leftovers)
            return self._finish(RunStatus.CLEANUP_FAILED, left_message(ref.name, cleanup))
        j.set_stack(ref.name, StackState.CLEAN)
        if failure.action == "stop":
            return self._finish(RunStatus.STOPPED, f"{failure.error_class}: {failure.message}")
        j.add_blocks(failure.blocks)
        self.progress(f"[{record.n}] cleaned up; ruled out: {failure.scope}")
        return None

    def _close(self, record: Attempt, failure: Failure, cleanup: str) -> None:
        retried = cleanup.startswith("kept for retry")
        record.phase = Phase.DONE
        record.outcome = "retry" if retried else failure.error_class
        record.error_class, record.code = failure.error_class, failure.code
        record.message = failure.message
        record.scope = "none (retried)" if retried else failure.scope
        record.cleanup, record.duration_s = cleanup, self._elapsed(record)
        self.journal.save()

    def _elapsed(self, record: Attempt) -> float:
        return round(self.clock.now() - record.started_at, 3)

    # --- resume -------------------------------------------------------------------------------

    def _recover(self) -> Outcome | None:
        """Finish the step a killed run was in; dirty stacks are cleaned after this."""
        j = self.journal
        record = j.attempts[-1] if j.attempts else None
        if record is None or record.phase is Phase.DONE:
            return None
        entry = j.stacks[record.stack]
        deployment = entry.deployment
        ref = StackRef(deployment.service, record.candidate, record.stack)
        candidate = self._candidate_for(record)
        if entry.state is StackState.LIVE:  # killed between going live and closing the attempt
            j.set_live(j.live or Live(record.candidate, ref.name, record.endpoint, record.cloud,
                                      record.region, record.instance_types,
                                      record.price_per_hour))
            self._interrupted(record, outcome="deployed", scope="",
                              cleanup="not needed (live)")
            return None
        if record.phase is Phase.READY and entry.state is StackState.UP and candidate:
            self.progress(f"[{record.n}] resuming the readiness probe of {ref.name}")
            failure = self._probe(candidate, deployment, ref, record)
            if failure is None:
                return self._finish(RunStatus.DEPLOYED, f"{candidate.id} is ready at "
                                    f"{record.endpoint}")
            return self._fail(candidate, deployment, ref, record, failure)
        if record.phase is Phase.CLEANUP and record.error:
            return self._fail(candidate, deployment, ref, record, record.error)
        self._interrupted(record, outcome="interrupted", scope="none", cleanup="after resume",
                          message="the run was killed during this attempt; the candidate is "
                                  "tried again")
        return None

    def _interrupted(self, record: Attempt, *, outcome: str, scope: str, cleanup: str,
                     message: str | None = None) -> None:
        record.phase, record.outcome, record.scope, record.cleanup = \
            Phase.DONE, outcome, scope, cleanup
        if message:
            record.message = message
        record.duration_s = self._elapsed(record)
        self.journal.save()

    def _candidate_for(self, record: Attempt) -> Candidate | None:
        candidate = self.by_id.get(record.candidate)
        if candidate and not candidate.zone:
            candidate = replace(candidate, zones=tuple(record.zones))
        return candidate

    # --- pre-checks: credentials, then quota ------------------------------------------------

    def _prechecks(self) -> Outcome | None:
        """Before any attempt: rule out clouds without credentials, then candidates whose
        quota cannot hold their replicas. With no cloud left: exhausted, at once."""
        clouds = list(dict.fromkeys(c.cloud for c in self.candidates))
        lacking = self._check_credentials(clouds)
        if clouds and len(lacking) == len(clouds):
            reasons = "; ".join(f"{cloud}: {error}" for cloud, error in lacking.items())
            self.journal.prechecked = True
            return self._finish(RunStatus.EXHAUSTED, f"no cloud has credentials ({reasons}); "
                                "`servestack check` tells what each cloud needs")
        if self.settings.quota_precheck:
            self._precheck([cloud for cloud in clouds if cloud not in lacking])
        self.journal.prechecked = True
        self.journal.save()
        return None

    def _check_credentials(self, clouds: list[str]) -> dict[str, str]:
        """Ask each cloud that can tell who its credentials are; a block of class
        "credentials" for each without valid ones. Returns those clouds and why."""
        lacking: dict[str, str] = {}
        for cloud in clouds:
            if not self.engine.capabilities(cloud).credentials_check:
                continue
            found = self.engine.identity(cloud, timeout_s=self.settings.credentials_timeout_s)
            if found.ok:
                self.progress(f"credentials: {cloud}: {found.who}")
            else:
                lacking[cloud] = " ".join(found.error.split())[:300]
                self.progress(f"credentials: {cloud}: none valid, ruled out ({lacking[cloud]})")
        self.journal.add_blocks([Block(cloud, error_class="credentials", code="CredentialsCheck")
                                 for cloud in lacking])
        return lacking

    def _precheck(self, clouds: list[str]) -> None:
        """Rule out candidates whose quota cannot hold their replicas."""
        limits: dict[tuple[str, str, str], QuotaLimit] = {}
        for cloud in clouds:
            if self.engine.capabilities(cloud).quota_precheck:
                mine = [c for c in self.candidates if c.cloud == cloud]
                for limit in self.engine.quota_limits(cloud, mine):
                    limits[(limit.cloud, limit.region, limit.family)] = limit
        blocks = [candidate_block(c, "quota", "QuotaPrecheck") for c in self.candidates
                  if _quota_short(c, limits)]
        self.journal.add_blocks(blocks)
        if blocks:
            self.progress(f"quota pre-check: {len(blocks)} candidate(s) ruled out "
                          "(quota below what their replicas need)")

    def _finish(self, status: RunStatus, message: str) -> Outcome:
        return self._reported(finish(self.journal, status, message, self.clock.now()))

    def _reported(self, outcome: Outcome) -> Outcome:
        self.progress(f"{outcome.status.value}: {outcome.message}")
        return outcome


class _GroupWatch:
    """While waiting for readiness: a group still without any running VM after the grace
    period had no capacity (a GCP MIG waits for it silently); stop waiting and say so. Only
    where the engine can count the group for this cloud."""

    def __init__(self, loop: Fallback, ref: StackRef, deployment: Deployment,
                 needed: int) -> None:
        self.loop, self.ref, self.deployment, self.needed = loop, ref, deployment, needed
        self.countable = loop.engine.capabilities(deployment.cloud).group_size
        self.start = loop.clock.now()
        self.last: float | None = None
        self.full = False  # every VM got capacity: nothing more to watch

    def size(self) -> int | None:
        if not self.countable:
            return None
        running = self.loop.engine.group_size(self.ref, self.deployment)
        self.full = self.full or (running is not None and running >= self.needed)
        return running

    def __call__(self) -> str | None:
        settings, now = self.loop.settings, self.loop.clock.now()
        if not self.countable or self.full or now - self.start < settings.capacity_grace_s:
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


def _quota_short(c: Candidate, limits: dict[tuple[str, str, str], QuotaLimit]) -> bool:
    """A known limit below the candidate's need: the regional one of its quota family (else
    the one for every region), and a cap on all of the cloud's families."""
    for family in (quota_families(c)[0], ANY):
        limit = limits.get((c.cloud, c.region, family)) or limits.get((c.cloud, ANY, family))
        if limit is not None and limit.value < limit.need(c):
            return True
    return False


def released_failure() -> Failure:
    """A pool the service let go (servestack.deploy.pools): clean it, rule nothing out."""
    return Failure("released", "Released", "stop", RELEASED)


def already_deployed(journal: Journal) -> Outcome | None:
    """The outcome of a deploy that finds its service live already (nothing to do), else None."""
    if journal.status is RunStatus.DEPLOYED and journal.live:
        live = journal.live
        return Outcome(RunStatus.DEPLOYED, f"already deployed: {live.candidate} at "
                       f"{live.endpoint} (servestack destroy first to redeploy)", journal)
    return None
