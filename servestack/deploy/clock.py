"""Time for the deploy loop and the readiness probe: the `Clock` they take, and the real one.

Tests and the simulator pass a simulated clock (tests.fakes.SimClock), so timeouts, backoffs
and readiness waits take no real time.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(seconds, 0))
