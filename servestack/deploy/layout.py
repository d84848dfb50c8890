"""Where a service's deploy state lives: `<state dir>/<service>/`, its journal `journal.json`
there. Apart from `journal` so that `plan` can look for a journal without loading the deploy
machinery."""

from __future__ import annotations

import os
from pathlib import Path

JOURNAL_NAME = "journal.json"
# A service over several pools (servestack.deploy.pools): the service's own journal, and one
# journal per pool under POOLS_DIR.
SERVICE_JOURNAL_NAME = "service.json"
POOLS_DIR = "pools"


def service_dir(state_dir: str | os.PathLike, service: str) -> Path:
    return Path(state_dir) / service


def service_journal_path(state_dir: str | os.PathLike, service: str) -> Path:
    return service_dir(state_dir, service) / SERVICE_JOURNAL_NAME


def journal_path(state_dir: str | os.PathLike, service: str) -> Path:
    return service_dir(state_dir, service) / JOURNAL_NAME
