"""The deploy journal (atomic JSON, dirty stacks, blocks, runs)."""

from __future__ import annotations

import json
import os

import pytest

from servestack.deploy.failures import Block, Failure
from servestack.deploy.journal import (
    Attempt,
    Journal,
    Live,
    Phase,
    RunStatus,
    StackEntry,
    StackState,
    known_services,
)
from servestack.engine import Leftover
from servestack.errors import UserError
from tests.fakes import GCP1, PLAN, build

DEPLOYMENT = build(PLAN.candidates[0], PLAN.candidates)


def attempt(stack: str = "mixtral-a") -> Attempt:
    return Attempt(0, "a", "gcp", "us-central1", None, ["us-central1-a"], ["a2-ultragpu-2g"],
                   False, 10.0, stack, started_at=1.0)


def entry(name: str = "mixtral-a") -> StackEntry:
    return StackEntry(name, "a", 1, DEPLOYMENT)


def test_new_journal_is_empty_and_not_written_until_saved(tmp_path):
    journal = Journal.open(tmp_path, "mixtral")
    assert journal.status is RunStatus.NEW and journal.attempts == [] and not journal.exists
    journal.begin_run(["a", "b"], {"max_attempts": None}, now=100.0)
    assert journal.exists
    data = json.loads((tmp_path / "mixtral" / "journal.json").read_text())
    assert data["status"] == "running" and data["candidates"] == ["a", "b"]
    assert data["run"] == 1 and data["started_at"] == 100.0


def test_every_change_is_on_disk_at_once(tmp_path):
    journal = Journal.open(tmp_path, "mixtral")
    journal.begin_run(["a"], {}, now=1.0)
    record = journal.start_attempt(attempt(), entry())
    again = Journal.open(tmp_path, "mixtral")
    assert again.attempts[0].phase is Phase.UP and again.attempts[0].n == 1
    assert [s.name for s in again.dirty_stacks()] == ["mixtral-a"]
    assert again.stacks["mixtral-a"].state is StackState.CREATING
    record.phase, record.outcome = Phase.DONE, "capacity"
    journal.save()
    journal.set_stack("mixtral-a", StackState.CLEAN)
    again = Journal.open(tmp_path, "mixtral")
    assert again.attempts[0].outcome == "capacity" and again.dirty_stacks() == []
    assert again.stacks["mixtral-a"].deployment == DEPLOYMENT  # kept across state changes


def test_every_record_round_trips(tmp_path):
    journal = Journal.open(tmp_path, "mixtral")
    journal.begin_run(["a"], {"retries": 3}, now=1.0)
    record = journal.start_attempt(attempt(), entry())
    record.phase, record.error = Phase.CLEANUP, Failure("capacity", "X", "block", "no GPUs",
                                                        blocks=(Block("gcp", "us-central1"),))
    journal.set_stack("mixtral-a", StackState.LEFT, endpoint="http://lb",
                      leftovers=[Leftover("t", "n", "i", "cloud")])
    journal.set_live(Live(GCP1, "mixtral-a", "http://lb", "gcp", "us-central1", ["x"], 1.5))
    journal.add_blocks([Block("aws", error_class="credentials")])
    journal.resume(now=2.0)
    journal.finish(RunStatus.CLEANUP_FAILED, now=3.0, message="left: n")
    journal.begin_run(["a"], {}, now=4.0)
    again = Journal.open(tmp_path, "mixtral")
    assert again.to_json() == journal.to_json()
    assert again.history[0].status is RunStatus.CLEANUP_FAILED
    assert again.stacks["mixtral-a"].leftovers == [Leftover("t", "n", "i", "cloud")]


def test_blocks_are_kept_once_and_round_trip(tmp_path):
    journal = Journal.open(tmp_path, "mixtral")
    journal.begin_run([], {}, now=1.0)
    block = Block("gcp", "us-central1", "us-central1-a", ("a2-ultragpu-2g",), spot=False,
                  error_class="capacity", code="ZONE_RESOURCE_POOL_EXHAUSTED")
    journal.add_blocks([block, block])
    assert Journal.open(tmp_path, "mixtral").blocks == [block]


