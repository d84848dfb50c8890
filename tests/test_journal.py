"""The deploy journal (atomic JSON, dirty stacks, blocks, runs) and the per-service lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from servestack.deploy.failures import Block
from servestack.deploy.journal import DeployLocked, Journal, ServiceLock, known_services


def test_new_journal_is_empty_and_not_written_until_saved(tmp_path):
    journal = Journal.open(tmp_path, "mixtral")
    assert journal.status == "new" and journal.attempts == [] and not journal.exists
    journal.begin_run(["a", "b"], {"max_attempts": None}, now=100.0)
    assert journal.exists
    data = json.loads((tmp_path / "mixtral" / "journal.json").read_text())
    assert data["status"] == "running" and data["candidates"] == ["a", "b"]
    assert data["run"] == 1 and data["started_at"] == 100.0


def test_every_change_is_on_disk_at_once(tmp_path):
    journal = Journal.open(tmp_path, "mixtral")
    journal.begin_run(["a"], {}, now=1.0)
    record = journal.start_attempt({"candidate": "a", "stack": "mixtral-a"})
    journal.set_stack("mixtral-a", "creating", candidate="a", deployment={"x": 1})
    again = Journal.open(tmp_path, "mixtral")
    assert again.attempts[0]["phase"] == "up" and again.attempts[0]["n"] == 1
    assert [s["name"] for s in again.dirty_stacks()] == ["mixtral-a"]
    journal.update_attempt(record, phase="done", outcome="capacity")
    journal.set_stack("mixtral-a", "clean")
    again = Journal.open(tmp_path, "mixtral")
    assert again.attempts[0]["outcome"] == "capacity" and again.dirty_stacks() == []
    assert again.stacks["mixtral-a"]["deployment"] == {"x": 1}  # kept across state changes


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
    journal.start_attempt({"candidate": "a", "stack": "s"})
    journal.set_stack("s", "left", candidate="a", leftovers=[{"type": "t"}])
    journal.add_blocks([Block("aws")])
    journal.finish("cleanup-failed", now=2.0, message="left: t")
    journal.begin_run(["a"], {}, now=3.0)
    assert journal.run == 2 and journal.attempts == [] and journal.blocks == []
    assert journal.data["history"][-1]["status"] == "cleanup-failed"
    assert [s["name"] for s in journal.dirty_stacks()] == ["s"]


def test_memory_journal_never_touches_disk(tmp_path):
    journal = Journal.memory("sim")
    journal.begin_run(["a"], {}, now=0.0)
    journal.finish("exhausted", now=1.0)
    assert journal.status == "exhausted" and list(tmp_path.iterdir()) == []


def test_a_broken_or_foreign_journal_is_a_user_error(tmp_path):
    path = tmp_path / "mixtral" / "journal.json"
    path.parent.mkdir()
    path.write_text("{not json")
    with pytest.raises(Exception, match="cannot read the deploy journal"):
        Journal.open(tmp_path, "mixtral")
    path.write_text(json.dumps({"schema_version": 1, "service": "other"}))
    with pytest.raises(Exception, match="not a servestack deploy journal"):
        Journal.open(tmp_path, "mixtral")


def test_known_services(tmp_path):
    for name in ("b", "a"):
        Journal.open(tmp_path, name).begin_run([], {}, now=0.0)
    (tmp_path / "stray-dir").mkdir()
    assert known_services(tmp_path) == ["a", "b"]
    assert known_services(tmp_path / "missing") == []


def test_the_lock_excludes_a_second_deploy_of_the_same_service(tmp_path):
    with ServiceLock(tmp_path, "mixtral"):
        with pytest.raises(DeployLocked, match=f"pid {os.getpid()}") as info:
            with ServiceLock(tmp_path, "mixtral"):
                pass
        assert info.value.exit_code == 6
        with ServiceLock(tmp_path, "other-service"):
            pass
    with ServiceLock(tmp_path, "mixtral"):  # released on exit
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    code = ("import sys, time; from servestack.deploy.journal import ServiceLock\n"
            f"lock = ServiceLock({str(tmp_path)!r}, 'mixtral').__enter__()\n"
            "print('locked', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(DeployLocked):
            ServiceLock(tmp_path, "mixtral").__enter__()
    finally:
        holder.kill()
        holder.wait()
    with ServiceLock(tmp_path, "mixtral"):
        pass


def test_atomic_save_never_leaves_a_partial_file(tmp_path, monkeypatch):
    journal = Journal.open(tmp_path, "mixtral")
    journal.begin_run(["a"], {}, now=1.0)
    before = (tmp_path / "mixtral" / "journal.json").read_text()

    def broken_replace(src, dst):
        raise OSError("disk went away")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        journal.finish("stopped", now=2.0)
    monkeypatch.undo()
    assert (tmp_path / "mixtral" / "journal.json").read_text() == before
    assert [p.name for p in (tmp_path / "mixtral").iterdir()] == ["journal.json"]
