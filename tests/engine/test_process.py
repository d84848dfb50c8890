"""The watchdog with real child processes: timeout, forwarded interrupt, grace kill, reaping."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import threading
import time

import pytest

from servestack.engine.process import run

# A child that reports its pid, counts the SIGINTs it gets, and says so when it leaves.
POLITE = textwrap.dedent("""
    import os, signal, sys, time
    got = []
    def on_int(*_):
        got.append(1)
        time.sleep(0.3)  # room for a second SIGINT, which must not come
        print(f"cancelled after {len(got)} SIGINT", flush=True)
        sys.exit(4)
    signal.signal(signal.SIGINT, on_int)
    print(f"pid {os.getpid()}", flush=True)
    print("oops", file=sys.stderr, flush=True)
    time.sleep(60)
""")
# A child that ignores SIGINT and starts a grandchild (a provider plugin) that does too.
STUBBORN = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    plugin = subprocess.Popen([sys.executable, "-c",
                               "import signal, time; signal.signal(signal.SIGINT, "
                               "signal.SIG_IGN); time.sleep(60)"])
    print(f"pid {os.getpid()} plugin {plugin.pid}", flush=True)
    time.sleep(60)
""")


class Lines:
    def __init__(self) -> None:
        self.out: list[str] = []
        self.err: list[str] = []
        self.started = threading.Event()

    def stdout(self, line: str) -> None:
        self.out.append(line)
        if line.startswith("pid "):
            self.started.set()

    def pids(self) -> list[int]:
        words = self.out[0].split()
        return [int(w) for w in words if w.isdigit()]


def child(script: str) -> list[str]:
    return [sys.executable, "-c", script]


def reaped(pid: int) -> bool:
    """Our own child: waitpid knows it no more once it was waited for."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def gone(pid: int, within_s: float = 5.0) -> bool:
    """Someone else's child (the grandchild): no such process any more."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_a_finished_command_gives_its_code_and_both_streams():
    lines = Lines()
    script = "import sys; print('one'); print('two', file=sys.stderr); sys.exit(3)"
    finished = run(child(script), cwd=None, env=os.environ, timeout_s=30, grace_s=5,
                   on_stdout=lines.stdout, on_stderr=lines.err.append)
    assert (finished.code, finished.timed_out) == (3, False)
    assert (lines.out, lines.err) == (["one"], ["two"])


def test_merged_streams_when_no_stderr_callback():
    lines = Lines()
    script = "import sys; print('one', flush=True); print('two', file=sys.stderr)"
    run(child(script), cwd=None, env=os.environ, timeout_s=30, grace_s=5,
        on_stdout=lines.stdout)
    assert sorted(lines.out) == ["one", "two"]


def test_the_timeout_sends_one_sigint_and_the_child_finishes_cleanly():
    lines = Lines()
    start = time.monotonic()
    finished = run(child(POLITE), cwd=None, env=os.environ, timeout_s=0.5, grace_s=20,
                   on_stdout=lines.stdout, on_stderr=lines.err.append)
    assert (finished.code, finished.timed_out) == (4, True)
    assert lines.out[-1] == "cancelled after 1 SIGINT" and lines.err == ["oops"]
    assert time.monotonic() - start < 10  # it left on SIGINT, well before the grace ran out
    assert reaped(lines.pids()[0])


def test_a_child_ignoring_sigint_is_killed_with_its_plugins_after_the_grace():
    lines = Lines()
    start = time.monotonic()
    finished = run(child(STUBBORN), cwd=None, env=os.environ, timeout_s=0.5, grace_s=0.5,
                   on_stdout=lines.stdout)
    assert (finished.code, finished.timed_out) == (-signal.SIGKILL, True)
    assert time.monotonic() - start < 10
    pid, plugin = lines.pids()
    assert reaped(pid) and gone(plugin)


def test_an_interrupt_reaches_the_child_once_and_the_child_is_reaped():
    lines = Lines()

    def interrupt_us() -> None:  # what Ctrl-C (or SIGTERM via the CLI) does to servestack
        if lines.started.wait(10):
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_us, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        run(child(POLITE), cwd=None, env=os.environ, timeout_s=60, grace_s=20,
            on_stdout=lines.stdout, on_stderr=lines.err.append)
    assert lines.out[-1] == "cancelled after 1 SIGINT"
    assert reaped(lines.pids()[0])
