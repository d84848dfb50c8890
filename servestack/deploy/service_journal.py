"""The journal of a service over several pools: its pools, its key and front stacks.

One JSON file per service (`<state dir>/<service>/service.json`), replaced atomically on every
change, beside one ordinary deploy journal per pool (`pools/<cloud>-<region>.json`, written by
that pool's `Fallback`). This file says which pools the run uses and where each one is:

  open -> claimed (a lane is bringing it up) -> ready -> kept
                                             -> failed (every candidate ruled out)
  claimed/ready -> releasing (being destroyed) -> released

and the shared stacks' states (absent -> applying -> up -> destroying -> absent). The write
comes before the step it records, so a killed run resumes from it. Several lanes (threads)
write it: every change goes through `change()`, under one lock. `decided` is set once the
kept pools are chosen: from then on no pool becomes kept by a lane. `request` is what the
deploy was asked (spec path and flags, no values of envs or secrets), so `reconcile` can plan
again without the user repeating it. Only this module reads or writes the file's JSON.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any

from servestack.deploy.journal import RunStatus
from servestack.deploy.layout import POOLS_DIR
from servestack.errors import UserError
from servestack.fsutil import write_atomic

SCHEMA_VERSION = 1


class PoolState(str, Enum):
    OPEN = "open"
    CLAIMED = "claimed"
    READY = "ready"
    KEPT = "kept"
    FAILED = "failed"
    RELEASING = "releasing"
    RELEASED = "released"

    @property
    def holding(self) -> bool:
        """May hold cloud resources of this run."""
        return self in (PoolState.CLAIMED, PoolState.READY, PoolState.KEPT,
                        PoolState.RELEASING)


@dataclass
class PoolRecord:
    """One pool (cloud x region) of the service, and what this run did with it."""

    cloud: str
    region: str
    share: int  # replicas it is brought up with
    price_per_hour: float  # one replica, the pool's best candidate (the live one once up)
    hedge: bool = False  # beyond the placement
    state: PoolState = PoolState.OPEN
    lane: int | None = None
    stack: str | None = None
    endpoint: str | None = None
    started_at: float | None = None
    ready_at: float | None = None
    released_at: float | None = None
    reason: str = ""  # why it failed or was released
    covers: str | None = None  # reconcile: the short pool whose replicas it holds

    @property
    def key(self) -> str:
        return f"{self.cloud}-{self.region}"

    @property
    def hourly(self) -> float:
        return round(self.price_per_hour * self.share, 4)

    @property
    def cost_usd(self) -> float | None:
        """What a released pool cost while it was up: its replicas' hourly price for the time
        from its first `up` to the end of its cleanup."""
        if self.released_at is None or self.started_at is None:
            return None
        return round(self.hourly * (self.released_at - self.started_at) / 3600, 4)

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"state": self.state.value}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PoolRecord:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["state"] = PoolState(values.get("state", PoolState.OPEN.value))
        return cls(**values)


@dataclass
class SharedRecord:
    """The key stack or the front stack."""

    name: str
    state: str = "absent"  # absent | applying | up | destroying
    pools: list[str] = field(default_factory=list)  # front: the pool stacks it names
    endpoint: str | None = None


class ServiceJournal:
    def __init__(self, service: str, path: Path | None) -> None:
        self.service, self.path = service, path
        self.run = 0
        self.status = RunStatus.NEW
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.ready_at: float | None = None
        self.message = ""
        self.needed = 0
        self.settings: dict[str, Any] = {}
        self.request: dict[str, Any] = {}
        self.pools: list[PoolRecord] = []
        self.decided = False
        self.key: SharedRecord | None = None
        self.front: SharedRecord | None = None
        self.reconcile: dict[str, Any] = {}  # the pass in progress (empty: none)
        self.passes = 0
        self.saves = 0
        self._lock = threading.RLock()

    # --- files --------------------------------------------------------------------------------

    @classmethod
    def at(cls, path: Path, service: str) -> ServiceJournal:
        journal = cls(service, path)
        if not path.exists():
            return journal
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("schema_version") != SCHEMA_VERSION or data.get("service") != service:
                raise ValueError(f"not a servestack service journal of {service} (schema "
                                 f"version {SCHEMA_VERSION})")
            journal._load(data)
        except (OSError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UserError(f"cannot read the service journal ({exc}); move it aside to start "
                            "afresh, then destroy by hand what its pools' journals recorded",
                            file=str(path)) from None
        return journal

    @property
    def exists(self) -> bool:
        return self.path is None or self.path.exists()

    def pool_path(self, pool: PoolRecord) -> Path | None:
        """Where the pool's own deploy journal is (None: in memory only)."""
        return self.path.parent / POOLS_DIR / f"{pool.key}.json" if self.path else None

    def save(self) -> None:
        with self._lock:
            self.saves += 1
            if self.path is not None:
                write_atomic(self.path, json.dumps(self.to_json(), indent=2) + "\n")

    @contextmanager
    def locked(self) -> Iterator[ServiceJournal]:
        """Read records as one state, under the lock the lanes share (no save)."""
        with self._lock:
            yield self

    @contextmanager
    def change(self) -> Iterator[ServiceJournal]:
        """Change records and save, under the lock the lanes share."""
        with self._lock:
            yield self
            self.save()

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "service": self.service, "run": self.run,
                "status": self.status.value, "started_at": self.started_at,
                "finished_at": self.finished_at, "ready_at": self.ready_at,
                "message": self.message, "needed": self.needed, "settings": self.settings,
                "request": self.request, "pools": [p.to_json() for p in self.pools],
                "decided": self.decided,
                "key": asdict(self.key) if self.key else None,
                "front": asdict(self.front) if self.front else None,
                "reconcile": self.reconcile, "passes": self.passes}

    def _load(self, data: dict[str, Any]) -> None:
        self.run, self.status = int(data["run"]), RunStatus(data["status"])
        self.started_at, self.finished_at = data["started_at"], data["finished_at"]
        self.ready_at, self.message = data.get("ready_at"), str(data["message"])
        self.needed, self.settings = int(data["needed"]), dict(data["settings"])
        self.request = dict(data.get("request") or {})
        self.pools = [PoolRecord.from_json(p) for p in data["pools"]]
        self.decided = bool(data["decided"])
        self.key = SharedRecord(**data["key"]) if data.get("key") else None
        self.front = SharedRecord(**data["front"]) if data.get("front") else None
        self.reconcile = dict(data.get("reconcile") or {})
        self.passes = int(data.get("passes", 0))

    # --- runs ---------------------------------------------------------------------------------

    def begin(self, pools: list[PoolRecord], needed: int, settings: dict[str, Any],
              key: str | None, front: str, now: float) -> None:
        """A fresh run over `pools` (placed first). Pools a run keeps stay in the list with
        their state, so the new run does not start a second stack in their region."""
        with self.change():
            kept = {p.key: p for p in self.pools if p.state is PoolState.KEPT}
            self.run += 1
            self.status, self.started_at, self.finished_at = RunStatus.RUNNING, now, None
            self.ready_at, self.message, self.decided = None, "", False
            self.needed, self.settings = needed, settings
            self.pools = [kept.get(p.key, p) for p in pools]
            self.key = SharedRecord(key) if key else None
            self.front = self.front if self.front and self.front.name == front \
                else SharedRecord(front)

    def finish(self, status: RunStatus, now: float, message: str) -> None:
        with self.change():
            self.status, self.finished_at, self.message = status, now, message

    def pool(self, key: str) -> PoolRecord:
        return next(p for p in self.pools if p.key == key)

    def in_state(self, *states: PoolState) -> list[PoolRecord]:
        return [p for p in self.pools if p.state in states]

    def ready_replicas(self) -> int:
        return sum(p.share for p in self.in_state(PoolState.READY, PoolState.KEPT))
