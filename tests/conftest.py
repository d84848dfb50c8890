"""Shared fixtures: the real shipped catalog and a spec loader over text."""

from __future__ import annotations

from pathlib import Path

import pytest

from servestack.inputs import load_inputs

SHARED_MIXTRAL = Path(__file__).resolve().parents[2] / "shared" / "specs" / \
    "skypilot-mixtral-serve.yaml"


@pytest.fixture(scope="session")
def embedded():
    """The embedded Mixtral example, loaded once: spec, catalog, model facts."""
    return load_inputs(None)


@pytest.fixture
def write_spec(tmp_path):
    def write(text: str | bytes, name: str = "serve.yaml") -> Path:
        path = tmp_path / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return path
    return write
