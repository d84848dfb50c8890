"""The one watchdog every engine child command runs under (the Pulumi CLI, every terraform).

`run` starts the command, streams its output lines to callbacks, and guarantees three things:

- a timeout: after `timeout_s` the child gets SIGINT, so Pulumi cancels its update and
  Terraform stops and writes its state; if it has not exited `grace_s` later, its whole
  process group (provider plugins included) is killed;
- an interrupt reaches it: a KeyboardInterrupt in the waiting thread (Ctrl-C, or SIGTERM turned
  into one by the command line) sends the child one SIGINT, waits the same grace, kills the
  group if needed, then re-raises. The child runs in its own session, so a Ctrl-C at the
  terminal reaches it once, through us: a second SIGINT would make both tools stop hard;
- it is reaped: every path out of `run` waits for the child, so no zombie and no orphaned
  `terraform` is left running after we return or raise.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO

Lines = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Finished:
    code: int  # the exit code; negative: the signal that ended it
    timed_out: bool  # the timeout fired (whatever the exit code was afterwards)


def run(argv: Sequence[str], *, cwd: str | os.PathLike | None, env: Mapping[str, str],
        timeout_s: float, grace_s: float, on_stdout: Lines,
        on_stderr: Lines | None = None) -> Finished:
    """Run `argv` under the watchdog. Lines go to the callbacks (from reader threads) without
    their line ends; with `on_stderr` None, stderr is merged into stdout."""
    with subprocess.Popen(list(argv), cwd=cwd, env=dict(env), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE if on_stderr else subprocess.STDOUT,
                          encoding="utf-8", errors="replace",
                          start_new_session=True) as child:
        readers = [_reader(child.stdout, on_stdout)]
        if on_stderr:
            readers.append(_reader(child.stderr, on_stderr))
        try:
            timed_out = _wait(child, timeout_s, grace_s)
        except BaseException:
            _stop(child, grace_s)
            raise
        finally:
            for reader in readers:
                reader.join()
    return Finished(child.returncode, timed_out)


def _reader(stream: IO[str] | None, callback: Lines) -> threading.Thread:
    def pump() -> None:
        assert stream is not None
        for line in stream:
            callback(line.rstrip("\n"))

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def _wait(child: subprocess.Popen, timeout_s: float, grace_s: float) -> bool:
    """Wait for the child; at the timeout, stop it. True when the timeout fired."""
    try:
        child.wait(timeout=timeout_s)
        return False
    except subprocess.TimeoutExpired:
        _stop(child, grace_s)
        return True


def _stop(child: subprocess.Popen, grace_s: float) -> None:
    """SIGINT, `grace_s` to finish, then SIGKILL to its process group; always reaped. An
    interrupt while waiting cuts the grace short and is raised once the child is reaped."""
    interrupted = False
    if child.poll() is None:
        child.send_signal(signal.SIGINT)
        try:
            child.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        except KeyboardInterrupt:
            interrupted = True
    _kill_group(child)
    child.wait()
    if interrupted:
        raise KeyboardInterrupt


def _kill_group(child: subprocess.Popen) -> None:
    """Kill what is left of the child's session: the child itself and anything it started
    (provider plugins) that outlived it."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