def test_a_new_run_keeps_dirty_stacks_and_history(tmp_path):
    journal = Journal.open(tmp_path, "mixtral")
    journal.begin_run(["a"], {}, now=1.0)
    journal.start_attempt(attempt("s"), entry("s"))
    journal.set_stack("s", StackState.LEFT, leftovers=[Leftover("t", "n", None, "state")])
    journal.add_blocks([Block("aws")])
    journal.finish(RunStatus.CLEANUP_FAILED, now=2.0, message="left: t")
    journal.begin_run(["a"], {}, now=3.0)
    assert journal.run == 2 and journal.attempts == [] and journal.blocks == []
    assert journal.history[-1].status is RunStatus.CLEANUP_FAILED
    assert [s.name for s in journal.dirty_stacks()] == ["s"]


def test_memory_journal_never_touches_disk(tmp_path):
    journal = Journal.memory("sim")
    journal.begin_run(["a"], {}, now=0.0)
    journal.finish(RunStatus.EXHAUSTED, now=1.0)
    assert journal.status is RunStatus.EXHAUSTED and list(tmp_path.iterdir()) == []


def test_a_broken_or_foreign_journal_is_a_user_error(tmp_path):
    path = tmp_path / "mixtral" / "journal.json"
    path.parent.mkdir()
    path.write_text("{not json")
    with pytest.raises(UserError, match="cannot read the deploy journal"):
        Journal.open(tmp_path, "mixtral")
    path.write_text(json.dumps({"schema_version": 1, "service": "other"}))
    with pytest.raises(UserError, match="not a servestack deploy journal"):
        Journal.open(tmp_path, "mixtral")
    path.write_text(json.dumps({"schema_version": 2, "service": "mixtral"}))
    with pytest.raises(UserError, match="schema version 1"):
        Journal.open(tmp_path, "mixtral")


def _written(tmp_path) -> dict:
    journal = Journal.open(tmp_path, "mixtral")
    journal.begin_run(["a"], {}, now=1.0)
    journal.start_attempt(attempt(), entry())
    return journal.to_json()


def _damage(data: dict, how: str) -> None:
    if how == "missing run":
        del data["run"]
    elif how == "run is text":
        data["run"] = "one"
    elif how == "unknown status":
        data["status"] = "half-done"
    elif how == "attempt without stack":
        del data["attempts"][0]["stack"]
    elif how == "stack state":
        data["stacks"]["mixtral-a"]["state"] = 7
    elif how == "deployment":
        data["stacks"]["mixtral-a"]["deployment"] = {"cloud": "aws"}
    elif how == "attempt of no stack":
        data["stacks"] = {}
    elif how == "attempts not a list":
        data["attempts"] = {"n": 1}
    elif how == "block field":
        data["blocks"] = [{"cloud": "aws", "colour": "red"}]


@pytest.mark.parametrize("how", ["missing run", "run is text", "unknown status",
                                 "attempt without stack", "stack state", "deployment",
                                 "attempt of no stack", "attempts not a list", "block field"])
def test_a_malformed_journal_is_one_user_error_saying_what_to_do(tmp_path, how):
    data = _written(tmp_path)
    _damage(data, how)
    path = tmp_path / "mixtral" / "journal.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UserError) as info:
        Journal.open(tmp_path, "mixtral")
    message = info.value.message
    assert info.value.file == str(path) and info.value.exit_code == 2
    assert message.startswith("the deploy journal is damaged (")
    assert f"mv {path} {path}.damaged" in message and "pulumi stack ls" in message
    assert "\n" not in str(info.value)


def test_known_services(tmp_path):
    for name in ("b", "a"):
        Journal.open(tmp_path, name).begin_run([], {}, now=0.0)
    (tmp_path / "stray-dir").mkdir()
    assert known_services(tmp_path) == ["a", "b"]
    assert known_services(tmp_path / "missing") == []


def test_atomic_save_never_leaves_a_partial_file(tmp_path, monkeypatch):
    journal = Journal.open(tmp_path, "mixtral")
    journal.begin_run(["a"], {}, now=1.0)
    before = (tmp_path / "mixtral" / "journal.json").read_text()

    def broken_replace(src, dst):
        raise OSError("disk went away")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        journal.finish(RunStatus.STOPPED, now=2.0)
    monkeypatch.undo()
    assert (tmp_path / "mixtral" / "journal.json").read_text() == before
    assert [p.name for p in (tmp_path / "mixtral").iterdir()] == ["journal.json"]
