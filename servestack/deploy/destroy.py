"""Clean a candidate's stack and prove it empty; `destroy` does that for every dirty stack.

A cleanup refreshes the stack, then in up to `rounds` rounds destroys it and checks what is
left: in its state, and (when the engine can sweep this cloud) what still carries the
candidate's tags in the cloud. Strays found by tags are imported first when the engine can
adopt them, so the next destroy removes them. A stack whose `up`s failed before creating
anything (journal: `untouched`) is not searched by tags: nothing can carry them, and the search
would fail for the same reason the `up` did (no credentials). An empty stack is removed; one
that cannot be proven empty is reported with what is left, and how to remove it: what is in a
state goes with `servestack destroy`, what is in no state is named for deleting by hand.
The deploy loop cleans failed candidates with `Cleaner`; `servestack destroy` runs `destroy`,
which marks the run "destroying" before its first step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from servestack.deploy.clock import Clock
from servestack.deploy.journal import Journal, RunStatus, StackEntry, StackState
from servestack.deploy.outcome import Outcome, finish
from servestack.deployment.model import Deployment
from servestack.engine import Engine, Leftover, OpResult, StackRef
from servestack.engine.interface import SWEEP_FAILED

Progress = Callable[[str], None]


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


class Cleaner:
    def __init__(self, engine: Engine, journal: Journal, clock: Clock, progress: Progress, *,
                 rounds: int = 3, wait_s: float = 30.0) -> None:
        self.engine, self.journal, self.clock, self.progress = engine, journal, clock, progress
        self.rounds, self.wait_s = rounds, wait_s  # wait_s doubles on each round

    def clean(self, ref: StackRef, deployment: Deployment) -> Cleanup:
        self.journal.set_stack(ref.name, StackState.CLEANING)
        can = self.engine.capabilities(deployment.cloud)
        entry = self.journal.stacks.get(ref.name)
        sweep = can.cloud_sweep and not (entry is not None and entry.untouched)
        refreshed = self.engine.refresh(ref, deployment)
        note = "" if refreshed.ok else "refresh failed"
        left: list[Leftover] = []
        destroyed = OpResult(False)
        for round_no in range(self.rounds):
            destroyed = self.engine.destroy(ref, deployment)
            left = self.engine.leftovers(ref, deployment)
            if sweep:
                left += self.engine.strays(ref, deployment)
            if not left:
                removed = self.engine.remove(ref, deployment)
                return Cleanup(True, note="" if removed.ok else "empty stack not removed")
            strays = [x for x in left if x.adoptable]
            if strays and can.adopt_strays:
                self.progress(f"    {len(strays)} untracked resource(s) found by tags: "
                              "importing them to destroy them")
                self.engine.adopt(ref, deployment, strays)
            self.clock.sleep(self.wait_s * 2 ** round_no)
        reason = destroyed.error_texts()[0][:300] if destroyed.error_texts() else note
        return Cleanup(False, left, reason)

    def clean_dirty(self) -> Outcome | None:
        """Clean every dirty stack (oldest first); the first that fails ends the run."""
        for entry in self.journal.dirty_stacks():
            self.progress(f"cleaning {entry.name} left by an earlier run")
            cleanup = self.clean(_ref(entry), entry.deployment)
            if not cleanup.ok:
                self.journal.set_stack(entry.name, StackState.LEFT, leftovers=cleanup.leftovers)
                return finish(self.journal, RunStatus.CLEANUP_FAILED,
                              left_message(f"{entry.name} (from an earlier run)", cleanup),
                              self.clock.now())
            self.journal.set_stack(entry.name, StackState.CLEAN)
        return None


def destroy(journal: Journal, engine: Engine | None, *, clock: Clock,
            progress: Progress) -> Outcome:
    """`servestack destroy`: clean every stack of the service that may hold resources, the
    live one included. `engine` may be None only when nothing is dirty."""
    dirty = journal.dirty_stacks()
    if not dirty:
        journal.live = None
        return finish(journal, RunStatus.DESTROYED, "nothing to destroy", clock.now())
    if engine is None:
        raise ValueError(f"{len(dirty)} dirty stack(s) to destroy, but no engine")
    journal.begin_destroy(clock.now())  # live or not, every dirty stack goes now
    outcome = Cleaner(engine, journal, clock, progress).clean_dirty()
    if outcome:
        progress(f"{outcome.status.value}: {outcome.message}")
        return outcome
    message = "destroyed and verified: " + ", ".join(e.name for e in dirty)
    return finish(journal, RunStatus.DESTROYED, message, clock.now())


def _ref(entry: StackEntry) -> StackRef:
    return StackRef(entry.deployment.service, entry.candidate, entry.name)


def left_message(what: str, cleanup: Cleanup) -> str:
    """What is left and how to remove it: a destroy removes what a state holds; what only the
    search by tags found is in no state, so it is named (with its id) for deleting by hand."""
    stated = [x for x in cleanup.leftovers if x.where != "cloud"]
    untracked = [x for x in cleanup.leftovers if x.where == "cloud" and x.type != SWEEP_FAILED]
    unsearched = [x for x in cleanup.leftovers if x.type == SWEEP_FAILED]
    reason = f" ({cleanup.note})" if cleanup.note else ""
    parts = [f"cleanup of {what} failed{reason}"]
    if stated or not cleanup.leftovers:
        left = "; ".join(x.label for x in stated) or "unknown"
        parts.append(f"left: {left}. Fix the cause, then run `servestack destroy` or deploy "
                     "again (it cleans up first)")
    if untracked:
        ids = ", ".join(f"{x.type} {x.id or x.name}" for x in untracked)
        parts.append(f"found by its tags but in no state, so no destroy removes them: delete "
                     f"them by hand: {ids}")
    for x in unsearched:
        parts.append(f"{x.name}; `servestack destroy` searches again once that works")
    return "; ".join(parts)
