"""The deploy journal: every attempt and every stack, written before each step it records.

One JSON file per service (`<state dir>/<service>/journal.json`), replaced atomically on every
change, so a run killed at any point leaves a file that says which stacks may hold resources
("dirty") and which candidates were ruled out ("blocks"). The next `servestack deploy` of the
service reads it, cleans what is dirty, and resumes; `servestack status` and `servestack
destroy` read it too.

The records are typed (`Attempt`, `StackEntry`, `Live`, `RunSummary`; `RunStatus`, `StackState`,
`Phase`), and only this module reads or writes their JSON. Stack states: creating -> up -> live
(deployed), or creating/up -> cleaning -> clean; a cleanup that could not verify an empty stack
leaves the state "left" with what is left. Every state but "clean" is dirty. The loop never
starts a stack while another one is dirty, so at most one candidate is ever live. A stack whose
`up`s all failed before creating anything is marked `untouched`: nothing in the cloud can carry
its tags, so its cleanup needs no search by tags (which fails without credentials). The run
status is "destroying" from the first write of `servestack destroy` until it ends, so a destroy
that was interrupted never leaves "deployed" behind. A journal that is not valid JSON, is
another schema version or another service's, or lacks what a record needs, is one `UserError`
naming the file and what to do. servestack.deploy.lock keeps two commands off one service.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any

from servestack.deploy.failures import Block, Failure
from servestack.deploy.layout import (  # noqa: F401 (re-exported)
    JOURNAL_NAME,
    SERVICE_JOURNAL_NAME,
    service_dir,
)
from servestack.deployment.model import Deployment
from servestack.engine import Leftover
from servestack.errors import UserError
from servestack.fsutil import write_atomic

SCHEMA_VERSION = 1


class StackState(str, Enum):
    CREATING = "creating"
    UP = "up"
    LIVE = "live"
    CLEANING = "cleaning"
    LEFT = "left"  # a cleanup could not prove it empty: see the entry's leftovers
    CLEAN = "clean"

    @property
    def dirty(self) -> bool:
        """May still hold resources."""
        return self is not StackState.CLEAN


class RunStatus(str, Enum):
    NEW = "new"  # no run yet
    RUNNING = "running"  # in progress, or killed: the next deploy resumes it
    DEPLOYED = "deployed"
    EXHAUSTED = "exhausted"
    STOPPED = "stopped"
    CLEANUP_FAILED = "cleanup-failed"
    DESTROYING = "destroying"  # a destroy in progress, or interrupted: run it again
    DESTROYED = "destroyed"


class Phase(str, Enum):
    """Where an attempt is: the step a killed run resumes."""

    UP = "up"
    READY = "ready"  # the stack is up; waiting for the replicas
    CLEANUP = "cleanup"  # failed; its stack is being cleaned
    DONE = "done"


@dataclass
class Attempt:
    """One `up` of one candidate (a retry is a new attempt), and what came of it."""

    n: int
    candidate: str
    cloud: str
    region: str
    zone: str | None
    zones: list[str]
    instance_types: list[str]
    use_spot: bool
    price_per_hour: float
    stack: str
    started_at: float
    phase: Phase = Phase.UP
    outcome: str | None = None  # a failure class, "retry", "interrupted", "deployed"
    endpoint: str | None = None
    up_s: float | None = None
    ready: str | None = None  # the readiness summary
    error: Failure | None = None  # kept while the cleanup runs, so a resume can finish it
    text: str | None = None  # what the engine said, capped
    error_class: str | None = None
    code: str | None = None
    message: str | None = None
    scope: str | None = None  # what the failure ruled out
    cleanup: str | None = None
    duration_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["phase"] = self.phase.value
        data["error"] = self.error.to_json() if self.error else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Attempt:
        values = _known(cls, data)
        values["phase"] = Phase(values.get("phase", Phase.UP.value))
        if values.get("error") is not None:
            values["error"] = Failure.from_json(values["error"])
        return cls(**values)


@dataclass
class StackEntry:
    """One candidate's stack and what it may still hold."""

    name: str
    candidate: str
    run: int
    deployment: Deployment
    state: StackState = StackState.CREATING
    endpoint: str | None = None
    leftovers: list[Leftover] = field(default_factory=list)
    untouched: bool = False  # its `up`s failed before creating anything in the cloud

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "candidate": self.candidate, "run": self.run,
                "deployment": self.deployment.to_config(), "state": self.state.value,
                "endpoint": self.endpoint, "leftovers": [x.to_json() for x in self.leftovers],
                "untouched": self.untouched}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StackEntry:
        values = _known(cls, data)
        values["deployment"] = Deployment.from_config(values["deployment"])
        values["state"] = StackState(values["state"])
        values["leftovers"] = [Leftover(**x) for x in values.get("leftovers") or []]
        return cls(**values)


