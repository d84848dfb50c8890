"""One deploy or destroy per service on this machine, wherever it is run from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from servestack.deploy.lock import LOCAL, DeployLocked, ServiceLock, backend_key, running

HOLD = ("import sys, time; from servestack.deploy.lock import ServiceLock\n"
        "lock = ServiceLock('mixtral').__enter__()\n"
        "print('locked', flush=True); time.sleep(60)\n")


@pytest.fixture
def locks(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "servestack" / "locks"


def hold(folder: Path) -> subprocess.Popen:
    """Another process, started in `folder`, that takes the service's lock and keeps it."""
    folder.mkdir(parents=True, exist_ok=True)
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": root}
    holder = subprocess.Popen([sys.executable, "-c", HOLD], cwd=folder, env=env,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_the_lock_excludes_a_second_deploy_of_the_same_service(locks):
    with ServiceLock("mixtral"):
        with pytest.raises(DeployLocked, match=f"pid {os.getpid()}") as info:
            with ServiceLock("mixtral"):
                pass
        assert info.value.exit_code == 6
        with ServiceLock("other-service"):
            pass
    with ServiceLock("mixtral"):  # released on exit
        pass
    assert (locks / LOCAL / "mixtral.lock").is_file()


def test_two_processes_in_two_folders_get_one_lock(locks, tmp_path, monkeypatch):
    holder = hold(tmp_path / "checkout-a")
    try:
        (tmp_path / "checkout-b").mkdir()
        monkeypatch.chdir(tmp_path / "checkout-b")
        with pytest.raises(DeployLocked, match="checkout-a"):
            ServiceLock("mixtral").__enter__()
        assert running("mixtral") and not running("other-service")
    finally:
        holder.kill()
        holder.wait()
    # the kernel dropped the lock of the killed process: nothing stale is left
    assert not running("mixtral")
    with ServiceLock("mixtral"):
        pass


def test_a_shared_pulumi_backend_is_its_own_key():
    assert backend_key("terraform", None) == LOCAL
    assert backend_key("pulumi", None) == LOCAL
    assert backend_key("pulumi", "file:///home/me/state") == LOCAL
    shared = backend_key("pulumi", "s3://team-bucket/servestack")
    assert shared.startswith("pulumi-") and shared == backend_key(
        "pulumi", "s3://team-bucket/servestack/")
    assert shared != backend_key("pulumi", "s3://other-team/servestack")


def test_locks_under_two_backends_do_not_exclude_each_other(locks):
    with ServiceLock("mixtral", backend_key("pulumi", "s3://team-a")):
        with ServiceLock("mixtral", backend_key("pulumi", "s3://team-b")):
            assert running("mixtral")
