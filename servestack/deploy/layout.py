"""Where a service's deploy state lives: `<state dir>/<service>/`, its journal `journal.json`
there. Apart from `journal` so that `plan` can look for a journal without loading the deploy
machinery."""

from __future__ import annotations

import os
from pathlib import Path

JOURNAL_NAME = "journal.json"


def service_dir(state_dir: str | os.PathLike, service: str) -> Path:
    return Path(state_dir) / service


def journal_path(state_dir: str | os.PathLike, service: str) -> Path:
    return service_dir(state_dir, service) / JOURNAL_NAME