@dataclass
class Live:
    """The candidate that is deployed and answering."""

    candidate: str
    stack: str
    endpoint: str | None
    cloud: str
    region: str
    instance_types: list[str]
    price_per_hour: float


@dataclass
class RunSummary:
    """An earlier run, as the history keeps it."""

    run: int
    status: RunStatus
    started_at: float | None
    finished_at: float | None
    message: str
    attempts: int


class Journal:
    """One service's runs, attempts, blocks and stacks; `save()` after every change."""

    def __init__(self, service: str, path: Path | None = None) -> None:
        self.service = service
        self.path = path
        self.run = 0
        self.status = RunStatus.NEW
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.candidates: list[str] = []
        self.settings: dict[str, Any] = {}
        self.attempts: list[Attempt] = []
        self.blocks: list[Block] = []
        self.stacks: dict[str, StackEntry] = {}
        self.live: Live | None = None
        self.message = ""
        self.history: list[RunSummary] = []
        self.resumed_at: list[float] = []
        self.prechecked = False

    # --- files --------------------------------------------------------------------------------

    @classmethod
    def open(cls, state_dir: str | os.PathLike, service: str) -> Journal:
        return cls.at(service_dir(state_dir, service) / JOURNAL_NAME, service)

    @classmethod
    def at(cls, path: Path, service: str) -> Journal:
        """The journal kept in `path` (a pool of a service over several pools keeps its own:
        servestack.deploy.pools)."""
        journal = cls(service, path)
        if not path.exists():
            return journal
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read the deploy journal: {exc}", file=str(path)) from None
        if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION \
                or data.get("service") != service:
            raise UserError("not a servestack deploy journal for this service (schema "
                            f"version {SCHEMA_VERSION})", file=str(path))
        try:
            journal._load(data)
        except (KeyError, TypeError, ValueError, AttributeError, UserError) as exc:
            raise UserError(
                f"the deploy journal is damaged ({_what(exc)}). Move it aside (mv {path} "
                f"{path}.damaged) to start afresh; the stacks it recorded are then not cleaned "
                "for you: check them with `pulumi stack ls` (or the folders under "
                f"{path.parent}/terraform/stacks/) and destroy what is left by hand",
                file=str(path)) from None
        return journal

    @classmethod
    def memory(cls, service: str) -> Journal:
        """A journal that is never written (the simulator)."""
        return cls(service, None)

    def save(self) -> None:
        if self.path is not None:
            write_atomic(self.path, json.dumps(self.to_json(), indent=2) + "\n")

    @property
    def exists(self) -> bool:
        return self.path is None or self.path.exists()

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION, "service": self.service, "run": self.run,
            "status": self.status.value, "started_at": self.started_at,
            "finished_at": self.finished_at, "candidates": self.candidates,
            "settings": self.settings, "attempts": [a.to_json() for a in self.attempts],
            "blocks": [b.to_json() for b in self.blocks],
            "stacks": {name: s.to_json() for name, s in self.stacks.items()},
            "live": asdict(self.live) if self.live else None, "message": self.message,
            "history": [asdict(h) | {"status": h.status.value} for h in self.history],
            "resumed_at": self.resumed_at, "prechecked": self.prechecked,
        }

    def _load(self, data: dict[str, Any]) -> None:
        self.run = _typed(data["run"], int, "run")
        self.status = RunStatus(data["status"])
        self.started_at, self.finished_at = data["started_at"], data["finished_at"]
        self.candidates = list(_typed(data["candidates"], list, "candidates"))
        self.settings = _typed(data["settings"], dict, "settings")
        self.attempts = [Attempt.from_json(a) for a in _typed(data["attempts"], list, "attempts")]
        self.blocks = [Block.from_json(b) for b in _typed(data["blocks"], list, "blocks")]
        self.stacks = {name: StackEntry.from_json(s)
                       for name, s in _typed(data["stacks"], dict, "stacks").items()}
        for attempt in self.attempts:
            if attempt.stack not in self.stacks:
                raise KeyError(f"stacks.{attempt.stack}")
        self.live = Live(**data["live"]) if data["live"] else None
        self.message = _typed(data["message"], str, "message")
        self.history = [RunSummary(**h | {"status": RunStatus(h["status"])})
                        for h in data["history"]]
        self.resumed_at = list(data.get("resumed_at", []))
        self.prechecked = bool(data.get("prechecked", False))

    # --- runs ---------------------------------------------------------------------------------

    def begin_run(self, candidates: list[str], settings: dict[str, Any], now: float) -> None:
        """A fresh run: new attempts and blocks; stacks (dirty or not) are kept."""
        if self.attempts:
            self.history.append(RunSummary(self.run, self.status, self.started_at,
                                           self.finished_at, self.message, len(self.attempts)))
        self.run += 1
        self.status, self.started_at, self.finished_at = RunStatus.RUNNING, now, None
        self.candidates, self.settings = list(candidates), settings
        self.attempts, self.blocks, self.message, self.live = [], [], "", None
        self.prechecked = False
        self.save()

    def resume(self, now: float) -> None:
        self.resumed_at.append(now)
        self.save()

    def finish(self, status: RunStatus, now: float, message: str = "") -> None:
        self.status, self.finished_at, self.message = status, now, message
        self.save()

    def begin_destroy(self, now: float) -> None:
        """One write before anything is destroyed: nothing is live any more, every dirty
        stack is being cleaned, and the run says so until the destroy ends."""
        self.status, self.finished_at, self.live = RunStatus.DESTROYING, None, None
        self.message = f"destroy started at {now:.0f}; if it is not running any more, run " \
            "`servestack destroy` again to finish it"
        for entry in self.dirty_stacks():
            entry.state = StackState.CLEANING
        self.save()

    # --- stacks -------------------------------------------------------------------------------

    def set_stack(self, name: str, state: StackState, *, endpoint: str | None = None,
                  leftovers: list[Leftover] | None = None) -> None:
        entry = self.stacks[name]
        entry.state = state
        if endpoint is not None:
            entry.endpoint = endpoint
        if leftovers is not None:
            entry.leftovers = leftovers
        self.save()

    def dirty_stacks(self) -> list[StackEntry]:
        return [s for s in self.stacks.values() if s.state.dirty]

    def set_live(self, live: Live | None) -> None:
        self.live = live
        self.save()

    # --- attempts and blocks --------------------------------------------------------------------

    def start_attempt(self, attempt: Attempt, stack: StackEntry) -> Attempt:
        """Record an attempt and (in the same write) its stack as "creating"."""
        attempt.n = len(self.attempts) + 1
        self.attempts.append(attempt)
        entry = self.stacks.get(stack.name)
        if entry is None:
            self.stacks[stack.name] = stack
        else:  # the same candidate again: keep what the entry knew, e.g. its endpoint
            entry.run, entry.deployment = stack.run, stack.deployment
            entry.state, entry.untouched = StackState.CREATING, False
        self.save()
        return attempt

    def add_blocks(self, blocks: list[Block] | tuple[Block, ...]) -> None:
        for block in blocks:
            if block not in self.blocks:
                self.blocks.append(block)
        self.save()


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The fields of `cls` in `data`; a missing required one is a KeyError naming it."""
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__}: expected an object, got {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def _typed(value: Any, kind: type, name: str) -> Any:
    if not isinstance(value, kind):
        raise TypeError(f"{name}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def _what(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"missing {exc.args[0]!r}"
    text = str(exc).split("\n")[0].replace(".__init__()", "")
    return text[:200] or type(exc).__name__


def known_services(state_dir: str | os.PathLike) -> list[str]:
    root = Path(state_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if (p / JOURNAL_NAME).exists() or (p / SERVICE_JOURNAL_NAME).exists())
