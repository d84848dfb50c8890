"""`servestack gpus`: which GPUs exist, where, at which prices."""

from __future__ import annotations


def test_gpus_listing_and_detail(run_cli):
    summary = run_cli("servestack", "gpus")
    assert summary.returncode == 0 and "A100-80GB" in summary.stdout
    detail = run_cli("servestack", "gpus", "a100-80gb", "--cloud", "gcp")
    assert detail.returncode == 0 and "a2-ultragpu-2g" in detail.stdout
    wrong = run_cli("servestack", "gpus", "A1000")
    assert wrong.returncode == 2 and "did you mean" in wrong.stderr
