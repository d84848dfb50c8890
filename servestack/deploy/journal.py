"""The deploy journal: every attempt and every stack, written before each step it records.

One JSON file per service (`<state dir>/<service>/journal.json`), replaced atomically on every
change, so a run killed at any point leaves a file that says which stacks may hold resources
("dirty") and which candidates were ruled out ("blocks"). The next `servestack deploy` of the
service reads it, cleans what is dirty, and resumes; `servestack status` and `servestack
destroy` read it too.

Stack states: creating -> up -> live (deployed), or creating/up -> cleaning -> clean; a cleanup
that could not verify an empty stack leaves the state "left" with what is left. Every state but
"clean" is dirty. The loop never starts a stack while another one is dirty, so at most one
candidate is ever live.

`ServiceLock` holds an exclusive flock on `<state dir>/<service>/lock` for the whole command: a
second deploy or destroy of the same service on this machine fails at once with exit code 6. The
kernel drops the lock when the process dies, so a killed run leaves no stale lock behind. (With
a shared Pulumi backend, Pulumi's own per-stack lock guards against other machines.)
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from servestack.deploy.failures import Block
from servestack.errors import UserError
from servestack.fsutil import write_atomic

SCHEMA_VERSION = 1
DIRTY = ("creating", "up", "cleaning", "left", "live")
FINAL = ("deployed", "exhausted", "stopped", "cleanup-failed", "destroyed")
JOURNAL_NAME = "journal.json"


class Journal:
    def __init__(self, service: str, path: Path | None = None, data: dict | None = None) -> None:
        self.service = service
        self.path = path
        self.data = data or _empty(service)
        self._blocks: tuple[list, list[Block]] | None = None  # parsed self.data["blocks"]

    # --- files --------------------------------------------------------------------------------

    @classmethod
    def open(cls, state_dir: str | os.PathLike, service: str) -> Journal:
        path = service_dir(state_dir, service) / JOURNAL_NAME
        if not path.exists():
            return cls(service, path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read the deploy journal: {exc}", file=str(path)) from None
        if data.get("schema_version") != SCHEMA_VERSION or data.get("service") != service:
            raise UserError("not a servestack deploy journal for this service", file=str(path))
        return cls(service, path, data)

    @classmethod
    def memory(cls, service: str) -> Journal:
        """A journal that is never written (the simulator)."""
        return cls(service, None)

    def save(self) -> None:
        if self.path is not None:
            write_atomic(self.path, json.dumps(self.data, indent=2, sort_keys=False) + "\n")

    @property
    def exists(self) -> bool:
        return self.path is None or self.path.exists()

    # --- runs ---------------------------------------------------------------------------------

    @property
    def status(self) -> str:
        return self.data["status"]

    @property
    def run(self) -> int:
        return self.data["run"]

    def begin_run(self, candidates: list[str], settings: dict, now: float) -> None:
        """A fresh run: new attempts and blocks; stacks (dirty or not) are kept."""
        if self.data["attempts"]:
            self.data["history"].append(self._summary())
        self.data.update(run=self.data["run"] + 1, status="running", started_at=now,
                         finished_at=None, candidates=list(candidates), settings=settings,
                         attempts=[], blocks=[], message="", live=None)
        self.save()

    def resume(self, now: float) -> None:
        self.data["resumed_at"] = [*self.data.get("resumed_at", []), now]
        self.save()

    def finish(self, status: str, now: float, message: str = "") -> None:
        self.data.update(status=status, finished_at=now, message=message)
        self.save()

    def _summary(self) -> dict:
        return {k: self.data.get(k) for k in ("run", "status", "started_at", "finished_at",
                                              "message")} | {"attempts": len(self.attempts)}

    # --- stacks -------------------------------------------------------------------------------

    @property
    def stacks(self) -> dict[str, dict]:
        return self.data["stacks"]

    def set_stack(self, name: str, state: str, **fields) -> None:
        entry = self.stacks.setdefault(name, {"name": name})
        entry.update(fields, state=state)
        self.save()

    def dirty_stacks(self) -> list[dict]:
        return [s for s in self.stacks.values() if s["state"] in DIRTY]

    @property
    def live(self) -> dict | None:
        return self.data.get("live")

    def set_live(self, live: dict | None) -> None:
        self.data["live"] = live
        self.save()

    # --- attempts and blocks --------------------------------------------------------------------

    @property
    def attempts(self) -> list[dict]:
        return self.data["attempts"]

    def start_attempt(self, record: dict, stack: dict | None = None) -> dict:
        """Record an attempt and (in the same write) its stack as "creating"."""
        record = {"n": len(self.attempts) + 1, "phase": "up", **record}
        self.attempts.append(record)
        if stack is not None:
            entry = self.stacks.setdefault(stack["name"], {"name": stack["name"]})
            entry.update(stack, state="creating")
        self.save()
        return record

    def update_attempt(self, record: dict, **fields) -> None:
        record.update(fields)
        self.save()

    @property
    def blocks(self) -> list[Block]:
        raw = self.data["blocks"]
        if self._blocks is None or self._blocks[0] is not raw or len(self._blocks[1]) != len(raw):
            self._blocks = (raw, [Block.from_json(b) for b in raw])
        return list(self._blocks[1])

    def add_blocks(self, blocks) -> None:
        known = self.data["blocks"]
        for block in blocks:
            if block.to_json() not in known:
                known.append(block.to_json())
        self.save()


def _empty(service: str) -> dict:
    return {"schema_version": SCHEMA_VERSION, "service": service, "run": 0, "status": "new",
            "started_at": None, "finished_at": None, "candidates": [], "settings": {},
            "attempts": [], "blocks": [], "stacks": {}, "live": None, "message": "",
            "history": []}


def service_dir(state_dir: str | os.PathLike, service: str) -> Path:
    return Path(state_dir) / service


def known_services(state_dir: str | os.PathLike) -> list[str]:
    root = Path(state_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / JOURNAL_NAME).exists())


class DeployLocked(UserError):
    exit_code = 6


class ServiceLock:
    """An exclusive, non-blocking lock on one service for the length of a command."""

    def __init__(self, state_dir: str | os.PathLike, service: str) -> None:
        self.path = service_dir(state_dir, service) / "lock"
        self.service = service
        self._handle = None

    def __enter__(self) -> ServiceLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until __exit__
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise DeployLocked(f"another deploy or destroy of {self.service!r} is running "
                               f"({holder}); wait for it or stop it first",
                               file=str(self.path)) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc) -> None:
        import fcntl

        if self._handle is not None:
            self._handle.seek(0)
            self._handle.truncate()
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
