"""One deploy or destroy of a service at a time on this machine, wherever it is run from.

`ServiceLock` holds an exclusive flock on `<locks>/<backend key>/<service>.lock` for the whole
command, where `<locks>` is `$XDG_STATE_HOME/servestack/locks` (default
`~/.local/state/servestack/locks`): a per-user place that does not depend on the working
directory or `--state-dir`. A second deploy or destroy of the same service fails at once with
exit code 6; the kernel drops the lock when the process dies, so a killed run leaves no stale
lock behind.

What "the same service" means: the same service name deployed into the same stacks. Stacks
with local state (the Pulumi file backend in a state dir, Terraform's local state) all share
the key "local": two folders hold two journals, but their stacks create the same physical names
(derived from service and stack, not from the folder) in the same accounts, so they must not
run together. A shared Pulumi backend (s3://, azblob://, gs://, https://api.pulumi.com) is its
own key, a digest of its URL: the same service name in two organizations' backends is two
services. Across machines, only Pulumi's own per-stack lock in a shared backend guards a stack;
run the deploys of one service from one CI concurrency group.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
from pathlib import Path
from typing import TextIO

from servestack.errors import UserError

LOCAL = "local"


class DeployLocked(UserError):
    exit_code = 6


def user_dir() -> Path:
    """servestack's per-user state: `$XDG_STATE_HOME/servestack` (~/.local/state/servestack)."""
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "servestack"


def locks_root() -> Path:
    return user_dir() / "locks"


def backend_key(engine: str, backend_url: str | None) -> str:
    """LOCAL for state on this machine, else `pulumi-<digest of the backend URL>`."""
    if engine != "pulumi" or not backend_url or backend_url.startswith("file://"):
        return LOCAL
    return "pulumi-" + hashlib.sha256(backend_url.rstrip("/").encode()).hexdigest()[:16]


class ServiceLock:
    """An exclusive, non-blocking lock on one service for the length of a command."""

    def __init__(self, service: str, key: str = LOCAL, root: Path | None = None) -> None:
        self.path = (root or locks_root()) / key / f"{service}.lock"
        self.service = service
        self._handle: TextIO | None = None

    def __enter__(self) -> ServiceLock:
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
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} in {os.getcwd()}\n")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.seek(0)
            self._handle.truncate()
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def running(service: str, root: Path | None = None) -> bool:
    """Is a deploy or destroy of `service` (under any backend key) running on this machine?"""
    for path in (root or locks_root()).glob(f"*/{service}.lock"):
        with open(path, encoding="utf-8") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return False
