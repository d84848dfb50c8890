"""How a deploy or destroy ended: its status, exit code and JSON report (schema_version 1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from servestack.deploy.journal import Journal, RunStatus, StackState

EXIT_DEPLOYED, EXIT_EXHAUSTED, EXIT_STOPPED, EXIT_CLEANUP_FAILED = 0, 3, 4, 5
EXIT_CODES = {RunStatus.DEPLOYED: EXIT_DEPLOYED, RunStatus.EXHAUSTED: EXIT_EXHAUSTED,
              RunStatus.STOPPED: EXIT_STOPPED, RunStatus.CLEANUP_FAILED: EXIT_CLEANUP_FAILED,
              RunStatus.DESTROYED: EXIT_DEPLOYED}
ATTEMPT_KEYS = ("n", "candidate", "cloud", "region", "zone", "zones", "instance_types",
                "use_spot", "price_per_hour", "stack", "started_at", "duration_s", "outcome",
                "error_class", "code", "message", "scope", "cleanup", "endpoint", "ready")


class Ended:
    """The exit code of a run's status (a single-pool run, or a service over several pools)."""

    status: RunStatus

    @property
    def exit_code(self) -> int | None:
        """None while a run is still in progress (or was killed): see `servestack status`."""
        return EXIT_CODES.get(self.status)

    @property
    def final_exit_code(self) -> int:
        """The exit code of a command that ran to its end (a run in progress here is a bug)."""
        code = self.exit_code
        if code is None:
            raise RuntimeError(f"the run ended with status {self.status.value}, not a final one")
        return code


@dataclass
class Outcome(Ended):
    status: RunStatus
    message: str
    journal: Journal

    def to_json(self) -> dict[str, Any]:
        j = self.journal
        left = [x.to_json() for s in j.stacks.values() if s.state is StackState.LEFT
                for x in s.leftovers]
        started, finished = j.started_at, j.finished_at
        return {
            "schema_version": 1, "service": j.service, "run": j.run,
            "outcome": self.status.value, "exit_code": self.exit_code, "message": self.message,
            "endpoint": j.live.endpoint if j.live else None,
            "candidate": j.live.candidate if j.live else None,
            "started_at": started, "finished_at": finished,
            "duration_s": round(finished - started, 3) if started and finished else None,
            "attempts": [{k: getattr(a, k) for k in ATTEMPT_KEYS} for a in j.attempts],
            "blocked": [b.to_json() for b in j.blocks], "leftovers": left,
        }


def finish(journal: Journal, status: RunStatus, message: str, now: float) -> Outcome:
    journal.finish(status, now, message)
    return Outcome(status, message, journal)
